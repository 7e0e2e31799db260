//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/testworld"
	"gefyra.dev/gefyra/internal/wire"
)

// What the fixed backend answers for the tutorial's request.
const fixedItem = `{"item_id":123,"Email":"john@gefyra.dev"}`

// tunnelPort is the bridged port on the developer's side of the tunnel
// (the bridge's --port 8155:tunnelPort); the agent hands it to the local
// backend.
const tunnelPort = 18155

// appTarget is the tutorial's bridge target.
var appTarget = gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: story.Deployment, Container: story.AppContainer}

// bridgeSpec is a bridge of the demo backend's port 8155 for client, taking
// the requests that match rules (all if none).
func bridgeSpec(client string, rules ...gefyrav1.Rule) gefyrav1.GefyraBridgeSpec {
	return gefyrav1.GefyraBridgeSpec{
		Client: client,
		Target: appTarget,
		Ports:  []gefyrav1.PortMapping{{Remote: 8155, Local: tunnelPort}},
		Rules:  rules,
		Local:  "local-backend",
	}
}

// userRule matches requests with header x-gefyra-user: user.
func userRule(user string) gefyrav1.Rule {
	return gefyrav1.Rule{Headers: []gefyrav1.HeaderMatch{{Name: "x-gefyra-user", Type: "Exact", Value: user}}}
}

// TestBridge runs the whole bridge path in the cluster, configured by the
// real control plane from real custom resources: the add-on from deploy/,
// the tutorial's workload, a developer's GefyraClient with a key made here,
// the agent as a process on this machine with a local backend that has the
// fix, and a GefyraBridge of the backend's container. The logged-in
// browser's request goes through the Service, oauth2-proxy, carrier,
// stowaway and the WireGuard tunnel to the local backend; deleting the
// bridge puts the original back.
func TestBridge(t *testing.T) {
	start := time.Now()
	w := testworld.Get(t)
	root := repoRoot(t)
	dir := t.TempDir()
	d := story.New(w, root)
	d.BuildAllImages(t)
	d.LoadImages(t)
	addon, err := story.NewAddon(w, root, d.Images)
	if err != nil {
		t.Fatal(err)
	}
	addon.LoadImages(t)
	t.Logf("images built and loaded after %s", since(start))

	// The developer's side first, so it is stopped last.
	backend := story.StartLocalBackend(t, dir, "local-backend-alice", true)

	d.Deploy(t)
	installed := time.Now()
	addon.Install(t) // its removal deletes every gefyra resource first
	addon.WaitReady(t)
	t.Logf("the add-on is Ready %s after kubectl apply -k deploy/", since(installed))

	d.WaitReady(t)
	d.Login(t)
	if claim := d.ExpectBug(t); claim != "Email" {
		t.Fatalf("the backend's log names claim %q, want %q", claim, "Email")
	}
	before := pod(t, w, d.Pod())

	alice := addon.Register(t, "alice@gefyra.dev")
	agent := alice.StartAgent(t, dir, map[uint16]string{tunnelPort: backend.Addr})

	bridged := time.Now()
	addon.Bridge(t, story.Namespace, "alice", bridgeSpec(alice.Name))
	addon.WaitBridgeReady(t, story.Namespace, "alice")
	t.Logf("the bridge is Ready %s after its creation", since(bridged))
	// kubelet restarted the container with carrier: the Pod is back in
	// the Service once its readiness probe passed.
	d.WaitServing(t)
	t.Logf("the Service answers %s after the bridge's creation", since(bridged))

	t.Run("the logged-in browser's request reaches the local backend", func(t *testing.T) {
		a := d.Get(t, story.ItemPath)
		t.Logf("%s", a)
		if a.Status != http.StatusOK || a.Body != fixedItem {
			t.Fatalf("%s, want 200 %s from the local backend", a, fixedItem)
		}
		if got := backend.Served(story.ItemPath); !slices.Contains(got, http.StatusOK) {
			t.Fatalf("the local backend logged %v for %s, want a 200: the answer did not come from it", got, story.ItemPath)
		}
	})

	t.Run("the Pod keeps its IP and its sidecar, and stays Ready with carrier", func(t *testing.T) {
		p := w.WaitPodReady(t, story.Namespace, d.Pod(), time.Minute)
		if p.UID != before.UID || p.Status.PodIP != before.Status.PodIP {
			t.Errorf("the Pod is %s at %s, was %s at %s", p.UID, p.Status.PodIP, before.UID, before.Status.PodIP)
		}
		if got, want := restarts(p, story.ProxyContainer), restarts(before, story.ProxyContainer); got != want {
			t.Errorf("oauth2-proxy restarted %d times, was %d: the sidecar must keep running", got, want)
		}
		app, _ := testworld.ContainerStatus(p, story.AppContainer)
		if app.State.Running == nil || !app.Ready || !strings.HasPrefix(app.Image, "gefyra.dev/carrier:") {
			t.Errorf("container %s: image %s, running %t, ready %t; want carrier, running and ready", story.AppContainer, app.Image, app.State.Running != nil, app.Ready)
		}
		if got := p.Annotations["original-image.gefyra.dev/"+story.AppContainer]; got != "gefyra.dev/oauth2-demo:0.1.0" {
			t.Errorf("original image annotation %q", got)
		}
		// carrier answers kubelet's probes itself: the Pod stays Ready.
		time.Sleep(6 * time.Second)
		p = pod(t, w, d.Pod())
		if !testworld.PodReady(p) {
			t.Errorf("the Pod is not Ready with carrier: %s", testworld.PodStatus(p))
		}
	})

	t.Run("agent killed: the fallback answers at once, and the bridge again when it returns", func(t *testing.T) {
		agent.Kill(t)
		defer func() {
			if t.Failed() {
				logCarrier(t, w, d)
			}
		}()
		begin := time.Now()
		a := d.Get(t, story.ItemPath)
		took := time.Since(begin)
		t.Logf("%s in %s with the agent gone", a, took.Round(time.Millisecond))
		if a.Status != http.StatusInternalServerError {
			t.Errorf("%s, want the fallback clone's 500 (the original image, with the bug)", a)
		}
		if took > time.Second {
			t.Errorf("the fallback answered after %s, want within a second", took.Round(time.Millisecond))
		}
		agent.Start(t)
		agent.WaitUp(t)
		testworld.WaitFor(t, "the bridge to answer again", time.Minute, func(context.Context) (bool, string, error) {
			a := d.Get(t, story.ItemPath)
			return a.Status == http.StatusOK && a.Body == fixedItem, a.String(), nil
		})
	})

	// A second developer, bob, whose local backend still has the bug; both
	// take only the requests that name them.
	bob := addon.Register(t, "bob@gefyra.dev")
	bobBackend := story.StartLocalBackend(t, dir, "local-backend-bob", false)
	bob.StartAgent(t, dir, map[uint16]string{tunnelPort: bobBackend.Addr})
	addon.Bridge(t, story.Namespace, "alice-by-header", bridgeSpec(alice.Name, userRule("alice")))
	addon.Bridge(t, story.Namespace, "bob-by-header", bridgeSpec(bob.Name, userRule("bob")))
	addon.WaitBridgeReady(t, story.Namespace, "alice-by-header")
	addon.WaitBridgeReady(t, story.Namespace, "bob-by-header")
	addon.DeleteBridge(t, story.Namespace, "alice") // no catch-all any more
	testworld.WaitFor(t, "carrier to drop the catch-all bridge", time.Minute, func(context.Context) (bool, string, error) {
		a := d.Get(t, story.ItemPath)
		return a.Status == http.StatusInternalServerError, a.String(), nil
	})

	t.Run("two developers split one workload by header", func(t *testing.T) {
		aliceBefore, bobBefore := len(backend.Served(story.ItemPath)), len(bobBackend.Served(story.ItemPath))
		a := d.GetWith(t, story.ItemPath, http.Header{"X-Gefyra-User": {"alice"}})
		if a.Status != http.StatusOK || a.Body != fixedItem {
			t.Errorf("as alice: %s, want 200 %s", a, fixedItem)
		}
		b := d.GetWith(t, story.ItemPath, http.Header{"X-Gefyra-User": {"bob"}})
		if b.Status != http.StatusInternalServerError {
			t.Errorf("as bob: %s, want bob's backend's 500 (his has the bug)", b)
		}
		n := d.Get(t, story.ItemPath)
		if n.Status != http.StatusInternalServerError {
			t.Errorf("without the header: %s, want the fallback's 500", n)
		}
		if got := len(backend.Served(story.ItemPath)) - aliceBefore; got != 1 {
			t.Errorf("alice's backend served %d requests, want 1 (hers)", got)
		}
		if got := len(bobBackend.Served(story.ItemPath)) - bobBefore; got != 1 {
			t.Errorf("bob's backend served %d requests, want 1 (his)", got)
		}
	})

	t.Run("stowaway refuses a relay connection with a bad credential and counts it", func(t *testing.T) {
		relay := w.ServiceAddr(t, story.AddonNamespace, story.StowawayRelayService, 8833)
		metrics := "http://" + w.ServiceAddr(t, story.AddonNamespace, story.StowawayRelayService, 9090) + "/metrics"
		const counter = `gefyra_stowaway_refused_connections_total{reason="unauthenticated"}`
		was := metric(t, w, metrics, counter)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := w.Dialer()(ctx, "tcp", relay)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		h := wire.Header{Bridge: story.Namespace + "/alice-by-header", Port: 8155, Credential: []byte("not-a-credential")}
		if err := wire.Encode(c, &h); err != nil {
			t.Fatal(err)
		}
		err = wire.ReadReply(c)
		if re, ok := err.(*wire.RefusedError); !ok || re.Code != wire.CodeUnauthenticated {
			t.Fatalf("reply %v, want a refusal: unauthenticated", err)
		}
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("after the refusal: read %d bytes, %v; want the connection closed", n, err)
		}
		if now := metric(t, w, metrics, counter); now != was+1 {
			t.Errorf("%s = %v, was %v; want one more", counter, now, was)
		}
	})

	t.Run("deleting the bridges and the client restores the workload", func(t *testing.T) {
		restoring := time.Now().Add(-time.Second) // kubelet's clock is this machine's; its times are in seconds
		for _, name := range []string{"alice-by-header", "bob-by-header"} {
			addon.DeleteBridge(t, story.Namespace, name)
		}
		alice.Unregister(t)
		bob.Unregister(t)
		p := w.WaitPodCondition(t, story.Namespace, d.Pod(), "running its original image again", 2*time.Minute, func(p *corev1.Pod) bool {
			app, _ := testworld.ContainerStatus(p, story.AppContainer)
			_, annotated := p.Annotations["original-image.gefyra.dev/"+story.AppContainer]
			restarted := app.State.Running != nil && !app.State.Running.StartedAt.Time.Before(restoring)
			return !annotated && restarted && app.Image == "gefyra.dev/oauth2-demo:0.1.0" && app.Ready && testworld.PodReady(p)
		})
		t.Logf("the workload is restored %s after the bridges' deletion", since(restoring))
		if p.Status.PodIP != before.Status.PodIP || restarts(p, story.ProxyContainer) != restarts(before, story.ProxyContainer) {
			t.Errorf("the Pod changed while restored: IP %s (was %s), oauth2-proxy restarts %d (were %d)", p.Status.PodIP,
				before.Status.PodIP, restarts(p, story.ProxyContainer), restarts(before, story.ProxyContainer))
		}
		if _, ok := p.Labels["gefyra.dev/carrier"]; ok {
			t.Errorf("the Pod still has the carrier label")
		}
		d.WaitServing(t)
		if claim := d.ExpectBug(t); claim != "Email" {
			t.Errorf("the backend's log names claim %q, want %q", claim, "Email")
		}
		testworld.WaitFor(t, "no fallback clone and no mount left", time.Minute, func(ctx context.Context) (bool, string, error) {
			_, err := w.Client.AppsV1().Deployments(story.Namespace).Get(ctx, story.Deployment+"-gefyra-fallback-"+story.AppContainer, metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("the clone: %v", err), nil
			}
			if m := addon.Mount(t, story.Namespace, appTarget); m != nil {
				return false, "GefyraMount " + m.Name + " is still there", nil
			}
			return true, "", nil
		})
	})
	t.Logf("TestBridge took %s", since(start))
}

// logCarrier logs what the demo Pod's carrier logged and counted.
func logCarrier(t *testing.T, w *testworld.World, d *story.Demo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	logs, err := d.AppLog(ctx)
	t.Logf("carrier's log (%v):\n%s", err, logs)
	p := pod(t, w, d.Pod())
	resp, err := w.HTTPClient().Get("http://" + net.JoinHostPort(p.Status.PodIP, "19901") + "/metrics")
	if err != nil {
		t.Logf("carrier's metrics: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var lines []string
	for l := range strings.Lines(string(b)) {
		if strings.HasPrefix(l, "gefyra_carrier") && !strings.Contains(l, "_bucket{") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	t.Logf("carrier's metrics:\n%s", strings.Join(lines, "\n"))
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// pod returns a Pod of the demo's namespace.
func pod(t *testing.T, w *testworld.World, name string) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := w.Client.CoreV1().Pods(story.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func restarts(p *corev1.Pod, container string) int32 {
	cs, _ := testworld.ContainerStatus(p, container)
	return cs.RestartCount
}

// metric reads one sample (name with its labels, as exposed) from a
// Prometheus endpoint.
func metric(t *testing.T, w *testworld.World, url, series string) float64 {
	t.Helper()
	resp, err := w.HTTPClient().Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return v
		}
	}
	t.Fatalf("no %s at %s", series, url)
	return 0
}

//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/ociimage"
	"gefyra.dev/gefyra/internal/testworld"
)

// egressImage is world/testimages/egress: the cluster's server that says
// who called it, and the local container's client.
const egressImage = "gefyra.dev/test-egress:v1"

// egressManifest is one Pod of the egress server behind Service web.
func egressManifest(ns string) string {
	return fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: %[1]s
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %[2]s
    imagePullPolicy: IfNotPresent
    args: [serve]
    env: [{name: NAME, value: web}]
    ports: [{containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: %[1]s
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
`, ns, egressImage)
}

// TestEgress: a local container that `gefyra run` started calls a cluster
// Service by its short, namespaced and full name, through the tunnel. The
// add-on comes from deploy/, the developer's side is the real gefyra
// binary (`gefyra up`, `gefyra run`, `gefyra down`) with its agent in
// Docker. This machine itself routes the cluster's Service and Pod ranges
// into the test world, so a request could get there without the tunnel:
// the server reports who called it, and that must be stowaway's Pod (not
// this machine), and stowaway's egress counters must show the flows.
func TestEgress(t *testing.T) {
	start := time.Now()
	w := testworld.Get(t)
	if w.DNSIP == "" || w.ClusterDomain == "" {
		t.Fatalf("the world has no cluster DNS (world.env names none); restart it: world/world.sh down && world/world.sh up")
	}
	root := repoRoot(t)
	d := story.New(w, root)
	d.BuildAllImages(t)
	addon, err := story.NewAddon(w, root, d.Images)
	if err != nil {
		t.Fatal(err)
	}
	addon.LoadImages(t)
	bin := testworld.GoBuild(t, "gefyra.dev/gefyra/world/testimages/egress")
	tarball := testworld.BuildImage(t, ociimage.Spec{Tag: egressImage, Files: []ociimage.File{{Src: bin, Dst: "/egress"}}, Entrypoint: []string{"/egress"}})
	w.LoadImages(t, tarball)
	docker(t, "load", "-i", tarball)
	t.Cleanup(func() { exec.Command("docker", "image", "rm", egressImage).Run() })
	cli := testworld.GoBuild(t, "gefyra.dev/gefyra/cli/cmd/gefyra")
	t.Logf("images and the gefyra CLI built and loaded after %s", since(start))

	ns := w.Namespace(t, "egress")
	w.Apply(t, egressManifest(ns))
	addon.Install(t) // its removal deletes every gefyra resource first
	addon.WaitReady(t)
	web := w.WaitPodReady(t, ns, "web-0", 2*time.Minute)
	t.Logf("the add-on and the server are ready after %s", since(start))

	g := &gefyraCLI{t: t, bin: cli, env: append(os.Environ(), "KUBECONFIG="+w.Kubeconfig, "GEFYRA_HOME="+t.TempDir(), "GEFYRA_AGENT_BINARY="+cli)}
	t.Cleanup(g.down)
	var up struct {
		Client string `json:"client"`
	}
	if err := json.Unmarshal([]byte(g.ok("up", "-o", "json")), &up); err != nil || up.Client == "" {
		t.Fatalf("gefyra up -o json: %v", err)
	}
	t.Logf("gefyra is up after %s", since(start))

	const local = "egress-client"
	out := g.ok("run", "-i", egressImage, "-N", local, "-n", ns, "-c", "sleep")
	if !strings.Contains(g.stderr, local+" reaches the cluster's Services by name through the tunnel") {
		t.Fatalf("gefyra run did not say the container reaches the cluster: %s", g.stderr)
	}
	m := regexp.MustCompile(`is running at ([0-9.]+)`).FindStringSubmatch(g.stderr)
	if m == nil {
		t.Fatalf("gefyra run printed no address: %s%s", out, g.stderr)
	}
	holderIP := strings.TrimSpace(docker(t, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", local+"-netns"))
	if m[1] != holderIP {
		t.Errorf("gefyra run printed %s, the container's network namespace has %s", m[1], holderIP)
	}

	stowaway := stowawayPod(t, w)
	before := egressMetrics(t, w, stowaway.ip, up.Client)

	t.Run("the local container calls the Service by its names and the Pod by its IP, through stowaway", func(t *testing.T) {
		urls := []string{"http://web", "http://web." + ns, "http://web." + ns + ".svc." + w.ClusterDomain,
			"http://" + net.JoinHostPort(web.Status.PodIP, "8080")}
		out := docker(t, append([]string{"exec", local, "/egress", "get"}, urls...)...)
		sc := bufio.NewScanner(strings.NewReader(out))
		n := 0
		for sc.Scan() {
			var r struct {
				URL    string `json:"url"`
				Status int    `json:"status"`
				Body   string `json:"body"`
				Error  string `json:"error"`
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%q: %v", sc.Text(), err)
			}
			var a struct {
				Name   string `json:"name"`
				Client string `json:"client"`
			}
			json.Unmarshal([]byte(r.Body), &a)
			host, _, _ := net.SplitHostPort(a.Client)
			t.Logf("%s: %d, the server saw %s", r.URL, r.Status, a.Client)
			if r.Status != 200 || a.Name != "web" {
				t.Errorf("%s: %+v, want 200 from the server", r.URL, r)
			}
			if host != stowaway.ip {
				t.Errorf("%s: the server was called from %s, want stowaway's Pod %s (this machine is %s)", r.URL, host, stowaway.ip, w.HostIP)
			}
			n++
		}
		if n != len(urls) {
			t.Fatalf("%d answers for %d URLs:\n%s", n, len(urls), out)
		}
	})

	t.Run("stowaway counted the developer's flows", func(t *testing.T) {
		after := egressMetrics(t, w, stowaway.ip, up.Client)
		if got := after["tcp"] - before["tcp"]; got < 4 {
			t.Errorf("egress TCP connections of %s: %v more, want at least 4", up.Client, got)
		}
		if got := after["udp"] - before["udp"]; got < 1 {
			t.Errorf("egress UDP flows (DNS) of %s: %v more, want at least 1", up.Client, got)
		}
	})

	g.down()
	if left := strings.TrimSpace(docker(t, "ps", "-a", "--filter", "label=dev.gefyra.managed=true", "--format", "{{.Names}}")); left != "" {
		t.Errorf("containers left after gefyra down: %s", left)
	}
	if left := strings.TrimSpace(docker(t, "network", "ls", "--filter", "name=^gefyra$", "--format", "{{.Name}}")); left != "" {
		t.Errorf("network left after gefyra down: %s", left)
	}
	t.Logf("done after %s", since(start))
}

// gefyraCLI runs the gefyra binary as a developer would.
type gefyraCLI struct {
	t        *testing.T
	bin      string
	env      []string
	stderr   string // of the last command
	downDone bool
	agentTag string // the agent image `gefyra up` built
}

// ok runs gefyra with args and returns its stdout; a failure fails the
// test.
func (g *gefyraCLI) ok(args ...string) string {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.bin, args...)
	cmd.Env = g.env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	g.stderr = stderr.String()
	g.t.Logf("gefyra %s\n%s", strings.Join(args, " "), strings.TrimSpace(g.stderr))
	if m := regexp.MustCompile(`Built the agent image (\S+)`).FindStringSubmatch(g.stderr); m != nil {
		g.agentTag = m[1]
	}
	if err != nil {
		g.t.Fatalf("gefyra %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String()
}

// down runs `gefyra down` once (also as a cleanup) and removes the agent
// image the test's binary made.
func (g *gefyraCLI) down() {
	if g.downDone {
		return
	}
	g.downDone = true
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.bin, "down")
	cmd.Env = g.env
	out, err := cmd.CombinedOutput()
	g.t.Logf("gefyra down\n%s", strings.TrimSpace(string(out)))
	if err != nil {
		g.t.Errorf("gefyra down: %v", err)
	}
	if g.agentTag != "" {
		exec.Command("docker", "image", "rm", g.agentTag).Run()
	}
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("docker %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

type podRef struct{ name, ip string }

func stowawayPod(t *testing.T, w *testworld.World) podRef {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods, err := w.Client.CoreV1().Pods(story.AddonNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=gefyra-stowaway"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" && testworld.PodReady(&p) {
			return podRef{name: p.Name, ip: p.Status.PodIP}
		}
	}
	t.Fatalf("no ready stowaway Pod")
	return podRef{}
}

// egressMetrics reads stowaway's egress connection counters of peer, by
// protocol, from its admin port.
func egressMetrics(t *testing.T, w *testworld.World, podIP, peer string) map[string]float64 {
	t.Helper()
	resp, err := w.HTTPClient().Get("http://" + net.JoinHostPort(podIP, "9090") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, proto := range []string{"tcp", "udp"} {
		series := fmt.Sprintf(`gefyra_stowaway_egress_connections_total{peer=%q,protocol=%q} `, peer, proto)
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, series); ok {
				v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
				if err != nil {
					t.Fatalf("%q: %v", line, err)
				}
				out[proto] = v
			}
		}
	}
	return out
}

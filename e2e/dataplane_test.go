//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/ociimage"
	"gefyra.dev/gefyra/internal/testworld"
)

// The data plane test's workload: the test server (world/testimages/server)
// with an HTTP port and a raw TCP echo port, as a Deployment.
const (
	echoImage     = worldServerImage + ":dataplane"
	echoWorkload  = "echo"
	echoContainer = "app"
	echoHTTPPort  = 8080
	echoTCPPort   = 9000

	// What each side answers with (X-Served-By, the TCP echo's first line).
	sideCluster = "cluster" // the workload itself, and its fallback clone
	sideAlice   = "local-alice"
	sideBob     = "local-bob"

	// The tunnel ports of the bridges (their local ports); the agent hands
	// each to a local server.
	tunnelAliceHTTP = 18080
	tunnelBobHTTP   = 18081
	tunnelAliceTCP  = 19000
)

var echoTarget = gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: echoWorkload, Container: echoContainer}

// echoManifest is the workload: its container declares the HTTP port and
// the TCP port, kubelet probes the one over HTTP and the other over TCP.
func echoManifest(ns string) string {
	return fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[2]s}
  template:
    metadata:
      labels: {app: %[2]s}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: %[3]s
        image: %[4]s
        imagePullPolicy: IfNotPresent
        command: ["/server"]
        args: ["serve"]
        env:
        - {name: NAME, value: %[7]s}
        - {name: LISTEN, value: ":%[5]d"}
        - {name: TCP_LISTEN, value: ":%[6]d"}
        ports:
        - {name: http, containerPort: %[5]d}
        - {name: echo, containerPort: %[6]d}
        readinessProbe:
          httpGet: {path: /healthz, port: %[5]d}
          periodSeconds: 2
        livenessProbe:
          tcpSocket: {port: %[6]d}
          initialDelaySeconds: 5
          periodSeconds: 5
`, ns, echoWorkload, echoContainer, echoImage, echoHTTPPort, echoTCPPort, sideCluster)
}

// echoSpec is a bridge of the workload's container for client.
func echoSpec(client string, ports []gefyrav1.PortMapping, rules ...gefyrav1.Rule) gefyrav1.GefyraBridgeSpec {
	return gefyrav1.GefyraBridgeSpec{Client: client, Target: echoTarget, Ports: ports, Rules: rules, Local: "echo-local"}
}

// localServer is the test server running on this machine as a developer's
// local side.
type localServer struct {
	HTTP, TCP string // 127.0.0.1:port
}

// startLocalServer runs bin as the test server named name on free ports of
// 127.0.0.1 and waits until it answers.
func startLocalServer(t *testing.T, dir, bin, name string) localServer {
	t.Helper()
	s := localServer{
		HTTP: net.JoinHostPort("127.0.0.1", strconv.Itoa(story.FreePort(t))),
		TCP:  net.JoinHostPort("127.0.0.1", strconv.Itoa(story.FreePort(t))),
	}
	p := story.NewProcess(t, dir, name, bin, "serve", "-name", name, "-listen", s.HTTP, "-tcp-listen", s.TCP)
	p.Start(t)
	c := &http.Client{Timeout: 2 * time.Second}
	testworld.WaitFor(t, name+" at "+s.HTTP, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		if ok, err := p.Running(); !ok {
			return false, "", fmt.Errorf("%s exited: %v", name, err)
		}
		return testworld.Answers(c, "http://"+s.HTTP+"/healthz")(ctx)
	})
	return s
}

// TestDataPlane carries what is not a plain HTTP/1.1 request through a real
// bridge: a raw TCP port, a WebSocket, h2c streams; and it changes the
// rules while clients keep sending requests, none of which may fail. The
// path is the one of TestBridge (carrier swapped into the Pod by the
// control plane, stowaway, the WireGuard tunnel, the agent as a process on
// this machine), configured from GefyraBridges with the add-on from
// deploy/; the local sides are the same server as the workload, run here.
func TestDataPlane(t *testing.T) {
	start := time.Now()
	w := testworld.Get(t)
	root := repoRoot(t)
	dir := t.TempDir()
	d := story.New(w, root)
	d.BuildAllImages(t)
	addon, err := story.NewAddon(w, root, d.Images)
	if err != nil {
		t.Fatal(err)
	}
	addon.LoadImages(t)
	bin := testworld.GoBuild(t, "gefyra.dev/gefyra/world/testimages/server")
	w.LoadImages(t, testworld.BuildImage(t, ociimage.Spec{
		Tag:        echoImage,
		Files:      []ociimage.File{{Src: bin, Dst: "/server"}},
		Entrypoint: []string{"/server"},
	}))
	t.Logf("images built and loaded after %s", since(start))

	// The developer's side first, so it is stopped last.
	alice := startLocalServer(t, dir, bin, sideAlice)
	bob := startLocalServer(t, dir, bin, sideBob)

	ns := w.Namespace(t, "dataplane")
	w.Apply(t, echoManifest(ns))
	addon.Install(t)
	addon.WaitReady(t)
	w.WaitDeploymentAvailable(t, ns, echoWorkload, 2*time.Minute)
	podName := echoPod(t, w, ns)
	before := w.WaitPodReady(t, ns, podName, time.Minute)
	podIP := before.Status.PodIP
	httpAddr := net.JoinHostPort(podIP, strconv.Itoa(echoHTTPPort))
	tcpAddr := net.JoinHostPort(podIP, strconv.Itoa(echoTCPPort))
	if got := tcpEcho(t, w, tcpAddr, []byte("hello")); got != sideCluster {
		t.Fatalf("before any bridge, the TCP port answers as %q, want %q", got, sideCluster)
	}

	dev := addon.Register(t, "dataplane@gefyra.dev")
	dev.StartAgent(t, dir, map[uint16]string{tunnelAliceHTTP: alice.HTTP, tunnelBobHTTP: bob.HTTP, tunnelAliceTCP: alice.TCP})
	bridged := time.Now()
	addon.Bridge(t, ns, "tcp", echoSpec(dev.Name, []gefyrav1.PortMapping{
		{Remote: echoTCPPort, Local: tunnelAliceTCP, Protocol: gefyrav1.ProtocolTCP}}))
	addon.Bridge(t, ns, "http-alice", echoSpec(dev.Name, []gefyrav1.PortMapping{
		{Remote: echoHTTPPort, Local: tunnelAliceHTTP}}, userRule("alice")))
	addon.WaitBridgeReady(t, ns, "tcp")
	addon.WaitBridgeReady(t, ns, "http-alice")
	swapped := w.WaitPodCondition(t, ns, podName, "Ready with carrier", 2*time.Minute, func(p *corev1.Pod) bool {
		app, _ := testworld.ContainerStatus(p, echoContainer)
		return strings.HasPrefix(app.Image, "gefyra.dev/carrier:") && app.Ready && testworld.PodReady(p)
	})
	if swapped.Status.PodIP != podIP {
		t.Fatalf("the Pod's IP changed from %s to %s", podIP, swapped.Status.PodIP)
	}
	t.Logf("the bridges are Ready and carrier serves the Pod %s after their creation", since(bridged))
	t.Cleanup(func() {
		if t.Failed() {
			logDataPlane(t, w, ns, podName)
		}
	})

	t.Run("a bridge with rules cannot have a TCP port", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b := &gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tcp-with-rules"},
			Spec: echoSpec(dev.Name, []gefyrav1.PortMapping{{Remote: echoTCPPort, Local: tunnelAliceTCP, Protocol: gefyrav1.ProtocolTCP}}, userRule("alice"))}
		err := addon.Kube().Create(ctx, b)
		if err == nil {
			addon.DeleteBridge(t, ns, b.Name)
			t.Fatal("the API server accepted rules on a bridge with a TCP port")
		}
		if !strings.Contains(err.Error(), "a bridge with a TCP port cannot have rules") {
			t.Fatalf("refused with %v; want the reason", err)
		}
	})

	t.Run("a second bridge on a TCP port is refused with the reason", func(t *testing.T) {
		// "tcp" comes first by key and keeps the port.
		addon.Bridge(t, ns, "tcp-second", echoSpec(dev.Name, []gefyrav1.PortMapping{
			{Remote: echoTCPPort, Local: tunnelAliceTCP, Protocol: gefyrav1.ProtocolTCP}}))
		testworld.WaitFor(t, "bridge tcp-second refused", time.Minute, func(ctx context.Context) (bool, string, error) {
			b := &gefyrav1.GefyraBridge{}
			if err := addon.Kube().Get(ctx, client.ObjectKey{Namespace: ns, Name: "tcp-second"}, b); err != nil {
				return false, err.Error(), nil
			}
			c := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionReady)
			if c == nil {
				return false, "no Ready condition yet", nil
			}
			ok := c.Status == metav1.ConditionFalse && c.Reason == "PortConflict" &&
				strings.Contains(c.Message, fmt.Sprintf("port %d is bridged over TCP by %s/tcp", echoTCPPort, ns))
			return ok, fmt.Sprintf("Ready %s %s: %s", c.Status, c.Reason, c.Message), nil
		})
		// The bridge that has the port carries it as before.
		if got := tcpEcho(t, w, tcpAddr, []byte("still")); got != sideAlice {
			t.Fatalf("the TCP port answers as %q, want %q", got, sideAlice)
		}
	})

	t.Run("WebSocket: by the rules, to the local side or the fallback", func(t *testing.T) {
		tests := []struct {
			name   string
			header http.Header
			want   string
		}{
			{name: "alice's", header: http.Header{"X-Gefyra-User": {"alice"}}, want: sideAlice},
			{name: "anyone else's", header: nil, want: sideCluster},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				dialer := websocket.Dialer{NetDialContext: w.Dialer(), HandshakeTimeout: 10 * time.Second}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				c, resp, err := dialer.DialContext(ctx, "ws://"+httpAddr+"/ws", tt.header)
				if err != nil {
					t.Fatalf("WebSocket handshake: %v", err)
				}
				defer c.Close()
				if got := resp.Header.Get("X-Served-By"); got != tt.want {
					t.Fatalf("the upgrade was answered by %q, want %q", got, tt.want)
				}
				c.SetReadDeadline(time.Now().Add(time.Minute))
				big := make([]byte, 1<<20)
				rand.Read(big)
				for i, m := range []struct {
					typ  int
					data []byte
				}{{websocket.TextMessage, []byte("hello")}, {websocket.BinaryMessage, big}, {websocket.TextMessage, []byte("bye")}} {
					if err := c.WriteMessage(m.typ, m.data); err != nil {
						t.Fatalf("message %d: %v", i, err)
					}
					typ, got, err := c.ReadMessage()
					if err != nil || typ != m.typ || !bytes.Equal(got, m.data) {
						t.Fatalf("message %d (%d bytes, type %d): echoed type %d, %d bytes, %v", i, len(m.data), m.typ, typ, len(got), err)
					}
				}
				if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
					t.Fatal(err)
				}
			})
		}
	})

	t.Run("h2c: streams of one connection, each by the rules", func(t *testing.T) {
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		tr := &http.Transport{DialContext: w.Dialer(), Protocols: &protocols}
		defer tr.CloseIdleConnections()
		// alice's stream stays open while the other one runs on the same
		// connection: carrier routes each stream by its own headers.
		a := openEchoStream(t, tr, httpAddr, "alice")
		defer a.close()
		a.ping(t, 0)
		b := openEchoStream(t, tr, httpAddr, "")
		defer b.close()
		if !b.reused || b.local != a.local {
			t.Errorf("the second stream went over connection %s (reused %t), the first over %s: want one connection", b.local, b.reused, a.local)
		}
		for i, s := range []*echoStream{a, b} {
			want := []string{sideAlice, sideCluster}[i]
			if s.resp.ProtoMajor != 2 || s.resp.Header.Get("X-Proto") != "HTTP/2.0" || s.resp.Header.Get("X-Served-By") != want {
				t.Errorf("stream %d: %s, X-Proto %q, X-Served-By %q; want HTTP/2.0 end to end, served by %s", i, s.resp.Proto,
					s.resp.Header.Get("X-Proto"), s.resp.Header.Get("X-Served-By"), want)
			}
		}
		for i := 1; i < 4; i++ {
			a.ping(t, i)
			b.ping(t, i)
		}
		a.end(t)
		b.end(t)
	})

	t.Run("rule changes under steady load lose no request", func(t *testing.T) {
		restartsBefore := restartsOf(t, w, ns, podName, echoContainer)
		// Each user's requests are answered by the side the rules name:
		// before, while and after a second bridge on the port is added,
		// the first one's rule is changed and the second is deleted.
		initial := map[string]string{"alice": sideAlice, "bob": sideCluster, "carol": sideCluster}
		l := startLoad(w, "http://"+httpAddr+"/", []string{"alice", "alice", "bob", "bob", "carol"})
		defer l.finish()
		l.waitSide(t, "alice", sideAlice, time.Time{})
		time.Sleep(2 * time.Second) // steady state first

		var changes []transition
		change := func(what string, moves map[string][2]string, do func()) {
			t.Helper()
			at := time.Now()
			do()
			for user, m := range moves {
				changes = append(changes, transition{user: user, from: m[0], to: m[1], at: at})
				l.waitSide(t, user, m[1], at)
			}
			t.Logf("%s: in force %s after the change", what, since(at))
			time.Sleep(2 * time.Second) // steady state again
		}
		change("bob's bridge added", map[string][2]string{"bob": {sideCluster, sideBob}}, func() {
			addon.Bridge(t, ns, "http-bob", echoSpec(dev.Name, []gefyrav1.PortMapping{
				{Remote: echoHTTPPort, Local: tunnelBobHTTP}}, userRule("bob")))
			addon.WaitBridgeReady(t, ns, "http-bob")
		})
		change("alice's rule now names carol", map[string][2]string{"alice": {sideAlice, sideCluster}, "carol": {sideCluster, sideAlice}}, func() {
			updateRules(t, addon, ns, "http-alice", userRule("carol"))
			waitDataPlane(t, addon, ns, "http-alice")
		})
		change("bob's bridge deleted", map[string][2]string{"bob": {sideBob, sideCluster}}, func() {
			addon.DeleteBridge(t, ns, "http-bob")
		})
		results := l.finish()
		check(t, results, initial, changes)
		if got := restartsOf(t, w, ns, podName, echoContainer); got != restartsBefore {
			t.Errorf("carrier restarted %d times during the load", got-restartsBefore)
		}
	})
	// Last: a bulk transfer through the tunnel must not disturb the others.
	t.Run("raw TCP: bytes both ways to the local side", func(t *testing.T) {
		// Several connections at once, one of them large; none is HTTP.
		sizes := []int{0, 64 << 10, 16 << 20}
		errs := make(chan error, len(sizes))
		for _, n := range sizes {
			go func() {
				payload := make([]byte, n)
				rand.Read(payload)
				began := time.Now()
				side, err := tcpRoundTrip(w, tcpAddr, payload)
				if err == nil && side != sideAlice {
					err = fmt.Errorf("answered by %q, want %q", side, sideAlice)
				}
				if err == nil && n > 0 {
					t.Logf("%d bytes up and echoed back in %s", n, time.Since(began).Round(time.Millisecond))
				}
				if err != nil {
					err = fmt.Errorf("%d bytes: %w", n, err)
				}
				errs <- err
			}()
		}
		for range sizes {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	})

	t.Logf("TestDataPlane took %s", since(start))
}

// logDataPlane logs what carrier in the Pod and stowaway logged.
func logDataPlane(t *testing.T, w *testworld.World, ns, pod string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"logs", "-n", ns, pod, "-c", echoContainer, "--tail=80"},
		{"logs", "-n", story.AddonNamespace, "deployment/" + story.StowawayDeployment, "--tail=40"},
	} {
		out, err := w.RunKubectl(ctx, "", args...)
		t.Logf("kubectl %s (%v):\n%s", strings.Join(args, " "), err, out)
	}
}

// echoPod is the name of the workload's one Pod.
func echoPod(t *testing.T, w *testworld.World, ns string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := w.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + echoWorkload})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	if len(names) != 1 {
		t.Fatalf("Pods of %s: %v, want one", echoWorkload, names)
	}
	return names[0]
}

func restartsOf(t *testing.T, w *testworld.World, ns, pod, container string) int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := w.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return restarts(p, container)
}

// tcpEcho sends payload over a connection to the TCP echo at addr and
// returns the name of the side that answered.
func tcpEcho(t *testing.T, w *testworld.World, addr string, payload []byte) string {
	t.Helper()
	side, err := tcpRoundTrip(w, addr, payload)
	if err != nil {
		t.Fatal(err)
	}
	return side
}

// tcpRoundTrip reads the echo's first line (its name) while it writes
// payload and closes its side; the rest must be payload, byte for byte,
// and then the end of the stream.
func tcpRoundTrip(w *testworld.World, addr string, payload []byte) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := w.Dialer()(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the echo's name: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", fmt.Errorf("after %d echoed bytes: %w", n, err)
	}
	if err := <-wrote; err != nil {
		return "", fmt.Errorf("writing: %w", err)
	}
	if want := sha256.Sum256(payload); n != int64(len(payload)) || !bytes.Equal(h.Sum(nil), want[:]) {
		return "", fmt.Errorf("echoed %d bytes (sha256 %x), sent %d (sha256 %x)", n, h.Sum(nil)[:8], len(payload), want[:8])
	}
	return strings.TrimSuffix(name, "\n"), nil
}

// echoStream is one POST /echo whose request body is still being written.
type echoStream struct {
	resp   *http.Response
	body   *io.PipeWriter
	r      *bufio.Reader
	reused bool
	local  string // the client connection's local address
	cancel context.CancelFunc
}

// openEchoStream starts a streaming POST /echo at addr over tr, as user
// (no header if empty), and returns once the response headers are in.
func openEchoStream(t *testing.T, tr *http.Transport, addr, user string) *echoStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	s := &echoStream{cancel: cancel}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
		s.reused, s.local = ci.Reused, ci.Conn.LocalAddr().String()
	}})
	pr, pw := io.Pipe()
	s.body = pw
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/echo", pr)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("X-Gefyra-User", user)
	}
	if s.resp, err = tr.RoundTrip(req); err != nil {
		cancel()
		t.Fatalf("POST /echo as %q: %v", user, err)
	}
	s.r = bufio.NewReader(s.resp.Body)
	return s
}

// ping sends line i and reads it back while the request stays open.
func (s *echoStream) ping(t *testing.T, i int) {
	t.Helper()
	want := fmt.Sprintf("ping %d from %s\n", i, s.local)
	if _, err := io.WriteString(s.body, want); err != nil {
		t.Fatalf("ping %d: %v", i, err)
	}
	got, err := s.r.ReadString('\n')
	if err != nil || got != want {
		t.Fatalf("ping %d: echoed %q, %v; want %q", i, got, err, want)
	}
}

// end finishes the request and expects the response to end with it.
func (s *echoStream) end(t *testing.T) {
	t.Helper()
	s.body.Close()
	if rest, err := io.ReadAll(s.r); err != nil || len(rest) != 0 {
		t.Errorf("after the request's end: %q, %v", rest, err)
	}
}

func (s *echoStream) close() {
	s.body.Close()
	s.resp.Body.Close()
	s.cancel()
}

// updateRules replaces a bridge's rules.
func updateRules(t *testing.T, addon *story.Addon, ns, name string, rules ...gefyrav1.Rule) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := &gefyrav1.GefyraBridge{}
	if err := addon.Kube().Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, b); err != nil {
		t.Fatal(err)
	}
	b.Spec.Rules = rules
	if err := addon.Kube().Update(ctx, b); err != nil {
		t.Fatalf("updating the rules of %s: %v", name, err)
	}
	t.Logf("GefyraBridge %s/%s: rules updated (generation %d)", ns, name, b.Generation)
}

// waitDataPlane waits until the bridge's DataPlaneReady condition is True
// for its current generation.
func waitDataPlane(t *testing.T, addon *story.Addon, ns, name string) {
	t.Helper()
	testworld.WaitFor(t, "GefyraBridge "+ns+"/"+name+" acknowledged by the data plane", time.Minute, func(ctx context.Context) (bool, string, error) {
		b := &gefyrav1.GefyraBridge{}
		if err := addon.Kube().Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, b); err != nil {
			return false, err.Error(), nil
		}
		c := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionDataPlaneReady)
		if c == nil {
			return false, "no condition yet", nil
		}
		return c.Status == metav1.ConditionTrue && c.ObservedGeneration == b.Generation,
			fmt.Sprintf("%s for generation %d of %d: %s", c.Status, c.ObservedGeneration, b.Generation, c.Message), nil
	})
}

// result is one request of the load.
type result struct {
	user       string
	start, end time.Time
	status     int
	side       string // X-Served-By
	reused     bool   // on a kept-alive connection
	err        error
}

// load is clients sending requests continuously, each on its own kept-alive
// connection, with a short pause between requests.
type load struct {
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex // guards results
	results []result
}

func startLoad(w *testworld.World, url string, users []string) *load {
	ctx, stop := context.WithCancel(context.Background())
	l := &load{stop: stop}
	for _, user := range users {
		tr := &http.Transport{DialContext: w.Dialer(), MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer tr.CloseIdleConnections()
			for ctx.Err() == nil {
				r := get(tr, url, user)
				l.mu.Lock()
				l.results = append(l.results, r)
				l.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
	}
	return l
}

// get sends one request as user; it has its own deadline, so stopping the
// load never cuts a request short.
func get(tr *http.Transport, url, user string) (r result) {
	r = result{user: user, start: time.Now()}
	defer func() { r.end = time.Now() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { r.reused = ci.Reused }})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("X-Gefyra-User", user)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.status, r.side = resp.StatusCode, resp.Header.Get("X-Served-By")
	var info struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		r.err = fmt.Errorf("body: %w", err)
	} else if info.Name != r.side {
		r.err = fmt.Errorf("the body names %q, the header %q", info.Name, r.side)
	}
	io.Copy(io.Discard, resp.Body)
	return r
}

// waitSide waits until a request of user that started after since was
// answered by side.
func (l *load) waitSide(t *testing.T, user, side string, since time.Time) {
	t.Helper()
	testworld.WaitFor(t, user+"'s requests to reach "+side, 90*time.Second, func(context.Context) (bool, string, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		n := 0
		for _, r := range slices.Backward(l.results) {
			if r.user != user || r.start.Before(since) {
				continue
			}
			if r.err == nil && r.side == side {
				return true, "", nil
			}
			n++
		}
		return false, fmt.Sprintf("%d requests since, none answered by %s", n, side), nil
	})
}

// finish stops the load and returns every request's result; a second call
// returns the same.
func (l *load) finish() []result {
	l.stop()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.results
}

// transition is a change of the side that answers user's requests, made at
// at.
type transition struct {
	user, from, to string
	at             time.Time
}

// check asserts that every request succeeded and was answered as the rules
// say: before a change by the side before it, once a request was answered
// by the side after it every later request too (carrier and stowaway take
// each configuration whole), and in between by one of the two.
func check(t *testing.T, results []result, initial map[string]string, changes []transition) {
	t.Helper()
	// When each change was seen in force: the end of the first request
	// answered by the new side.
	seen := make([]time.Time, len(changes))
	for i, c := range changes {
		for _, r := range results {
			if r.user == c.user && r.err == nil && r.side == c.to && !r.start.Before(c.at) && (seen[i].IsZero() || r.end.Before(seen[i])) {
				seen[i] = r.end
			}
		}
		if seen[i].IsZero() {
			t.Errorf("%s's requests never reached %s after the change at %s", c.user, c.to, c.at.Format(time.StampMilli))
		}
	}
	var failed, wrong, reused int
	perUser := map[string]int{}
	for _, r := range results {
		perUser[r.user]++
		if r.reused {
			reused++
		}
		if r.err != nil || r.status/100 != 2 {
			failed++
			if failed <= 10 {
				t.Errorf("%s's request at %s failed: status %d, %v", r.user, r.start.Format(time.StampMilli), r.status, r.err)
			}
			continue
		}
		allowed := []string{initial[r.user]}
		for i, c := range changes {
			if c.user != r.user {
				continue
			}
			switch {
			case r.end.Before(c.at):
				// Before the change: allowed stays.
			case !seen[i].IsZero() && r.start.After(seen[i]):
				allowed = []string{c.to}
			default:
				allowed = []string{c.from, c.to}
			}
		}
		if !slices.Contains(allowed, r.side) {
			wrong++
			if wrong <= 10 {
				t.Errorf("%s's request %s–%s was answered by %q, want %v", r.user, r.start.Format(time.StampMilli),
					r.end.Format(time.StampMilli), r.side, allowed)
			}
		}
	}
	t.Logf("%d requests (%v per user), %d on kept-alive connections; %d failed, %d answered by the wrong side",
		len(results), perUser, reused, failed, wrong)
	if len(results) == 0 || reused*2 < len(results) {
		t.Errorf("%d of %d requests reused a connection: the load must keep its connections alive", reused, len(results))
	}
}

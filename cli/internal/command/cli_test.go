package command

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gefyra.dev/gefyra/cli/internal/clitest"
	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/state"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/wgnet"
)

type serverReply struct {
	Greeting string   `json:"greeting"`
	Args     []string `json:"args"`
	Token    string   `json:"token"`
	Env      string   `json:"env"`
	File     string   `json:"file"`
}

func httpGet(c *http.Client, url string, header http.Header) (serverReply, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return serverReply{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return serverReply{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return serverReply{}, fmt.Errorf("%s: %s", resp.Status, b)
	}
	var r serverReply
	return r, json.NewDecoder(resp.Body).Decode(&r)
}

// gefyra run, with Docker and no cluster: the container runs the command
// as split from -c, with the mount and environment, answers on the IP it
// prints, and `down` finds it by its labels after the state is gone.
func TestRunAndDownWithoutState(t *testing.T) {
	eng := clitest.Docker(t)
	image := clitest.ServerImage(t, eng)
	home := t.TempDir()
	dir := t.TempDir()
	clitest.Must(t, os.WriteFile(filepath.Join(dir, "main.py"), []byte("print('fixed')"), 0o644))
	w := &world{t: t, eng: eng, home: home, kubeconfig: filepath.Join(t.TempDir(), "no-kubeconfig")}
	w.env = Env{Getenv: func(k string) string {
		if k == "GEFYRA_HOME" {
			return home
		}
		return ""
	}, Network: eng.Network(), AgentName: clitest.RandomName("gefyra-agent-t-"), Labels: clitest.TestLabels}

	name := clitest.RandomName("myfastapi-demo-")
	r := w.ok("run", "-i", image, "-N", name, "-n", "oauth2-demo", "-v", dir+":/app", "--env", "MODE=debug",
		"-c", "/server --listen :8155 --greeting 'hello world'", "-o", "json")
	var c struct {
		Name, IP, State, Namespace string
		Command                    []string
	}
	clitest.Must(t, json.Unmarshal([]byte(r.stdout), &c))
	if c.Name != name || c.IP == "" || c.State != "running" || c.Namespace != "oauth2-demo" {
		t.Fatalf("run printed %+v", c)
	}
	if want := fmt.Sprintf("[INFO] Container %s is running at %s (namespace oauth2-demo)\n", name, c.IP); r.stderr != want {
		t.Fatalf("stderr = %q, want %q", r.stderr, want)
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	var reply serverReply
	clitest.Eventually(t, 20*time.Second, "the container answers on its IP", func() (err error) {
		reply, err = httpGet(hc, "http://"+c.IP+":8155/?env=MODE&file=/app/main.py", nil)
		return err
	})
	want := []string{"/server", "--listen", ":8155", "--greeting", "hello world"}
	if !slices.Equal(reply.Args, want) || reply.Env != "debug" || reply.File != "print('fixed')" {
		t.Fatalf("reply = %+v, want args %q, env and the mounted file", reply, want)
	}

	// Bad input leaves nothing behind.
	before, err := eng.List(context.Background())
	clitest.Must(t, err)
	w.fails("a container named "+name+" already exists", "run", "-i", image, "-N", name, "-n", "x")
	w.fails("image gefyra.dev/not-here:1 not found locally: build or load it first", "run", "-i", "gefyra.dev/not-here:1", "-N", "other", "-n", "x")
	w.fails("exited at once", "run", "-i", image, "-N", clitest.RandomName("bad-"), "-n", "x", "-c", "/server --listen nowhere")
	after, err := eng.List(context.Background())
	clitest.Must(t, err)
	if len(after) != len(before) {
		t.Fatalf("containers after failed runs: %+v, want %+v", after, before)
	}

	// down works from the labels alone: no state, no cluster.
	clitest.Must(t, os.RemoveAll(home))
	r = w.ok("down")
	if !strings.Contains(r.stderr, "[INFO] Removed container "+name) || !strings.Contains(r.stderr, "no cluster configured") {
		t.Fatalf("down said %q", r.stderr)
	}
	left, err := eng.List(context.Background())
	clitest.Must(t, err)
	if len(left) != 0 {
		t.Fatalf("containers after down: %+v", left)
	}
	if info, _ := eng.NetworkInfo(context.Background()); info.Exists {
		t.Fatalf("network %s is still there after down", eng.Network())
	}
	w.ok("down") // twice is fine
}

func TestDockerNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	w := &world{t: t, kubeconfig: filepath.Join(t.TempDir(), "none"), env: Env{Getenv: func(string) string { return "" }}}
	for _, args := range [][]string{
		{"run", "-i", "x", "-N", "y", "-n", "z"},
		{"up"},
		{"bridge", "-N", "x", "--deployment", "d", "--port", "80"},
	} {
		w.fails("Docker is not reachable at unix://"+sock, args...)
		r := w.gefyra(args...)
		if !strings.Contains(r.stderr, "start Docker") {
			t.Fatalf("gefyra %v: %q, want advice to start Docker", args, r.stderr)
		}
	}
}

func TestUpNeedsTheAddOn(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	cp := &appsv1.Deployment{}
	clitest.Must(t, api.Client.Get(ctx, client.ObjectKey{Namespace: cluster.Namespace, Name: cluster.ControlPlane}, cp))
	clitest.Must(t, api.Client.Delete(ctx, cp))
	w.fails("gefyra is not installed in the cluster (deployment gefyra/gefyra-controlplane is missing): run `gefyra up --install`", "up")
	if gc, _ := (&cluster.Cluster{Client: api.Client}).GetClient(ctx, w.client); gc != nil {
		t.Fatal("up registered a client without the add-on")
	}
	// --install puts it back; no control plane runs here, so the wait
	// for a tunnel address ends with what to check.
	r := w.fails("the control plane did not give client john-gefyra.dev a tunnel address within 2s: deployment gefyra/gefyra-controlplane has no available replica",
		"up", "--install", "--timeout", "2s")
	if !strings.Contains(r.stderr, "[INFO] Installing gefyra's add-on") {
		t.Fatalf("up --install said %q", r.stderr)
	}
	clitest.Must(t, api.Client.Get(ctx, client.ObjectKey{Namespace: cluster.Namespace, Name: cluster.ControlPlane}, cp))
	if cp.Labels["app.kubernetes.io/part-of"] != "gefyra" {
		t.Fatalf("the control plane's labels %v lack the kustomization's", cp.Labels)
	}
	gc := &gefyrav1.GefyraClient{}
	clitest.Must(t, api.Client.Get(ctx, client.ObjectKey{Namespace: cluster.Namespace, Name: johnClient}, gc))
	if gc.Spec.User != "john@gefyra.dev" || gc.Status.LastHeartbeat == nil || gc.Spec.LeaseDuration.Duration != DefaultLease {
		t.Fatalf("client = %+v, want user john@gefyra.dev, a heartbeat and the default lease", gc)
	}
}

func TestBridgeBeforeUp(t *testing.T) {
	w := newWorld(t)
	w.fails("gefyra is not up for context "+w.context+": run `gefyra up` first",
		"bridge", "-N", "x", "-n", "default", "--deployment", "d", "--port", "80")
	if b := bridgesOf(t, w.client); len(b) != 0 {
		t.Fatalf("bridges: %v", b)
	}
}

// The tutorial's flow against a real API server and real Docker: up (the
// agent's handshake with a stand-in stowaway), run, bridge (a request
// through the tunnel reaches the local container), list, status, unbridge,
// down.
func TestTutorialFlow(t *testing.T) {
	w := newWorld(t).withAgent()
	image := clitest.ServerImage(t, w.eng)
	op := startOperatorStandIn(t, w)
	ctx := context.Background()
	ns, err := api.Namespace(ctx)
	clitest.Must(t, err)
	pod := demoWorkload(t, ns, "oauth2-demo")
	demoWorkload(t, ns, "other")

	// up
	r := w.ok("up", "--timeout", "60s")
	if !strings.Contains(r.stderr, "[INFO] gefyra is up: client john-gefyra.dev, tunnel address 10.122.0.2, stowaway "+op.endpoint) {
		t.Fatalf("up said %q", r.stderr)
	}
	// The stand-in stowaway carries nothing into the cluster: up says so.
	if want := "[WARN] Local containers will not reach the cluster's Services: stowaway carries no traffic into the cluster (it runs without --egress-networks)"; !strings.Contains(r.stderr, want) {
		t.Fatalf("up said %q; want %q", r.stderr, want)
	}
	dir := state.Open(w.home, w.context)
	keyFile := filepath.Join(dir.Path(), "wireguard.key")
	fi, err := os.Stat(keyFile)
	clitest.Must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("the private key's mode is %v, want 0600", fi.Mode().Perm())
	}
	key, err := os.ReadFile(keyFile)
	clitest.Must(t, err)
	priv, err := wgnet.ParseKey(string(key))
	clitest.Must(t, err)
	gc := &gefyrav1.GefyraClient{}
	clitest.Must(t, api.Client.Get(ctx, client.ObjectKey{Namespace: cluster.Namespace, Name: johnClient}, gc))
	if gc.Spec.PublicKey != priv.PublicKey().String() || gc.Spec.User != "john@gefyra.dev" {
		t.Fatalf("client spec = %+v, want the state's public key and user", gc.Spec)
	}
	r = w.ok("up", "--timeout", "60s") // again: harmless, the agent is kept
	if strings.Contains(r.stderr, "Started the local agent") {
		t.Fatalf("a second up restarted the agent: %q", r.stderr)
	}

	// run (the tutorial's -c, with a server instead of debugpy)
	w.ok("run", "-i", image, "-N", "myfastapi-demo", "-n", ns, "-c", "/server --greeting 'from the laptop'")
	w.ok("run", "-i", image, "-N", "second", "-n", ns, "-c", "/server --greeting second")

	// The Pod is out of its Service (its container restarts with carrier)
	// and back in it a moment later: bridge waits for that.
	notReady := false
	eps := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "oauth2-demo-x", Labels: map[string]string{discoveryv1.LabelServiceName: "oauth2-demo"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.9"}, Conditions: discoveryv1.EndpointConditions{Ready: &notReady},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}}},
	}
	clitest.Must(t, api.Client.Create(ctx, eps))
	var routed atomic.Bool
	go func() {
		time.Sleep(1500 * time.Millisecond)
		ready := true
		eps.Endpoints[0].Conditions.Ready = &ready
		if err := api.Client.Update(ctx, eps); err == nil {
			routed.Store(true)
		}
	}()

	// bridge, exactly as the tutorial prints it
	r = w.ok("bridge", "-N", "myfastapi-demo", "-n", ns, "--deployment", "oauth2-demo",
		"--port", "8155:8155", "--container-name", "oauth2-demo-app", "-I", "myfastapi")
	want := "[INFO] Creating bridge for Pod " + pod + "\n[INFO] Waiting for the bridge(s) to become active\n[INFO] Bridge myfastapi established\n"
	if r.stderr != want {
		t.Fatalf("bridge said\n%s\nwant\n%s", r.stderr, want)
	}
	if !routed.Load() {
		t.Fatal("bridge said the bridge was established while its Pod was not ready in its Service")
	}
	bs := bridgesOf(t, w.client)
	if len(bs) != 1 {
		t.Fatalf("bridges = %v", bs)
	}
	wantSpec := gefyrav1.GefyraBridgeSpec{Client: johnClient,
		Target: gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "oauth2-demo", Container: "oauth2-demo-app"},
		Ports:  []gefyrav1.PortMapping{{Remote: 8155, Local: 8155, Protocol: gefyrav1.ProtocolHTTP}}, Local: "myfastapi-demo"}
	if b := bs[0]; b.Name != "myfastapi" || b.Namespace != ns || !equalSpec(b.Spec, wantSpec) {
		t.Fatalf("bridge = %s/%s %+v, want %+v", b.Namespace, b.Name, b.Spec, wantSpec)
	}

	// A second bridge of this client to another container on the same
	// local port gets another tunnel port.
	w.ok("bridge", "-N", "second", "-n", ns, "--deployment", "other", "--port", "8155:8155", "--container-name", "oauth2-demo-app", "-I", "second")
	var second gefyrav1.GefyraBridge
	clitest.Must(t, api.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "second"}, &second))
	if p := second.Spec.Ports; len(p) != 1 || p[0].Remote != 8155 || p[0].Local == 8155 {
		t.Fatalf("second bridge's ports = %+v, want remote 8155 on another tunnel port", p)
	}

	// Through the tunnel, as stowaway sends the cluster's requests: the
	// agent hands each tunnel port to its local container.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return op.stowaway.DialContext(ctx, "tcp", addr)
		}}}
	token := http.Header{"X-Forwarded-Access-Token": {"eyJhbGciOi.payload.sig"}}
	for _, c := range []struct {
		port     int32
		greeting string
	}{{8155, "from the laptop"}, {second.Spec.Ports[0].Local, "second"}} {
		var reply serverReply
		clitest.Eventually(t, 20*time.Second, "a request through the tunnel", func() (err error) {
			reply, err = httpGet(hc, fmt.Sprintf("http://%s:%d/items/123", standInClientAddr, c.port), token)
			return err
		})
		if reply.Greeting != c.greeting || reply.Token != "eyJhbGciOi.payload.sig" {
			t.Fatalf("through tunnel port %d: %+v, want %q with the token", c.port, reply, c.greeting)
		}
	}

	// list and status
	r = w.ok("list", "-o", "json")
	var l Listing
	clitest.Must(t, json.Unmarshal([]byte(r.stdout), &l))
	if len(l.Bridges) != 2 || l.Bridges[0].Name != "myfastapi" || !l.Bridges[0].Ready || l.Bridges[0].Container != "myfastapi-demo" ||
		l.Bridges[0].Target != "deployment/oauth2-demo/oauth2-demo-app" || len(l.Containers) != 3 || len(l.Clients) != 1 || l.Clients[0].Address != standInClientAddr {
		t.Fatalf("list = %+v", l)
	}
	r = w.ok("list")
	if !strings.Contains(r.stdout, "myfastapi") || !strings.Contains(r.stdout, "CONTAINER") {
		t.Fatalf("list printed %q", r.stdout)
	}
	r = w.ok("status", "-o", "json")
	var s Status
	clitest.Must(t, json.Unmarshal([]byte(r.stdout), &s))
	if !s.Tunnel.Running || !s.Tunnel.Up || s.Tunnel.Status.HandshakeAgeSeconds < 0 || len(s.Tunnel.Status.Targets) != 2 ||
		s.Client == nil || len(s.Bridges) != 2 {
		t.Fatalf("status = %+v", s)
	}
	// An API server without a kubelet cannot proxy to carrier's metrics:
	// status says so per bridge, and nothing else is wrong.
	for _, p := range s.Problems {
		if !strings.HasPrefix(p, "no request counts for bridge ") {
			t.Fatalf("status problems: %q", s.Problems)
		}
	}
	r = w.ok("status")
	if !strings.Contains(r.stdout, "Tunnel:   up") {
		t.Fatalf("status printed %q", r.stdout)
	}

	// Bad input against the real API server: one line, nothing created.
	w.fails("deployment/nope does not exist in namespace "+ns, "bridge", "-N", "myfastapi-demo", "-n", ns, "--deployment", "nope", "--port", "8155")
	w.fails(`deployment/oauth2-demo has no container "app" (it has oauth2-proxy, oauth2-demo-app)`,
		"bridge", "-N", "myfastapi-demo", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155", "--container-name", "app")
	w.fails("deployment/oauth2-demo has 2 containers (oauth2-proxy, oauth2-demo-app): name the one to bridge with --container-name",
		"bridge", "-N", "myfastapi-demo", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155")
	w.fails("container oauth2-demo-app of deployment/oauth2-demo does not declare port 9999 (it declares 8155)",
		"bridge", "-N", "myfastapi-demo", "-n", ns, "--deployment", "oauth2-demo", "--port", "9999:8155", "--container-name", "oauth2-demo-app")
	w.fails("a bridge named myfastapi already exists in namespace "+ns,
		"bridge", "-N", "second", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155", "--container-name", "oauth2-demo-app", "-I", "myfastapi")
	w.fails("there is no local container named ghost: start it with `gefyra run -N ghost ...`",
		"bridge", "-N", "ghost", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155", "--container-name", "oauth2-demo-app")
	if bs := bridgesOf(t, w.client); len(bs) != 2 {
		t.Fatalf("bridges after bad input: %d, want the 2 from before", len(bs))
	}
	clitest.Must(t, api.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "myfastapi"}, &bs[0]))
	if bs[0].Spec.Local != "myfastapi-demo" {
		t.Fatalf("the existing bridge changed: %+v", bs[0].Spec)
	}

	// The operator's verdicts: a rejection fails at once with its reason,
	// silence fails after --timeout; either way the bridge goes again.
	op.rejectBridge("rejected", "PortNotDeclared")
	w.fails("the control plane rejected bridge rejected: PortNotDeclared: rejected by the operator stand-in",
		"bridge", "-N", "second", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155", "--container-name", "oauth2-demo-app", "-I", "rejected")
	op.ignoreBridge("silent")
	w.fails("bridge silent did not become active within 2s",
		"bridge", "-N", "second", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155", "--container-name", "oauth2-demo-app", "-I", "silent", "--timeout", "2s")
	if bs := bridgesOf(t, w.client); len(bs) != 2 {
		t.Fatalf("bridges after failed bridges: %v, want the 2 from before", names(bs))
	}
	st, err := dir.Load()
	clitest.Must(t, err)
	if len(st.Bridges) != 2 {
		t.Fatalf("state remembers %d bridges, want 2", len(st.Bridges))
	}

	// unbridge one, then the rest.
	r = w.ok("unbridge", "-I", "myfastapi")
	if !strings.Contains(r.stderr, "[INFO] Bridge myfastapi removed") {
		t.Fatalf("unbridge said %q", r.stderr)
	}
	if bs := bridgesOf(t, w.client); len(bs) != 1 || bs[0].Name != "second" {
		t.Fatalf("bridges after unbridge: %v", names(bs))
	}
	clitest.Eventually(t, 10*time.Second, "the agent forgets tunnel port 8155", func() error {
		s := w.ok("status", "-o", "json")
		var st Status
		if err := json.Unmarshal([]byte(s.stdout), &st); err != nil {
			return err
		}
		if _, ok := st.Tunnel.Status.Targets[8155]; ok || len(st.Tunnel.Status.Targets) != 1 {
			return fmt.Errorf("targets %v", st.Tunnel.Status.Targets)
		}
		return nil
	})
	w.fails("there is no bridge myfastapi in namespace "+ns, "unbridge", "-I", "myfastapi", "-n", ns)
	w.ok("unbridge", "--all")
	if bs := bridgesOf(t, w.client); len(bs) != 0 {
		t.Fatalf("bridges after unbridge --all: %v", names(bs))
	}

	// down: the cluster and this machine are as before up.
	w.ok("bridge", "-N", "myfastapi-demo", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155:8155", "--container-name", "oauth2-demo-app", "-I", "myfastapi")
	r = w.ok("down")
	for _, want := range []string{"Removing bridge myfastapi", "Removing client john-gefyra.dev", "Removed container myfastapi-demo", "Removed container " + w.env.AgentName, "gefyra is down"} {
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("down said %q, want %q", r.stderr, want)
		}
	}
	if bs := bridgesOf(t, w.client); len(bs) != 0 {
		t.Fatalf("bridges after down: %v", names(bs))
	}
	if gc, _ := (&cluster.Cluster{Client: api.Client}).GetClient(ctx, w.client); gc != nil {
		t.Fatal("the client is still there after down")
	}
	if left, _ := w.eng.List(ctx); len(left) != 0 {
		t.Fatalf("containers after down: %+v", left)
	}
	if _, err := os.Stat(dir.Path()); !os.IsNotExist(err) {
		t.Fatalf("the state directory is still there after down: %v", err)
	}
	w.ok("down")
}

func equalSpec(a, b gefyrav1.GefyraBridgeSpec) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func names(bs []gefyrav1.GefyraBridge) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Namespace+"/"+b.Name)
	}
	return out
}

// --env-from copies the environment of a cluster container, resolving
// ConfigMaps, Secrets and $(VAR) references.
func TestRunEnvFrom(t *testing.T) {
	w := newWorld(t)
	image := clitest.ServerImage(t, w.eng)
	ctx := context.Background()
	ns, err := api.Namespace(ctx)
	clitest.Must(t, err)
	demoWorkload(t, ns, "oauth2-demo")
	name := clitest.RandomName("env-")
	r := w.ok("run", "-i", image, "-N", name, "-n", ns, "--env-from", "deployment/oauth2-demo/oauth2-demo-app", "--env", "HOST=override")
	if !strings.Contains(r.stderr, "POD_IP: field status.podIP exists only inside the Pod; not copied") {
		t.Fatalf("run said %q, want a warning about POD_IP", r.stderr)
	}
	c, _, err := w.eng.Inspect(ctx, name)
	clitest.Must(t, err)
	hc := &http.Client{Timeout: 2 * time.Second}
	for k, want := range map[string]string{"UPSTREAM": "http://127.0.0.1:8155", "GREETING": "hi", "URL": "http://$(HOST):8155",
		"HOST": "override", "POD_NS": ns, "SECRET": "s3cret"} {
		var reply serverReply
		clitest.Eventually(t, 20*time.Second, "the container answers", func() (err error) {
			reply, err = httpGet(hc, "http://"+c.IP+":8155/?env="+k, nil)
			return err
		})
		if reply.Env != want {
			t.Errorf("%s = %q, want %q", k, reply.Env, want)
		}
	}
	w.fails(`--env-from deployment/oauth2-demo: deployment/oauth2-demo has 2 containers`, "run", "-i", image, "-N", clitest.RandomName("env-"), "-n", ns, "--env-from", "deployment/oauth2-demo")
}

// A developer without admin rights: the cluster's RBAC (deploy/rbac) and
// admission policy allow only their own client and bridges, and no reading
// of bridges, so the CLI follows its bridges through the client's status.
func TestDeveloperFlow(t *testing.T) {
	const user = "jane@gefyra.dev"
	w := newUserWorld(t, user).withAgent()
	image := clitest.ServerImage(t, w.eng)
	ctx := context.Background()
	ns, err := api.Namespace(ctx)
	clitest.Must(t, err)
	pod := demoWorkload(t, ns, "oauth2-demo")
	subject := []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}}
	clitest.Must(t, api.Client.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: clitest.RandomName("jane-")},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "gefyra-developer"}, Subjects: subject}))
	// Without read access to the namespace the CLI leaves the checks to
	// the control plane.
	op := startOperatorStandIn(t, w)
	w.ok("up", "--timeout", "60s")
	w.ok("run", "-i", image, "-N", "myfastapi-demo", "-n", ns)
	r := w.ok("bridge", "-N", "myfastapi-demo", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155:8155", "--container-name", "oauth2-demo-app", "-I", "myfastapi")
	if !strings.Contains(r.stderr, "you may not read deployment/oauth2-demo in namespace "+ns+"; the control plane checks the bridge instead") {
		t.Fatalf("bridge said %q", r.stderr)
	}
	w.ok("unbridge", "-I", "myfastapi")

	// With read access to the workloads (as `view` gives), the tutorial's
	// output.
	clitest.Must(t, api.Client.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"", "apps"}, Resources: []string{"pods", "deployments"}, Verbs: []string{"get", "list"}}}}))
	clitest.Must(t, api.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "jane-reader"},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "reader"}, Subjects: subject}))
	clitest.Eventually(t, 10*time.Second, "the reader binding applies", func() error {
		r := w.gefyra("bridge", "-N", "myfastapi-demo", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155:8155", "--container-name", "oauth2-demo-app", "-I", "myfastapi")
		want := "[INFO] Creating bridge for Pod " + pod + "\n[INFO] Waiting for the bridge(s) to become active\n[INFO] Bridge myfastapi established\n"
		if r.code != 0 || r.stderr != want {
			if r.code == 0 {
				w.ok("unbridge", "-I", "myfastapi")
			}
			return fmt.Errorf("bridge said %q", r.stderr)
		}
		return nil
	})
	op.rejectBridge("rejected", "PortNotDeclared")
	w.fails("the control plane rejected bridge rejected: PortNotDeclared",
		"bridge", "-N", "myfastapi-demo", "-n", ns, "--deployment", "oauth2-demo", "--port", "8155", "--container-name", "oauth2-demo-app", "-I", "rejected")
	r = w.ok("list", "-o", "json")
	var l Listing
	clitest.Must(t, json.Unmarshal([]byte(r.stdout), &l))
	if len(l.Bridges) != 1 || !l.Bridges[0].Ready || l.Bridges[0].Container != "myfastapi-demo" || len(l.Clients) != 1 || l.Clients[0].Name != w.client {
		t.Fatalf("list = %+v, want the bridge and only jane's own client", l)
	}
	r = w.ok("down")
	if !strings.Contains(r.stderr, "Removing bridge myfastapi") || !strings.Contains(r.stderr, "Removing client "+w.client) {
		t.Fatalf("down said %q", r.stderr)
	}
	if bs := bridgesOf(t, w.client); len(bs) != 0 {
		t.Fatalf("bridges after down: %v", names(bs))
	}
	if gc, _ := (&cluster.Cluster{Client: api.Client}).GetClient(ctx, w.client); gc != nil {
		t.Fatal("jane's client is still there after down")
	}
}

// up says what to check when stowaway's UDP endpoint does not answer, and
// a second up with the right endpoint replaces the agent.
func TestUpWithUnreachableStowaway(t *testing.T) {
	w := newWorld(t).withAgent()
	op := startOperatorStandIn(t, w)
	host, _, err := net.SplitHostPort(op.endpoint)
	clitest.Must(t, err)
	// A port of this machine nothing listens on.
	pc, err := net.ListenPacket("udp4", net.JoinHostPort(host, "0"))
	clitest.Must(t, err)
	dead := pc.LocalAddr().String()
	pc.Close()
	_, port, _ := net.SplitHostPort(dead)
	w.fails("no WireGuard handshake with stowaway at "+dead+" within 3s: make sure UDP port "+port+" of "+host+" is reachable from this machine",
		"up", "--endpoint", dead, "--timeout", "3s")
	r := w.ok("up", "--timeout", "60s")
	if !strings.Contains(r.stderr, "Started the local agent") {
		t.Fatalf("up with another endpoint kept the old agent: %q", r.stderr)
	}
	w.fails("--endpoint 127.0.0.1:31820 is a loopback address", "up", "--endpoint", "127.0.0.1:31820")
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		var stdout, stderr bytes.Buffer
		if code := Main(context.Background(), []string{"completion", shell}, Env{Stdout: &stdout, Stderr: &stderr}); code != 0 {
			t.Fatalf("completion %s: exit code %d: %s", shell, code, stderr.String())
		}
		if !strings.Contains(stdout.String(), "gefyra") || stdout.Len() < 1000 {
			t.Fatalf("completion %s printed %d bytes", shell, stdout.Len())
		}
	}
}

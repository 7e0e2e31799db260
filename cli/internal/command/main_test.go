package command

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"gefyra.dev/gefyra/cli/internal/clitest"
	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/install"
	"gefyra.dev/gefyra/cli/internal/local"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/deploy"
	"gefyra.dev/gefyra/internal/bridge"
	"gefyra.dev/gefyra/internal/wgnet"
)

// api is the real API server the integration tests share (nil when the
// test world's binaries are missing: those tests skip).
var (
	api    *clitest.APIServer
	apiErr error
)

func TestMain(m *testing.M) {
	klog.SetLogger(logr.Discard())
	ctrllog.SetLogger(logr.Discard())
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if !testing.Short() {
		api, apiErr = clitest.StartAPIServer()
		if apiErr == nil {
			defer api.Stop()
			// The add-on as `gefyra up --install` applies it.
			objs, err := install.Render(deploy.FS, ".")
			if err == nil {
				err = install.Apply(context.Background(), api.Admin, objs, nil)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "installing the add-on:", err)
				return 1
			}
		}
	}
	return m.Run()
}

func needAPI(t *testing.T) {
	t.Helper()
	if api == nil {
		t.Skipf("no API server: %v", apiErr)
	}
}

// world is one test's developer machine: a Docker network and agent name
// of its own, a state directory, and a kubeconfig for user
// john@gefyra.dev.
type world struct {
	t          *testing.T
	eng        *local.Engine
	home       string
	kubeconfig string
	context    string
	env        Env
	// client is the GefyraClient of the world's user.
	client string
}

// newWorld is a machine of john@gefyra.dev, a cluster admin.
func newWorld(t *testing.T) *world {
	return newUserWorld(t, "john@gefyra.dev", "system:masters")
}

// newUserWorld is a machine of user (in groups).
func newUserWorld(t *testing.T, user string, groups ...string) *world {
	t.Helper()
	needAPI(t)
	eng := clitest.Docker(t)
	w := &world{t: t, eng: eng, home: t.TempDir()}
	w.context = clitest.RandomName("envtest-")
	var err error
	if w.client, err = bridge.ClientName(user); err != nil {
		t.Fatal(err)
	}
	kc, err := api.Kubeconfig(t.TempDir(), user, w.context, groups...)
	if err != nil {
		t.Fatal(err)
	}
	w.kubeconfig = kc
	w.env = Env{
		Getenv: func(k string) string {
			if k == "GEFYRA_HOME" {
				return w.home
			}
			return ""
		},
		Network:   eng.Network(),
		AgentName: clitest.RandomName("gefyra-agent-t-"),
		Labels:    clitest.TestLabels,
	}
	t.Cleanup(func() {
		// Whatever a test left in the cluster for this client goes.
		ctx := context.Background()
		var bridges gefyrav1.GefyraBridgeList
		if api.Client.List(ctx, &bridges) == nil {
			for i := range bridges.Items {
				if bridges.Items[i].Spec.Client == w.client {
					api.Client.Delete(ctx, &bridges.Items[i])
				}
			}
		}
		api.Client.Delete(ctx, &gefyrav1.GefyraClient{ObjectMeta: metav1.ObjectMeta{Namespace: cluster.Namespace, Name: w.client}})
	})
	return w
}

// withAgent lets the world's `gefyra up` build the agent image from a
// static build of the CLI.
func (w *world) withAgent() *world {
	w.env.AgentBinary = clitest.GefyraBinary(w.t)
	return w
}

const johnClient = "john-gefyra.dev"

type result struct {
	code           int
	stdout, stderr string
}

// gefyra runs the CLI as a separate invocation would.
func (w *world) gefyra(args ...string) result {
	w.t.Helper()
	var stdout, stderr bytes.Buffer
	env := w.env
	env.Stdout, env.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	full := append([]string{"--kubeconfig", w.kubeconfig}, args...)
	code := Main(ctx, full, env)
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	w.t.Logf("gefyra %s → %d\n%s%s", strings.Join(args, " "), code, r.stderr, r.stdout)
	return r
}

// ok runs the CLI and fails the test unless it succeeds.
func (w *world) ok(args ...string) result {
	w.t.Helper()
	r := w.gefyra(args...)
	if r.code != 0 {
		w.t.Fatalf("gefyra %s: exit code %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// fails runs the CLI and checks it fails with one [ERROR] line saying want.
func (w *world) fails(want string, args ...string) result {
	w.t.Helper()
	r := w.gefyra(args...)
	if r.code == 0 {
		w.t.Fatalf("gefyra %s succeeded, want an error saying %q", strings.Join(args, " "), want)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "[ERROR] ") || !strings.Contains(last, want) {
		w.t.Fatalf("gefyra %s: last line %q, want an [ERROR] saying %q", strings.Join(args, " "), last, want)
	}
	if n := strings.Count(r.stderr, "[ERROR]"); n != 1 {
		w.t.Fatalf("gefyra %s: %d [ERROR] lines, want one", strings.Join(args, " "), n)
	}
	return r
}

// operatorStandIn does, for the tests of the CLI's waiting only, the part
// of the control plane the CLI waits for: it gives the client a tunnel
// address and stowaway's key and endpoint, adds the client as a peer of a
// stand-in stowaway (a real userspace WireGuard endpoint on this machine),
// grants the client's user access to the client (as the operator does, so
// that a developer may read it), and marks bridges Ready (or rejects or
// ignores them, as told). The real
// operator's behaviour is tested in controlplane/internal/operator.
type operatorStandIn struct {
	t        *testing.T
	client   string
	stowaway *wgnet.Net
	endpoint string

	mu     sync.Mutex // guards the fields below
	reject map[string]string
	ignore map[string]bool
	peer   wgnet.Key
}

const (
	standInStowawayAddr = "10.122.0.1"
	standInClientAddr   = "10.122.0.2"
)

// startOperatorStandIn starts it with stowaway listening on this machine,
// reachable from the test's Docker network at its gateway.
func startOperatorStandIn(t *testing.T, w *world) *operatorStandIn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := w.eng.EnsureNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := w.eng.NetworkInfo(ctx)
	if err != nil || info.Gateway == "" {
		t.Fatalf("network %s has no gateway: %+v %v", w.eng.Network(), info, err)
	}
	key, err := wgnet.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	sw, err := wgnet.New(wgnet.Config{PrivateKey: key, Address: netip.MustParseAddr(standInStowawayAddr)})
	if err != nil {
		t.Fatal(err)
	}
	o := &operatorStandIn{t: t, client: w.client, stowaway: sw, endpoint: fmt.Sprintf("%s:%d", info.Gateway, sw.ListenPort()),
		reject: map[string]string{}, ignore: map[string]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			o.step(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		sw.Close()
	})
	return o
}

func (o *operatorStandIn) rejectBridge(name, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reject[name] = reason
}

func (o *operatorStandIn) ignoreBridge(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ignore[name] = true
}

func (o *operatorStandIn) step(ctx context.Context) {
	gc := &gefyrav1.GefyraClient{}
	if err := api.Client.Get(ctx, client.ObjectKey{Namespace: cluster.Namespace, Name: o.client}, gc); err != nil {
		return
	}
	o.grantAccess(ctx, gc)
	pub, err := wgnet.ParseKey(gc.Spec.PublicKey)
	if err != nil {
		return
	}
	o.mu.Lock()
	if pub != o.peer {
		o.stowaway.SetPeers([]wgnet.Peer{{PublicKey: pub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix(standInClientAddr + "/32")}}})
		o.peer = pub
	}
	reject, ignore := mapsClone(o.reject), mapsClone(o.ignore)
	o.mu.Unlock()

	orig := gc.DeepCopy()
	gc.Status.Address = standInClientAddr
	gc.Status.Stowaway = &gefyrav1.StowawayEndpoint{Endpoint: o.endpoint, PublicKey: o.stowaway.PublicKey().String(),
		Address: standInStowawayAddr, CIDR: "10.122.0.0/24"}
	meta.SetStatusCondition(&gc.Status.Conditions, metav1.Condition{Type: gefyrav1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Ready", ObservedGeneration: gc.Generation})

	var bridges gefyrav1.GefyraBridgeList
	if err := api.Client.List(ctx, &bridges); err != nil {
		return
	}
	gc.Status.Bridges = nil
	for i := range bridges.Items {
		b := &bridges.Items[i]
		if b.Spec.Client != gc.Name || ignore[b.Name] {
			continue
		}
		borig := b.DeepCopy()
		set := func(typ string, status metav1.ConditionStatus, reason, msg string) {
			meta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: b.Generation})
		}
		if r, ok := reject[b.Name]; ok {
			set(gefyrav1.ConditionAccepted, metav1.ConditionFalse, r, "rejected by the operator stand-in")
			set(gefyrav1.ConditionReady, metav1.ConditionFalse, r, "rejected by the operator stand-in")
		} else {
			set(gefyrav1.ConditionAccepted, metav1.ConditionTrue, "Accepted", "")
			set(gefyrav1.ConditionReady, metav1.ConditionTrue, "Ready", "")
		}
		b.Status.ObservedGeneration = b.Generation
		api.Client.Status().Patch(ctx, b, client.MergeFrom(borig))
		r := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionReady)
		gc.Status.Bridges = append(gc.Status.Bridges, gefyrav1.ClientBridgeStatus{Namespace: b.Namespace, Name: b.Name,
			Ready: r.Status == metav1.ConditionTrue, Reason: r.Reason, Message: r.Message})
	}
	api.Client.Status().Patch(ctx, gc, client.MergeFrom(orig))
}

// grantAccess lets the client's user read the client and renew its
// heartbeat, as the operator's Role per client does.
func (o *operatorStandIn) grantAccess(ctx context.Context, gc *gefyrav1.GefyraClient) {
	name := "gefyra-client-" + gc.Name
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: gc.Namespace, Name: name}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{gefyrav1.GroupVersion.Group}, Resources: []string{"gefyraclients"}, ResourceNames: []string{gc.Name},
			Verbs: []string{"get", "list", "watch", "update", "patch", "delete"}},
		{APIGroups: []string{gefyrav1.GroupVersion.Group}, Resources: []string{"gefyraclients/status"}, ResourceNames: []string{gc.Name},
			Verbs: []string{"get", "update", "patch"}},
	}}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: gc.Namespace, Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: gc.Spec.User}}}
	api.Client.Create(ctx, role)
	api.Client.Create(ctx, rb)
}

func mapsClone[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// demoWorkload creates the tutorial's Deployment (oauth2-proxy sidecar and
// the app on 8155) named name in namespace ns, with one Pod (no kubelet
// runs here: the Pod is just an object the CLI lists).
func demoWorkload(t *testing.T, ns, name string) string {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app.kubernetes.io/name": name}
	containers := []corev1.Container{
		{Name: "oauth2-proxy", Image: "quay.io/oauth2-proxy/oauth2-proxy:v7.2.1", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8809}}},
		{Name: "oauth2-demo-app", Image: "quay.io/gefyra/oauth2-demo:latest", Ports: []corev1.ContainerPort{{Name: "http-intern", ContainerPort: 8155}},
			Env: []corev1.EnvVar{{Name: "GREETING", Value: "hi"}, {Name: "URL", Value: "http://$(HOST):8155"}, {Name: "HOST", Value: "db"},
				{Name: "POD_NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
				{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "SECRET", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: name + "-secret"}, Key: "token"}}}},
			EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name + "-config"}}}}},
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: containers}},
		},
	}
	clitest.Must(t, api.Client.Create(ctx, d))
	clitest.Must(t, api.Client.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-config"},
		Data: map[string]string{"UPSTREAM": "http://127.0.0.1:8155", "GREETING": "overridden below"}}))
	clitest.Must(t, api.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-secret"},
		Data: map[string][]byte{"token": []byte("s3cret")}}))
	pod := name + "-675f5c55b5-xxj57"
	clitest.Must(t, api.Client.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod, Labels: labels},
		Spec: corev1.PodSpec{Containers: containers}}))
	// The control plane's fallback clone matches the selector too; it is
	// not one of the workload's Pods.
	fallback := map[string]string{cluster.LabelFallback: "x"}
	for k, v := range labels {
		fallback[k] = v
	}
	clitest.Must(t, api.Client.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-fallback", Labels: fallback},
		Spec: corev1.PodSpec{Containers: containers}}))
	return pod
}

func bridgesOf(t *testing.T, clientName string) []gefyrav1.GefyraBridge {
	t.Helper()
	var list gefyrav1.GefyraBridgeList
	clitest.Must(t, api.Client.List(context.Background(), &list))
	var out []gefyrav1.GefyraBridge
	for _, b := range list.Items {
		if b.Spec.Client == clientName {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b gefyrav1.GefyraBridge) int { return strings.Compare(a.Name, b.Name) })
	return out
}

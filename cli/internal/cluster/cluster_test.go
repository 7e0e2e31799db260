package cluster_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"gefyra.dev/gefyra/cli/internal/clitest"
	"gefyra.dev/gefyra/cli/internal/cluster"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/wgnet"
)

var (
	api    *clitest.APIServer
	apiErr error
)

func TestMain(m *testing.M) {
	klog.SetLogger(logr.Discard())
	ctrllog.SetLogger(logr.Discard())
	flag.Parse()
	if !testing.Short() {
		api, apiErr = clitest.StartAPIServer()
	}
	code := m.Run()
	if api != nil {
		api.Stop()
	}
	os.Exit(code)
}

// connect loads a kubeconfig for user, as the CLI does.
func connect(t *testing.T, user string, groups ...string) *cluster.Cluster {
	t.Helper()
	if api == nil {
		t.Skipf("no API server: %v", apiErr)
	}
	kc, err := api.Kubeconfig(t.TempDir(), user, "test", groups...)
	clitest.Must(t, err)
	cl, err := cluster.Load(cluster.Options{Kubeconfig: kc, Namespace: "ns1"})
	clitest.Must(t, err)
	clitest.Must(t, cl.Ping(context.Background()))
	return cl
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "config")
	clitest.Must(t, os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\ncontexts:\n- name: a\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: https://127.0.0.1:1}\n"), 0o600))
	tests := []struct {
		name string
		opts cluster.Options
		want string
	}{
		{name: "missing file", opts: cluster.Options{Kubeconfig: filepath.Join(dir, "none")}, want: "no such file"},
		{name: "no current context", opts: cluster.Options{Kubeconfig: kc}, want: "no current context: pass --context"},
		{name: "unknown context", opts: cluster.Options{Kubeconfig: kc, Context: "b"}, want: `context "b" is not in the kubeconfig (it has a)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cluster.Load(tt.opts)
			if !errors.Is(err, cluster.ErrNoKubeconfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load: %v, want ErrNoKubeconfig saying %q", err, tt.want)
			}
		})
	}
	cl, err := cluster.Load(cluster.Options{Kubeconfig: kc, Context: "a"})
	clitest.Must(t, err)
	if cl.Context != "a" || cl.Namespace != "default" {
		t.Fatalf("context %q namespace %q", cl.Context, cl.Namespace)
	}
	err = cl.Ping(context.Background())
	if !errors.Is(err, cluster.ErrUnreachable) || !strings.Contains(err.Error(), "cannot reach the API server of context a at https://127.0.0.1:1") {
		t.Fatalf("Ping of nothing: %v", err)
	}
}

func TestRegisterClient(t *testing.T) {
	cl := connect(t, "anna@gefyra.dev", "system:masters")
	ctx := context.Background()
	user, err := cl.WhoAmI(ctx)
	if err != nil || user != "anna@gefyra.dev" {
		t.Fatalf("WhoAmI = %q, %v", user, err)
	}
	k1, _ := wgnet.GeneratePrivateKey()
	k2, _ := wgnet.GeneratePrivateKey()
	gc, err := cl.RegisterClient(ctx, "anna-gefyra.dev", user, k1.PublicKey().String(), time.Hour)
	clitest.Must(t, err)
	first := gc.UID
	gc, err = cl.RegisterClient(ctx, "anna-gefyra.dev", user, k2.PublicKey().String(), 2*time.Hour)
	clitest.Must(t, err)
	got, err := cl.GetClient(ctx, "anna-gefyra.dev")
	clitest.Must(t, err)
	if got.UID != first || got.Spec.PublicKey != k2.PublicKey().String() || got.Spec.LeaseDuration.Duration != 2*time.Hour || got.Status.LastHeartbeat == nil {
		t.Fatalf("client after a second registration: %+v", got)
	}
	_, err = cl.RegisterClient(ctx, "anna-gefyra.dev", "someone-else", k1.PublicKey().String(), time.Hour)
	if err == nil || !strings.Contains(err.Error(), `belongs to user "anna@gefyra.dev"`) {
		t.Fatalf("registering someone else's client: %v", err)
	}
	_, err = cl.RegisterClient(ctx, "anna2", user, "not-a-key", time.Hour)
	if err == nil || !strings.Contains(err.Error(), "spec.publicKey") {
		t.Fatalf("registering a bad key: %v, want the API server's reason", err)
	}
	clitest.Must(t, cl.DeleteClient(ctx, "anna-gefyra.dev"))
	clitest.Must(t, cl.DeleteClient(ctx, "anna-gefyra.dev")) // twice is fine
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	clitest.Must(t, cl.WaitClientGone(wctx, "anna-gefyra.dev"))
}

func TestCheckInstalled(t *testing.T) {
	cl := connect(t, "admin", "system:masters")
	ctx := context.Background()
	err := cl.CheckInstalled(ctx)
	if !errors.Is(err, cluster.ErrNotInstalled) || !strings.Contains(err.Error(), "deployment gefyra/gefyra-controlplane is missing") {
		t.Fatalf("CheckInstalled without the control plane: %v", err)
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: cluster.Namespace, Name: cluster.ControlPlane},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}}}
	clitest.Must(t, api.Client.Create(ctx, d))
	defer api.Client.Delete(ctx, d)
	clitest.Must(t, cl.CheckInstalled(ctx))
	if p := cl.ControlPlaneProblem(ctx); !strings.Contains(p, "has no available replica") {
		t.Fatalf("ControlPlaneProblem = %q", p)
	}
	// A developer who may not read the control plane is not told it is
	// missing.
	dev := connect(t, "dev@gefyra.dev")
	clitest.Must(t, dev.CheckInstalled(ctx))
}

func TestStowawayNodePortEndpoint(t *testing.T) {
	cl := connect(t, "admin", "system:masters")
	ctx := context.Background()
	_, err := cl.StowawayNodePortEndpoint(ctx)
	if err == nil || !strings.Contains(err.Error(), "gefyra-stowaway-wireguard") {
		t.Fatalf("without the Service: %v", err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: cluster.Namespace, Name: cluster.StowawayService},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Name: "wireguard", Protocol: corev1.ProtocolUDP, Port: 51820, NodePort: 31820}}}}
	clitest.Must(t, api.Client.Create(ctx, svc))
	defer api.Client.Delete(ctx, svc)
	for _, n := range []struct {
		name, ip string
		ready    corev1.ConditionStatus
	}{{"a-notready", "10.250.0.9", corev1.ConditionFalse}, {"b-ready", "10.250.0.2", corev1.ConditionTrue}} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}}
		clitest.Must(t, api.Client.Create(ctx, node))
		defer api.Client.Delete(ctx, node)
		node.Status = corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: n.name}, {Type: corev1.NodeInternalIP, Address: n.ip}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: n.ready}},
		}
		clitest.Must(t, api.Client.Status().Update(ctx, node))
	}
	ep, err := cl.StowawayNodePortEndpoint(ctx)
	if err != nil || ep != "10.250.0.2:31820" {
		t.Fatalf("endpoint = %q, %v; want the ready node's InternalIP and the NodePort", ep, err)
	}
}

func TestGetWorkload(t *testing.T) {
	cl := connect(t, "admin", "system:masters")
	ctx := context.Background()
	ns, err := api.Namespace(ctx)
	clitest.Must(t, err)
	labels := map[string]string{"app": "web"}
	containers := []corev1.Container{{Name: "app", Image: "i", Ports: []corev1.ContainerPort{{ContainerPort: 8080}, {ContainerPort: 53, Protocol: corev1.ProtocolUDP}, {ContainerPort: 80}}}}
	clitest.Must(t, api.Client.Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: containers}}}}))
	for _, p := range []struct {
		name   string
		labels map[string]string
		phase  corev1.PodPhase
	}{
		{"web-1", labels, corev1.PodRunning},
		{"web-0", labels, corev1.PodPending},
		{"web-done", labels, corev1.PodSucceeded},
		{"web-fallback", map[string]string{"app": "web", cluster.LabelFallback: "x"}, corev1.PodRunning},
		{"other", map[string]string{"app": "other"}, corev1.PodRunning},
	} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name, Labels: p.labels}, Spec: corev1.PodSpec{Containers: containers}}
		clitest.Must(t, api.Client.Create(ctx, pod))
		pod.Status.Phase = p.phase
		clitest.Must(t, api.Client.Status().Update(ctx, pod))
	}
	w, err := cl.GetWorkload(ctx, ns, gefyrav1.KindStatefulSet, "web")
	clitest.Must(t, err)
	if fmt.Sprint(w.Pods) != "[web-0 web-1]" || w.Ref() != "statefulset/web" {
		t.Fatalf("workload %s pods %v, want [web-0 web-1]", w.Ref(), w.Pods)
	}
	c, err := w.PickContainer("")
	clitest.Must(t, err)
	if got := cluster.JoinPorts(cluster.TCPPorts(c)); got != "80, 8080" {
		t.Fatalf("TCP ports %s, want 80, 8080", got)
	}
	if _, err := w.PickContainer("nope"); !errors.Is(err, cluster.ErrWorkloadNotFound) {
		t.Fatalf("PickContainer(nope): %v", err)
	}
	p, err := cl.GetWorkload(ctx, ns, gefyrav1.KindPod, "other")
	if err != nil || fmt.Sprint(p.Pods) != "[other]" {
		t.Fatalf("pod workload: %+v, %v", p, err)
	}
	_, err = cl.GetWorkload(ctx, ns, gefyrav1.KindDeployment, "web")
	if !errors.Is(err, cluster.ErrWorkloadNotFound) || err.Error() != "deployment/web does not exist in namespace "+ns {
		t.Fatalf("missing deployment: %v", err)
	}
}

func TestBridgeState(t *testing.T) {
	cl := connect(t, "admin", "system:masters")
	ctx := context.Background()
	ns, err := api.Namespace(ctx)
	clitest.Must(t, err)
	b := &gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b"}, Spec: gefyrav1.GefyraBridgeSpec{
		Client: "c", Target: gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "d", Container: "app"},
		Ports: []gefyrav1.PortMapping{{Remote: 80, Local: 80}}}}
	clitest.Must(t, cl.CreateBridge(ctx, b))
	again := b.DeepCopy()
	again.ResourceVersion = ""
	err = cl.CreateBridge(ctx, again)
	if !errors.Is(err, cluster.ErrBridgeExists) || !strings.HasPrefix(err.Error(), "a bridge named b already exists in namespace "+ns) {
		t.Fatalf("second CreateBridge: %v", err)
	}
	bad := b.DeepCopy()
	bad.ResourceVersion, bad.Name, bad.Spec.Ports = "", "bad", nil
	if err := cl.CreateBridge(ctx, bad); err == nil || !strings.Contains(err.Error(), "the cluster refused bridge bad") {
		t.Fatalf("CreateBridge without ports: %v", err)
	}
	tests := []struct {
		name       string
		conds      []metav1.Condition
		ready      bool
		terminal   bool
		wantReason string
	}{
		{name: "no status", wantReason: "Pending"},
		{name: "waiting for the data plane", conds: []metav1.Condition{
			{Type: gefyrav1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: "Accepted"},
			{Type: gefyrav1.ConditionReady, Status: metav1.ConditionUnknown, Reason: "WaitingForDataPlane"}}, wantReason: "WaitingForDataPlane"},
		{name: "rejected", conds: []metav1.Condition{
			{Type: gefyrav1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: "PortNotDeclared"},
			{Type: gefyrav1.ConditionReady, Status: metav1.ConditionFalse, Reason: "PortNotDeclared"}}, terminal: true, wantReason: "PortNotDeclared"},
		{name: "target missing", conds: []metav1.Condition{
			{Type: gefyrav1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: "Accepted"},
			{Type: gefyrav1.ConditionReady, Status: metav1.ConditionFalse, Reason: "TargetNotFound"}}, terminal: true, wantReason: "TargetNotFound"},
		{name: "ready", conds: []metav1.Condition{
			{Type: gefyrav1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: "Accepted"},
			{Type: gefyrav1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Ready"}}, ready: true, wantReason: "Ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := &gefyrav1.GefyraBridge{}
			clitest.Must(t, api.Client.Get(ctx, client.ObjectKeyFromObject(b), cur))
			orig := cur.DeepCopy()
			cur.Status.Conditions = nil
			for _, c := range tt.conds {
				c.LastTransitionTime = metav1.Now()
				c.ObservedGeneration = cur.Generation
				if c.Message == "" {
					c.Message = "m"
				}
				cur.Status.Conditions = append(cur.Status.Conditions, c)
			}
			clitest.Must(t, api.Client.Status().Patch(ctx, cur, client.MergeFrom(orig)))
			s, err := cl.GetBridgeState(ctx, "c", ns, "b")
			clitest.Must(t, err)
			if !s.Exists || s.Ready != tt.ready || s.Terminal() != tt.terminal || s.Reason != tt.wantReason {
				t.Fatalf("state = %+v (terminal %v), want ready %v terminal %v reason %s", s, s.Terminal(), tt.ready, tt.terminal, tt.wantReason)
			}
		})
	}
	found, err := cl.DeleteBridge(ctx, ns, "b")
	if err != nil || !found {
		t.Fatalf("DeleteBridge = %v, %v", found, err)
	}
	if found, err := cl.DeleteBridge(ctx, ns, "b"); err != nil || found {
		t.Fatalf("second DeleteBridge = %v, %v", found, err)
	}
	if s, err := cl.GetBridgeState(ctx, "c", ns, "b"); err != nil || s.Exists {
		t.Fatalf("state of a deleted bridge: %+v, %v", s, err)
	}
}

func TestNotRouted(t *testing.T) {
	cl := connect(t, "admin", "system:masters")
	ctx := context.Background()
	ns, err := api.Namespace(ctx)
	clitest.Must(t, err)
	ready, notReady := true, false
	slice := func(name, service string, eps ...discoveryv1.Endpoint) {
		clitest.Must(t, api.Client.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   eps,
		}))
	}
	ep := func(ip, pod string, r *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: r},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}}
	}
	slice("web-a", "web", ep("10.0.0.1", "web-0", &notReady), ep("10.0.0.2", "web-1", &ready), ep("10.0.0.3", "other", &notReady))
	slice("admin-a", "admin", ep("10.0.0.1", "web-0", &notReady), ep("10.0.0.2", "web-1", nil))
	tests := []struct {
		name string
		pods []string
		want string
	}{
		{"one Pod out of two Services", []string{"web-0"}, "[Pod web-0 in Service admin Pod web-0 in Service web]"},
		{"ready, or ready unknown", []string{"web-1"}, "[]"},
		{"only the Pods asked about", []string{"web-0", "web-1"}, "[Pod web-0 in Service admin Pod web-0 in Service web]"},
		{"a Pod in no Service", []string{"lonely"}, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cl.NotRouted(ctx, ns, tt.pods)
			clitest.Must(t, err)
			if fmt.Sprint(got) != tt.want {
				t.Fatalf("NotRouted(%v) = %v, want %v", tt.pods, got, tt.want)
			}
		})
	}
	if _, err := connect(t, "nobody").NotRouted(ctx, ns, []string{"web-0"}); !cluster.IsForbidden(err) {
		t.Fatalf("a user who may not list EndpointSlices: %v, want forbidden", err)
	}
}

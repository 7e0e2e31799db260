//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/bridge"
	"gefyra.dev/gefyra/internal/ociimage"
	"gefyra.dev/gefyra/internal/testworld"
	"gefyra.dev/gefyra/internal/wgnet"
)

// The workloads of TestControlPlane run the test world's own server
// (world/testimages/server) as the container carrier replaces (app, port
// 8080) and as a sidecar (port 8081).
const (
	cpServerImage   = worldServerImage + ":v1"
	cpCarrierPrefix = "gefyra.dev/carrier:"
	cpAppPort       = 8080
	// cpTunnelPort is the bridged port on the developer's side; no agent
	// runs in this test: every request it sends matches no bridge's rule
	// and goes to the fallback.
	cpTunnelPort = 18080
	// cpDevelopers is the group the test binds the ClusterRole
	// gefyra-developer to for its impersonated developers.
	cpDevelopers = "gefyra-e2e-developers"
)

// TestControlPlane proves what the control plane does to real workloads on
// the real cluster, sharing one install of the add-on from deploy/: carrier
// swapped into the Pods of a StatefulSet, a DaemonSet, a bare Pod and a
// Deployment whose container has its own command and exec probes (kubelet
// restarts only that container, the Pod keeps its IP and sidecar and stays
// Ready through kubelet's HTTP, TCP and exec probes, and the bridge is
// Ready only once it is); the fallback clone answering through carrier;
// a Pod created later getting carrier too; the original image back when
// the bridge, the mount or the client goes, or the client's lease lapses;
// the control plane's Pods deleted while traffic flows through carriers,
// without a failed request or a lost bridge; and one developer unable to
// touch another's client or bridge.
func TestControlPlane(t *testing.T) {
	start := time.Now()
	ctrllog.SetLogger(logr.Discard()) // the impersonating clients' own logs
	w := testworld.Get(t)
	root := repoRoot(t)
	d := story.New(w, root)
	d.BuildAllImages(t)
	addon, err := story.NewAddon(w, root, d.Images)
	if err != nil {
		t.Fatal(err)
	}
	addon.LoadImages(t)
	w.LoadImages(t, cpServerImageTar(t))
	t.Logf("images built and loaded after %s", since(start))

	// The namespace first, so it goes last: after the add-on's removal
	// restored its Pods and deleted the clones.
	e := &cpEnv{w: w, addon: addon, ns: w.Namespace(t, "cp"), http: w.HTTPClient()}
	e.createWorkloads(t)
	addon.Install(t)
	addon.WaitReady(t)
	e.waitWorkloads(t)
	t.Logf("the add-on and the workloads are ready after %s", since(start))
	e.alice = addon.Register(t, "alice@gefyra.dev")

	t.Run("targets", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			kind gefyrav1.TargetKind
			pods string // the workload's name: its Pods carry label app=name
		}{
			{name: "StatefulSet", kind: gefyrav1.KindStatefulSet, pods: "sts"},
			{name: "DaemonSet", kind: gefyrav1.KindDaemonSet, pods: "ds"},
			{name: "bare Pod", kind: gefyrav1.KindPod, pods: "solo"},
		} {
			t.Run(tt.name+": carrier in, the fallback answers, restored when the bridge goes", func(t *testing.T) {
				t.Parallel()
				e.bridgeAndRestore(t, gefyrav1.Target{Kind: tt.kind, Name: tt.pods, Container: "app"})
			})
		}
		t.Run("a GefyraMount alone: restored when it goes; a lapsed lease: restored by itself", func(t *testing.T) {
			t.Parallel()
			e.mountAndLease(t)
		})
	})

	// The Deployment's bridge lives on through the steps below; it goes
	// with its client at the end.
	target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "cmd", Container: "app"}
	var mounted map[string]*corev1.Pod
	before := e.pods(t, target.Name, 1)
	addon.Bridge(t, e.ns, "cmd", e.spec(e.alice.Name, target))
	if !t.Run("Deployment whose container has its own command and exec probes", func(t *testing.T) {
		addon.WaitBridgeReady(t, e.ns, "cmd")
		mounted = e.checkSwapped(t, before)
		e.staysReady(t, mounted, 5*time.Second)
		e.expectFallback(t, mounted, target)
	}) {
		return
	}

	if !t.Run("a Pod created later gets carrier", func(t *testing.T) {
		e.scale(t, target.Name, 2)
		testworld.WaitFor(t, "the mount to carry both Pods, Ready", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
			m := addon.Mount(t, e.ns, target)
			if m == nil {
				return false, "", fmt.Errorf("the mount is gone")
			}
			c := meta.FindStatusCondition(m.Status.Conditions, gefyrav1.ConditionReady)
			return len(m.Status.Pods) == 2 && c != nil && c.Status == metav1.ConditionTrue, fmt.Sprintf("%d Pod(s); %s", len(m.Status.Pods), cpConditions(m.Status.Conditions)), nil
		})
		addon.WaitBridgeReady(t, e.ns, "cmd")
		now := e.pods(t, target.Name, 2)
		for name, p := range now {
			if _, old := mounted[name]; old {
				continue
			}
			app, _ := testworld.ContainerStatus(p, "app")
			if !strings.HasPrefix(app.Image, cpCarrierPrefix) || app.State.Running == nil || !app.Ready {
				t.Fatalf("new Pod %s: container app runs %s (running %t, ready %t) while its mount is Ready", name, app.Image, app.State.Running != nil, app.Ready)
			}
			if got := p.Annotations["original-image.gefyra.dev/app"]; got != cpServerImage {
				t.Errorf("new Pod %s: original image annotation %q, want %q", name, got, cpServerImage)
			}
			t.Logf("new Pod %s runs carrier in app, Ready (restarts %d)", name, app.RestartCount)
		}
		mounted = now
		e.staysReady(t, mounted, 3*time.Second)
		e.expectFallback(t, mounted, target)
	}) {
		return
	}

	t.Run("deleting the control plane's Pods loses no bridge, and carriers keep serving meanwhile", func(t *testing.T) {
		e.restartControlPlane(t, target, mounted)
		mounted = e.pods(t, target.Name, 2)
	})

	t.Run("one developer cannot read, change or delete another's client or bridge", func(t *testing.T) {
		e.access(t, "cmd")
	})

	t.Run("deleting the client restores every Pod", func(t *testing.T) {
		e.alice.Unregister(t) // deletes its bridges first
		e.waitRestored(t, mounted)
		e.waitMountGone(t, target)
	})
	t.Logf("TestControlPlane took %s (before its cleanups)", since(start))
}

// cpEnv is what TestControlPlane's steps share.
type cpEnv struct {
	w     *testworld.World
	addon *story.Addon
	ns    string
	http  *http.Client
	alice *story.Developer
}

// serverImage builds the test server's image, as TestWorld does.
func cpServerImageTar(t *testing.T) string {
	t.Helper()
	bin := testworld.GoBuild(t, "gefyra.dev/gefyra/world/testimages/server")
	return testworld.BuildImage(t, ociimage.Spec{
		Tag:        cpServerImage,
		Files:      []ociimage.File{{Src: bin, Dst: "/server"}},
		Entrypoint: []string{"/server"},
		Env:        []string{"VERSION=v1"},
	})
}

// podSpec is the Pod of workload name: container app (the one carrier
// replaces) and a sidecar, both the test server. Their probes are kubelet's
// three kinds. With ownCommand, app sets command (the carrier image must
// start /server) and its readiness and liveness probes are exec probes;
// otherwise it sets only args, with an exec startup probe, an HTTP
// readiness and a TCP liveness probe.
func cpPodSpec(name string, ownCommand bool) corev1.PodSpec {
	grace := int64(2)
	exec := func(cmd ...string) corev1.ProbeHandler {
		return corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: cmd}}
	}
	httpGet := corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(cpAppPort)}}
	tcp := func(port int32) corev1.ProbeHandler {
		return corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(port)}}
	}
	healthz := exec("/server", "probe", fmt.Sprintf("http://127.0.0.1:%d/healthz", cpAppPort))
	app := corev1.Container{
		Name:            "app",
		Image:           cpServerImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Env:             []corev1.EnvVar{{Name: "NAME", Value: name}, {Name: "LISTEN", Value: fmt.Sprintf(":%d", cpAppPort)}},
		Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: cpAppPort}},
	}
	if ownCommand {
		app.Command = []string{"/server", "serve"}
		app.StartupProbe = &corev1.Probe{ProbeHandler: tcp(cpAppPort), PeriodSeconds: 1, FailureThreshold: 30}
		app.ReadinessProbe = &corev1.Probe{ProbeHandler: healthz, PeriodSeconds: 1, FailureThreshold: 1}
		app.LivenessProbe = &corev1.Probe{ProbeHandler: healthz, PeriodSeconds: 2}
	} else {
		app.Args = []string{"serve"}
		app.StartupProbe = &corev1.Probe{ProbeHandler: healthz, PeriodSeconds: 1, FailureThreshold: 30}
		app.ReadinessProbe = &corev1.Probe{ProbeHandler: httpGet, PeriodSeconds: 1, FailureThreshold: 1}
		app.LivenessProbe = &corev1.Probe{ProbeHandler: tcp(cpAppPort), PeriodSeconds: 2}
	}
	sidecar := corev1.Container{
		Name:            "sidecar",
		Image:           cpServerImage,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args:            []string{"serve"},
		Env:             []corev1.EnvVar{{Name: "NAME", Value: "sidecar"}, {Name: "LISTEN", Value: ":8081"}},
		Ports:           []corev1.ContainerPort{{Name: "sidecar", ContainerPort: 8081}},
		ReadinessProbe:  &corev1.Probe{ProbeHandler: tcp(8081), PeriodSeconds: 1},
		LivenessProbe:   &corev1.Probe{ProbeHandler: exec("/server", "probe", "tcp://127.0.0.1:8081"), PeriodSeconds: 2},
	}
	return corev1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{app, sidecar}}
}

// createWorkloads creates the targets: StatefulSet sts (with its headless
// Service), DaemonSet ds, bare Pod solo, Deployment cmd (its container has
// its own command; with a Service for the traffic), and Deployment leased.
func (e *cpEnv) createWorkloads(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	one := int32(1)
	tmpl := func(name string, ownCommand bool) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}}, Spec: cpPodSpec(name, ownCommand)}
	}
	sel := func(name string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}
	}
	om := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: e.ns, Name: name} }
	k := e.addon.Kube()
	objs := []client.Object{
		&corev1.Service{ObjectMeta: om("sts"), Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "sts"},
			Ports: []corev1.ServicePort{{Name: "http", Port: cpAppPort}}}},
		&appsv1.StatefulSet{ObjectMeta: om("sts"), Spec: appsv1.StatefulSetSpec{ServiceName: "sts", Replicas: &one, Selector: sel("sts"), Template: tmpl("sts", false)}},
		&appsv1.DaemonSet{ObjectMeta: om("ds"), Spec: appsv1.DaemonSetSpec{Selector: sel("ds"), Template: tmpl("ds", false)}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "solo", Labels: map[string]string{"app": "solo"}}, Spec: cpPodSpec("solo", false)},
		&appsv1.Deployment{ObjectMeta: om("cmd"), Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: sel("cmd"), Template: tmpl("cmd", true)}},
		&corev1.Service{ObjectMeta: om("cmd"), Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "cmd"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(cpAppPort)}}}},
		&appsv1.Deployment{ObjectMeta: om("leased"), Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: sel("leased"), Template: tmpl("leased", false)}},
	}
	for _, o := range objs {
		if err := k.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// waitWorkloads waits until every workload has its Pods Ready.
func (e *cpEnv) waitWorkloads(t *testing.T) {
	t.Helper()
	for _, name := range []string{"sts", "ds", "solo", "cmd", "leased"} {
		e.pods(t, name, 1)
	}
}

// pods waits until workload name has n Pods, all Ready, and returns them
// by name. The fallback clones' Pods never carry the label app.
func (e *cpEnv) pods(t *testing.T, name string, n int) map[string]*corev1.Pod {
	t.Helper()
	var out map[string]*corev1.Pod
	testworld.WaitFor(t, fmt.Sprintf("%d Ready Pod(s) of %s", n, name), 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		list, err := e.w.Client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err.Error(), nil
		}
		out = map[string]*corev1.Pod{}
		var status []string
		ready := 0
		for i := range list.Items {
			p := &list.Items[i]
			if p.DeletionTimestamp != nil {
				continue
			}
			out[p.Name] = p
			status = append(status, p.Name+": "+testworld.PodStatus(p))
			if testworld.PodReady(p) {
				ready++
			}
		}
		return len(out) == n && ready == n, strings.Join(status, "; "), nil
	})
	return out
}

// spec is a bridge of target's app port for client, taking only requests
// that name alice in a header: everything this test sends goes to the
// fallback.
func (e *cpEnv) spec(client string, target gefyrav1.Target) gefyrav1.GefyraBridgeSpec {
	return gefyrav1.GefyraBridgeSpec{
		Client: client,
		Target: target,
		Ports:  []gefyrav1.PortMapping{{Remote: cpAppPort, Local: cpTunnelPort}},
		Rules:  []gefyrav1.Rule{userRule("alice")},
	}
}

// bridgeAndRestore bridges target, checks the swap, the Pods' readiness and
// the fallback, deletes the bridge and checks that everything is restored.
func (e *cpEnv) bridgeAndRestore(t *testing.T, target gefyrav1.Target) {
	before := e.pods(t, target.Name, 1)
	name := "b-" + target.Name
	e.addon.Bridge(t, e.ns, name, e.spec(e.alice.Name, target))
	e.addon.WaitBridgeReady(t, e.ns, name)
	mounted := e.checkSwapped(t, before)
	e.staysReady(t, mounted, 5*time.Second)
	e.expectFallback(t, mounted, target)
	e.addon.DeleteBridge(t, e.ns, name)
	e.waitRestored(t, mounted)
	e.waitMountGone(t, target)
}

// checkSwapped reads the Pods of before again the moment their mount is
// Ready: each must run carrier in app, running and ready per kubelet,
// after exactly one restart of app, with its UID, IP and sidecar as
// before. It returns them.
func (e *cpEnv) checkSwapped(t *testing.T, before map[string]*corev1.Pod) map[string]*corev1.Pod {
	t.Helper()
	out := map[string]*corev1.Pod{}
	for name, b := range before {
		p := e.pod(t, name)
		out[name] = p
		app, _ := testworld.ContainerStatus(p, "app")
		app0, _ := testworld.ContainerStatus(b, "app")
		side, _ := testworld.ContainerStatus(p, "sidecar")
		side0, _ := testworld.ContainerStatus(b, "sidecar")
		if !strings.HasPrefix(app.Image, cpCarrierPrefix) || app.State.Running == nil || !app.Ready {
			t.Errorf("Pod %s: the bridge is Ready, but container app runs %s (running %t, ready %t); want carrier, running and ready",
				name, app.Image, app.State.Running != nil, app.Ready)
		}
		if app.RestartCount != app0.RestartCount+1 {
			t.Errorf("Pod %s: app restarted %d times, was %d: want exactly one restart for the swap", name, app.RestartCount, app0.RestartCount)
		}
		if side.ContainerID != side0.ContainerID || side.RestartCount != side0.RestartCount {
			t.Errorf("Pod %s: the sidecar changed (container %s -> %s, restarts %d -> %d): only app may restart",
				name, side0.ContainerID, side.ContainerID, side0.RestartCount, side.RestartCount)
		}
		if p.UID != b.UID || p.Status.PodIP != b.Status.PodIP {
			t.Errorf("Pod %s: now %s at %s, was %s at %s: the Pod must stay", name, p.UID, p.Status.PodIP, b.UID, b.Status.PodIP)
		}
		if got := p.Annotations["original-image.gefyra.dev/app"]; got != cpServerImage {
			t.Errorf("Pod %s: original image annotation %q, want %q", name, got, cpServerImage)
		}
		t.Logf("Pod %s runs carrier in app (restarts %d -> %d), sidecar untouched, IP %s", name, app0.RestartCount, app.RestartCount, p.Status.PodIP)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// staysReady watches the Pods for d: kubelet's probes keep passing with
// carrier (the Pods stay Ready, nothing restarts).
func (e *cpEnv) staysReady(t *testing.T, pods map[string]*corev1.Pod, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		for name, was := range pods {
			p := e.pod(t, name)
			for _, c := range []string{"app", "sidecar"} {
				if restarts(p, c) != restarts(was, c) {
					t.Fatalf("Pod %s: %s restarted (%d -> %d) while carrier ran: %s", name, c, restarts(was, c), restarts(p, c), testworld.PodStatus(p))
				}
			}
			if !testworld.PodReady(p) {
				t.Fatalf("Pod %s is not Ready with carrier: %s", name, testworld.PodStatus(p))
			}
		}
	}
}

// expectFallback asks each Pod's app port: carrier hands the request to
// the fallback clone, which runs the original image (the test server
// names the clone's Pod as its host).
func (e *cpEnv) expectFallback(t *testing.T, pods map[string]*corev1.Pod, target gefyrav1.Target) {
	t.Helper()
	clone := target.Name + "-gefyra-fallback-" + target.Container
	for name, p := range pods {
		addr := net.JoinHostPort(p.Status.PodIP, fmt.Sprint(cpAppPort))
		var got cpInfo
		// The fallback's endpoints reach carrier with the next model,
		// up to the control plane's max-delay after the mount's status.
		testworld.WaitFor(t, "the fallback to answer through carrier in Pod "+name, 10*time.Second, func(ctx context.Context) (bool, string, error) {
			var err error
			if got, err = cpGetInfo(ctx, e.http, addr); err != nil {
				return false, err.Error(), nil
			}
			if got.Name != target.Name || !strings.HasPrefix(got.Hostname, clone) {
				return false, "", fmt.Errorf("answered %+v; want the fallback clone %s* of %s", got, clone, target.Name)
			}
			return true, "", nil
		})
		t.Logf("Pod %s: carrier answered from the fallback %s", name, got.Hostname)
	}
}

// cpInfo is what the test server answers on /.
type cpInfo struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Hostname string `json:"hostname"`
}

func cpGetInfo(ctx context.Context, c *http.Client, addr string) (cpInfo, error) {
	var in cpInfo
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return in, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return in, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return in, fmt.Errorf("GET %s: %s", addr, resp.Status)
	}
	return in, json.NewDecoder(resp.Body).Decode(&in)
}

// waitRestored waits until each Pod runs its original image in app again,
// ready, after one more restart of app only, without gefyra's marks.
func (e *cpEnv) waitRestored(t *testing.T, mounted map[string]*corev1.Pod) {
	t.Helper()
	for name, was := range mounted {
		app0, _ := testworld.ContainerStatus(was, "app")
		side0, _ := testworld.ContainerStatus(was, "sidecar")
		p := e.w.WaitPodCondition(t, e.ns, name, "running its original image again", 2*time.Minute, func(p *corev1.Pod) bool {
			app, _ := testworld.ContainerStatus(p, "app")
			_, annotated := p.Annotations["original-image.gefyra.dev/app"]
			return !annotated && app.Image == cpServerImage && app.State.Running != nil && app.Ready && testworld.PodReady(p)
		})
		app, _ := testworld.ContainerStatus(p, "app")
		side, _ := testworld.ContainerStatus(p, "sidecar")
		if app.RestartCount != app0.RestartCount+1 {
			t.Errorf("Pod %s: app restarts %d -> %d; want one restart for the restore", name, app0.RestartCount, app.RestartCount)
		}
		if side.ContainerID != side0.ContainerID || side.RestartCount != side0.RestartCount {
			t.Errorf("Pod %s: the sidecar changed while restoring (container %s -> %s)", name, side0.ContainerID, side.ContainerID)
		}
		if p.UID != was.UID || p.Status.PodIP != was.Status.PodIP {
			t.Errorf("Pod %s: now %s at %s, was %s at %s", name, p.UID, p.Status.PodIP, was.UID, was.Status.PodIP)
		}
		for k := range p.Labels {
			if strings.Contains(k, "gefyra.dev/") {
				t.Errorf("Pod %s: label %s left behind", name, k)
			}
		}
		for k := range p.Annotations {
			if strings.Contains(k, "gefyra.dev/") {
				t.Errorf("Pod %s: annotation %s left behind", name, k)
			}
		}
	}
}

// waitMountGone waits until target's mount and fallback clone are gone.
func (e *cpEnv) waitMountGone(t *testing.T, target gefyrav1.Target) {
	t.Helper()
	clone := target.Name + "-gefyra-fallback-" + target.Container
	testworld.WaitFor(t, "no mount and no fallback clone of "+target.Name, time.Minute, func(ctx context.Context) (bool, string, error) {
		if m := e.addon.Mount(t, e.ns, target); m != nil {
			return false, "GefyraMount " + m.Name + " is still there", nil
		}
		var o client.Object
		switch target.Kind {
		case gefyrav1.KindDeployment:
			o = &appsv1.Deployment{}
		case gefyrav1.KindStatefulSet:
			o = &appsv1.StatefulSet{}
		case gefyrav1.KindDaemonSet:
			o = &appsv1.DaemonSet{}
		default:
			o = &corev1.Pod{}
		}
		err := e.addon.Kube().Get(ctx, client.ObjectKey{Namespace: e.ns, Name: clone}, o)
		if !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("the clone %s: %v", clone, err), nil
		}
		return true, "", nil
	})
}

func (e *cpEnv) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.w.Client.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mountAndLease: a GefyraMount made by hand swaps carrier in and is Ready
// only once carrier runs; deleting it restores the workload. Then a client
// whose lease lapses (no heartbeat) loses its bridge, and the workload is
// restored without anyone deleting anything.
func (e *cpEnv) mountAndLease(t *testing.T) {
	ctx := context.Background()
	k := e.addon.Kube()
	target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "leased", Container: "app"}
	before := e.pods(t, target.Name, 1)

	m := &gefyrav1.GefyraMount{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: gefyrav1.MountName(target)}, Spec: gefyrav1.GefyraMountSpec{Target: target}}
	if err := k.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Delete(context.Background(), m) })
	testworld.WaitFor(t, "GefyraMount "+m.Name+" Ready", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		if err := k.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
			return false, err.Error(), nil
		}
		c := meta.FindStatusCondition(m.Status.Conditions, gefyrav1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionTrue, cpConditions(m.Status.Conditions), nil
	})
	mounted := e.checkSwapped(t, before)
	e.expectFallback(t, mounted, target)
	if err := k.Delete(ctx, m); err != nil {
		t.Fatal(err)
	}
	e.waitRestored(t, mounted)
	e.waitMountGone(t, target)

	// A client that never renews its lease.
	const lease = 30 * time.Second
	key, err := wgnet.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	user := "carol@gefyra.dev"
	name, err := bridge.ClientName(user)
	if err != nil {
		t.Fatal(err)
	}
	c := &gefyrav1.GefyraClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: story.AddonNamespace, Name: name},
		Spec:       gefyrav1.GefyraClientSpec{User: user, PublicKey: key.PublicKey().String(), LeaseDuration: &metav1.Duration{Duration: lease}},
	}
	if err := k.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Delete(context.Background(), c) })
	testworld.WaitFor(t, "GefyraClient "+name+" to get a tunnel address", time.Minute, func(ctx context.Context) (bool, string, error) {
		if err := k.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
			return false, err.Error(), nil
		}
		return c.Status.Address != "", cpConditions(c.Status.Conditions), nil
	})
	before = e.pods(t, target.Name, 1)
	e.addon.Bridge(t, e.ns, "lapsing", e.spec(name, target))
	for pod := range before {
		e.w.WaitPodCondition(t, e.ns, pod, "running carrier", time.Minute, func(p *corev1.Pod) bool {
			app, _ := testworld.ContainerStatus(p, "app")
			return strings.HasPrefix(app.Image, cpCarrierPrefix) && app.State.Running != nil
		})
	}
	if took := time.Since(c.CreationTimestamp.Time); took >= lease {
		t.Fatalf("carrier ran only %s after the client's creation, after its lease of %s: the lease's effect cannot be told apart", took, lease)
	}
	t.Logf("carrier runs %s after the client's creation; its lease of %s lapses without a heartbeat", since(c.CreationTimestamp.Time), lease)
	mounted = map[string]*corev1.Pod{}
	for pod := range before {
		mounted[pod] = e.pod(t, pod)
	}
	testworld.WaitFor(t, "the lapsed client's bridge to go", lease+time.Minute, func(ctx context.Context) (bool, string, error) {
		err := k.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "lapsing"}, &gefyrav1.GefyraBridge{})
		return apierrors.IsNotFound(err), fmt.Sprintf("%v", err), nil
	})
	// The lease runs from the client's creationTimestamp (whole seconds).
	if end := c.CreationTimestamp.Add(lease); time.Now().Before(end) {
		t.Fatalf("the bridge went before the client's lease of %s lapsed at %s", lease, end.Format(time.TimeOnly))
	}
	e.waitRestored(t, mounted)
	e.waitMountGone(t, target)
	if err := k.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
		t.Fatal(err)
	}
	if cond := meta.FindStatusCondition(c.Status.Conditions, gefyrav1.ConditionLeaseValid); cond == nil || cond.Reason != "LeaseExpired" {
		t.Errorf("the client's LeaseValid condition: %+v, want reason LeaseExpired", cond)
	}
}

// scale sets the replicas of Deployment name.
func (e *cpEnv) scale(t *testing.T, name string, n int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name}}
	if err := e.addon.Kube().Patch(ctx, d, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		t.Fatalf("scaling %s to %d: %v", name, n, err)
	}
	t.Logf("Deployment %s scaled to %d", name, n)
}

// cpTraffic sends GET / to addr in a loop until stopped, counting answers
// from the fallback and anything else.
type cpTraffic struct {
	mu     sync.Mutex // guards the fields below
	ok     int
	failed []string

	stop context.CancelFunc
	done chan struct{}
}

func cpStartTraffic(c *http.Client, addr, wantHost string) *cpTraffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &cpTraffic{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		for ctx.Err() == nil {
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			begin := time.Now()
			got, err := cpGetInfo(rctx, c, addr)
			rcancel()
			if ctx.Err() != nil {
				return
			}
			tr.mu.Lock()
			switch {
			case err != nil:
				tr.failed = append(tr.failed, fmt.Sprintf("%s: %v", begin.Format("15:04:05.000"), err))
			case !strings.HasPrefix(got.Hostname, wantHost):
				tr.failed = append(tr.failed, fmt.Sprintf("%s: answered by %s, not the fallback", begin.Format("15:04:05.000"), got.Hostname))
			default:
				tr.ok++
			}
			tr.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return tr
}

func (tr *cpTraffic) counts() (int, []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ok, slices.Clone(tr.failed)
}

func (tr *cpTraffic) end() (int, []string) {
	tr.stop()
	<-tr.done
	return tr.counts()
}

// restartControlPlane deletes both control plane Pods (the leader among
// them) while requests flow through the Service to the carriers and on to
// the fallback: none may fail, and afterwards the bridge is the same
// object, Ready, and the Pods still run carrier without a restart.
func (e *cpEnv) restartControlPlane(t *testing.T, target gefyrav1.Target, mounted map[string]*corev1.Pod) {
	ctx := context.Background()
	k := e.addon.Kube()
	br := &gefyrav1.GefyraBridge{}
	if err := k.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "cmd"}, br); err != nil {
		t.Fatal(err)
	}
	selector := "app.kubernetes.io/name=" + story.ControlPlaneDeployment
	old, err := e.w.Client.CoreV1().Pods(story.AddonNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	if len(old.Items) != 2 {
		t.Fatalf("%d control plane Pods, want 2", len(old.Items))
	}

	tr := cpStartTraffic(e.http, e.w.ServiceAddr(t, e.ns, target.Name, 80), target.Name+"-gefyra-fallback-"+target.Container)
	defer tr.end()
	testworld.WaitFor(t, "traffic through the carriers", 30*time.Second, func(context.Context) (bool, string, error) {
		ok, failed := tr.counts()
		if len(failed) > 0 {
			return false, "", fmt.Errorf("a request failed before the control plane went: %s", failed[0])
		}
		return ok >= 10, fmt.Sprintf("%d answered", ok), nil
	})
	deleted := time.Now()
	for _, p := range old.Items {
		if err := e.w.Client.CoreV1().Pods(story.AddonNamespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting control plane Pod %s: %v", p.Name, err)
		}
		t.Logf("deleted control plane Pod %s", p.Name)
	}
	testworld.WaitFor(t, "the old control plane Pods to go and two new ones to be Ready", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		list, err := e.w.Client.CoreV1().Pods(story.AddonNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error(), nil
		}
		var status []string
		ready := 0
		for _, p := range list.Items {
			if slices.ContainsFunc(old.Items, func(o corev1.Pod) bool { return o.Name == p.Name }) {
				status = append(status, p.Name+" (old): "+testworld.PodStatus(&p))
				continue
			}
			status = append(status, p.Name+": "+testworld.PodStatus(&p))
			if testworld.PodReady(&p) {
				ready++
			}
		}
		return len(list.Items) == 2 && ready == 2, strings.Join(status, "; "), nil
	})
	t.Logf("a new control plane is Ready %s after the deletion", since(deleted))
	testworld.WaitFor(t, "a new leader", time.Minute, func(ctx context.Context) (bool, string, error) {
		l, err := e.w.Client.CoordinationV1().Leases(story.AddonNamespace).Get(ctx, story.ControlPlaneDeployment, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		for _, p := range old.Items {
			if strings.HasPrefix(holder, p.Name) {
				return false, "held by " + holder, nil
			}
		}
		return holder != "", "held by " + holder, nil
	})
	// Each carrier connects to the new replicas and acknowledges the bridge
	// again: they share what their nodes acknowledged in Leases
	// gefyra-xds-<replica> (controlplane/internal/xds), from which the new
	// leader decides the bridge's DataPlaneReady.
	testworld.WaitFor(t, "the carriers to acknowledge the bridge to the new control plane", time.Minute, func(ctx context.Context) (bool, string, error) {
		acked := map[string]bool{}
		for _, p := range cpNewPods(ctx, e, selector, old.Items) {
			l, err := e.w.Client.CoordinationV1().Leases(story.AddonNamespace).Get(ctx, "gefyra-xds-"+p, metav1.GetOptions{})
			if err != nil {
				continue
			}
			var nodes map[string]struct {
				Bridges   map[string]string `json:"bridges"`
				Connected bool              `json:"connected"`
			}
			if err := json.Unmarshal([]byte(l.Annotations["gefyra.dev/xds-nodes"]), &nodes); err != nil {
				return false, err.Error(), nil
			}
			for id, n := range nodes {
				if _, ok := n.Bridges[e.ns+"/cmd"]; ok && n.Connected {
					acked[id] = true
				}
			}
		}
		var missing []string
		for name := range mounted {
			if !acked[e.ns+"/"+name] {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0, "waiting for carrier in " + strings.Join(missing, ", "), nil
	})
	ready := e.addon.WaitBridgeReady(t, e.ns, "cmd")
	dp := meta.FindStatusCondition(ready.Status.Conditions, gefyrav1.ConditionDataPlaneReady)
	t.Logf("the bridge is Ready %s after the deletion; DataPlaneReady %s since %s: %s", since(deleted), dp.Status, dp.LastTransitionTime.Format(time.TimeOnly), dp.Message)
	// Some more traffic against the new control plane's configuration.
	ok0, _ := tr.counts()
	testworld.WaitFor(t, "more traffic", 30*time.Second, func(context.Context) (bool, string, error) {
		ok, _ := tr.counts()
		return ok >= ok0+10, fmt.Sprintf("%d answered", ok), nil
	})
	ok, failed := tr.end()
	t.Logf("%d requests answered by the fallback through carrier, %d failed", ok, len(failed))
	for _, f := range failed {
		t.Errorf("request failed: %s", f)
	}
	if ready.UID != br.UID {
		t.Errorf("the bridge is a new object (%s, was %s): it was lost", ready.UID, br.UID)
	}
	for name, was := range mounted {
		p := e.pod(t, name)
		app, _ := testworld.ContainerStatus(p, "app")
		if !strings.HasPrefix(app.Image, cpCarrierPrefix) || !app.Ready || restarts(p, "app") != restarts(was, "app") {
			t.Errorf("Pod %s: app runs %s (ready %t, restarts %d -> %d); want carrier, untouched by the control plane's restart",
				name, app.Image, app.Ready, restarts(was, "app"), restarts(p, "app"))
		}
	}
}

// newPods names the Pods of selector in the add-on's namespace that are
// not among old.
func cpNewPods(ctx context.Context, e *cpEnv, selector string, old []corev1.Pod) []string {
	list, err := e.w.Client.CoreV1().Pods(story.AddonNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range list.Items {
		if !slices.ContainsFunc(old, func(o corev1.Pod) bool { return o.Name == p.Name }) {
			out = append(out, p.Name)
		}
	}
	return out
}

// access checks, as impersonated users of the ClusterRole gefyra-developer
// (deploy/rbac), that bob can neither read nor change nor delete alice's
// client or her bridge, while alice reads her own client.
func (e *cpEnv) access(t *testing.T, bridgeName string) {
	ctx := context.Background()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: cpDevelopers},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "gefyra-developer"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: cpDevelopers}},
	}
	if _, err := e.w.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.w.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	bob := e.addon.Register(t, "bob@gefyra.dev")
	asAlice, asBob := e.as(t, e.alice.User), e.as(t, bob.User)

	// The controls: each reads their own client.
	testworld.WaitFor(t, "alice and bob to read their own clients", time.Minute, func(ctx context.Context) (bool, string, error) {
		if err := asAlice.Get(ctx, client.ObjectKey{Namespace: story.AddonNamespace, Name: e.alice.Name}, &gefyrav1.GefyraClient{}); err != nil {
			return false, "alice: " + err.Error(), nil
		}
		if err := asBob.Get(ctx, client.ObjectKey{Namespace: story.AddonNamespace, Name: bob.Name}, &gefyrav1.GefyraClient{}); err != nil {
			return false, "bob: " + err.Error(), nil
		}
		return true, "", nil
	})

	k := e.addon.Kube()
	aliceClient := &gefyrav1.GefyraClient{}
	if err := k.Get(ctx, client.ObjectKey{Namespace: story.AddonNamespace, Name: e.alice.Name}, aliceClient); err != nil {
		t.Fatal(err)
	}
	aliceBridge := &gefyrav1.GefyraBridge{}
	if err := k.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: bridgeName}, aliceBridge); err != nil {
		t.Fatal(err)
	}
	changedClient := aliceClient.DeepCopy()
	changedClient.Spec.PublicKey = bob.Key.PublicKey().String()
	heartbeat := aliceClient.DeepCopy()
	heartbeat.Status.LastHeartbeat = &metav1.Time{Time: time.Now()}
	changedBridge := aliceBridge.DeepCopy()
	changedBridge.Spec.Rules = []gefyrav1.Rule{userRule("bob")}
	stolen := &gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "bobs-trick"}, Spec: e.spec(e.alice.Name,
		gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "cmd", Container: "app"})}
	tests := []struct {
		name string
		do   func() error
	}{
		{name: "read alice's client", do: func() error {
			return asBob.Get(ctx, client.ObjectKeyFromObject(aliceClient), &gefyrav1.GefyraClient{})
		}},
		{name: "list the clients", do: func() error {
			return asBob.List(ctx, &gefyrav1.GefyraClientList{}, client.InNamespace(story.AddonNamespace))
		}},
		{name: "change alice's key", do: func() error { return asBob.Update(ctx, changedClient.DeepCopy()) }},
		{name: "renew alice's heartbeat", do: func() error { return asBob.Status().Patch(ctx, heartbeat.DeepCopy(), client.MergeFrom(aliceClient)) }},
		{name: "delete alice's client", do: func() error { return asBob.Delete(ctx, aliceClient.DeepCopy()) }},
		{name: "read alice's bridge", do: func() error {
			return asBob.Get(ctx, client.ObjectKeyFromObject(aliceBridge), &gefyrav1.GefyraBridge{})
		}},
		{name: "list the bridges", do: func() error { return asBob.List(ctx, &gefyrav1.GefyraBridgeList{}, client.InNamespace(e.ns)) }},
		{name: "change alice's bridge", do: func() error { return asBob.Update(ctx, changedBridge.DeepCopy()) }},
		{name: "delete alice's bridge", do: func() error { return asBob.Delete(ctx, aliceBridge.DeepCopy()) }},
		{name: "bridge to alice's client", do: func() error { return asBob.Create(ctx, stolen.DeepCopy()) }},
	}
	for _, tt := range tests {
		t.Run("bob cannot "+tt.name, func(t *testing.T) {
			err := tt.do()
			if err == nil {
				t.Fatalf("allowed")
			}
			if !apierrors.IsForbidden(err) {
				t.Fatalf("%v, want forbidden", err)
			}
			t.Logf("refused: %v", err)
		})
	}
	// Nothing of alice's changed.
	got := &gefyrav1.GefyraClient{}
	if err := k.Get(ctx, client.ObjectKeyFromObject(aliceClient), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.PublicKey != aliceClient.Spec.PublicKey || got.DeletionTimestamp != nil {
		t.Errorf("alice's client changed: key %s, deleting %v", got.Spec.PublicKey, got.DeletionTimestamp)
	}
	b := e.addon.WaitBridgeReady(t, e.ns, bridgeName)
	if b.DeletionTimestamp != nil || b.Spec.Rules[0].Headers[0].Value != "alice" {
		t.Errorf("alice's bridge changed: %+v", b.Spec.Rules)
	}
	if err := k.Get(ctx, client.ObjectKeyFromObject(stolen), &gefyrav1.GefyraBridge{}); !apierrors.IsNotFound(err) {
		t.Errorf("bob's bridge to alice's client: %v, want it never created", err)
	}
}

// as is a client that impersonates user, a member of the developers' group.
func (e *cpEnv) as(t *testing.T, user string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(e.w.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{cpDevelopers, "system:authenticated"}}
	c, err := client.New(cfg, client.Options{Scheme: e.addon.Kube().Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// conditions is "Type=Status(Reason: message)" of each condition.
func cpConditions(conds []metav1.Condition) string {
	if len(conds) == 0 {
		return "no conditions yet"
	}
	parts := make([]string, 0, len(conds))
	for _, c := range conds {
		parts = append(parts, fmt.Sprintf("%s=%s(%s: %s)", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(parts, " ")
}

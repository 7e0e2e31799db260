package operator_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/bridge"
)

// TestBridgeMountsDeploymentAndRestores follows a bridge's life on a
// Deployment: its mount patches every Pod (and one that appears later),
// keeps the originals, clones the workload for the fallback, shows up in
// the published model, and deleting the bridge puts everything back.
func TestBridgeMountsDeploymentAndRestores(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	newClient(t, "dev-mount")
	d := newDeployment(t, ns, "demo")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "demo"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "demo", "tier": "backend"},
			Ports: []corev1.ServicePort{{Port: 8080}}}}
	if err := k8s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	podLabels := d.Spec.Template.Labels
	newPod(t, ns, "demo-1", podLabels, "demo/app:1.0", "10.244.0.11")
	newPod(t, ns, "demo-2", podLabels, "demo/app:1.0", "10.244.0.12")
	other := newPod(t, ns, "unrelated", map[string]string{"app": "other"}, "demo/app:1.0", "10.244.0.13")

	target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "demo", Container: "app"}
	newBridge(t, ns, "mine", "dev-mount", target, 8155)
	mountName := gefyrav1.MountName(target)

	for _, p := range []string{"demo-1", "demo-2"} {
		eventually(t, 20*time.Second, "carrier in "+p, func() error { return mountedBy(ns, p, "app", mountName, "demo/app:1.0") })
		if got := image(getPod(t, ns, p), "oauth2-proxy"); got != "oauth2-proxy:v7" {
			t.Fatalf("the sidecar's image changed to %s", got)
		}
	}
	if got := image(getPod(t, ns, other.Name), "app"); got != "demo/app:1.0" {
		t.Fatalf("a Pod outside the workload was patched: %s", got)
	}

	// A Pod that appears later (a restart, a scale-up) gets carrier too.
	newPod(t, ns, "demo-3", podLabels, "demo/app:1.0", "10.244.0.14")
	eventually(t, 20*time.Second, "carrier in the new Pod", func() error { return mountedBy(ns, "demo-3", "app", mountName, "demo/app:1.0") })

	// The fallback clone: original image, selected by neither the workload
	// nor the Service, other labels kept.
	clone := &appsv1.Deployment{}
	eventually(t, 20*time.Second, "fallback clone", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "demo-gefyra-fallback-app"}, clone)
	})
	m, err := getMount(ns, mountName)
	if err != nil {
		t.Fatal(err)
	}
	if m.Annotations["gefyra.dev/managed-by"] != "gefyrabridge" {
		t.Fatalf("mount not marked as made for bridges: %v", m.Annotations)
	}
	tl := clone.Spec.Template.Labels
	if _, ok := tl["app"]; ok {
		t.Errorf("clone Pods keep label app (selected by the workload and the Service): %v", tl)
	}
	if _, ok := tl["tier"]; ok {
		t.Errorf("clone Pods keep label tier (selected by the Service): %v", tl)
	}
	if tl["team"] != "blue" || tl["gefyra.dev/fallback"] != string(m.UID) {
		t.Errorf("clone Pod labels %v; want team=blue and gefyra.dev/fallback=%s", tl, m.UID)
	}
	if got := clone.Spec.Selector.MatchLabels; len(got) != 1 || got["gefyra.dev/fallback"] != string(m.UID) {
		t.Errorf("clone selector %v", got)
	}
	for _, c := range clone.Spec.Template.Spec.Containers {
		if c.Image == carrierImage {
			t.Errorf("clone runs carrier in %s", c.Name)
		}
	}
	if *clone.Spec.Replicas != 1 {
		t.Errorf("clone replicas %d", *clone.Spec.Replicas)
	}

	// Until the clone has a ready Pod, the mount waits for it.
	eventually(t, 20*time.Second, "mount waits for the fallback", func() error {
		m, err := getMount(ns, mountName)
		if err != nil {
			return err
		}
		if c := condition(m.Status.Conditions, gefyrav1.ConditionReady); c == nil || c.Reason != "FallbackPending" {
			return fmt.Errorf("ready condition %+v", c)
		}
		return nil
	})
	// Standing in for the ReplicaSet controller and kubelet: the clone's Pod.
	newPod(t, ns, "demo-gefyra-fallback-app-x1", tl, "demo/app:1.0", "10.244.0.20")
	// And for kubelet in the mounted Pods: carrier runs there, ready.
	for _, p := range []string{"demo-1", "demo-2", "demo-3"} {
		carrierStarted(t, ns, p, "app")
	}
	eventually(t, 20*time.Second, "mount ready", func() error {
		m, err := getMount(ns, mountName)
		if err != nil {
			return err
		}
		if c := condition(m.Status.Conditions, gefyrav1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ready condition %+v", c)
		}
		if len(m.Status.Pods) != 3 {
			return fmt.Errorf("status lists %d pods", len(m.Status.Pods))
		}
		if m.Status.Fallback == nil || !slices.Equal(m.Status.Fallback.Endpoints, []string{"10.244.0.20"}) {
			return fmt.Errorf("fallback %+v", m.Status.Fallback)
		}
		return nil
	})
	// The clone's Pod was not patched: it is nobody's target.
	if got := image(getPod(t, ns, "demo-gefyra-fallback-app-x1"), "app"); got != "demo/app:1.0" {
		t.Fatalf("the clone's Pod was patched: %s", got)
	}

	eventually(t, 20*time.Second, "bridge accepted and mounted, waiting for the data plane", func() error {
		b, err := getBridge(ns, "mine")
		if err != nil {
			return err
		}
		for typ, want := range map[string]metav1.ConditionStatus{
			gefyrav1.ConditionAccepted: metav1.ConditionTrue, gefyrav1.ConditionMountReady: metav1.ConditionTrue,
			gefyrav1.ConditionDataPlaneReady: metav1.ConditionUnknown, gefyrav1.ConditionReady: metav1.ConditionUnknown,
		} {
			if c := condition(b.Status.Conditions, typ); c == nil || c.Status != want {
				return fmt.Errorf("%s = %+v, want %s", typ, c, want)
			}
		}
		if b.Status.Mount != mountName || b.Status.ClientAddress == "" {
			return fmt.Errorf("status %+v", b.Status)
		}
		return nil
	})

	// The model handed to the publisher.
	eventually(t, 20*time.Second, "model published", func() error {
		m := published.latest()
		if m == nil {
			return fmt.Errorf("nothing published")
		}
		var br *struct{}
		_ = br
		for _, b := range m.Bridges {
			if b.Namespace != ns || b.Name != "mine" {
				continue
			}
			if b.Mount != mountName || b.Client != "dev-mount" || !b.ClientAddress.IsValid() {
				return fmt.Errorf("bridge in model: %+v", b)
			}
			if len(b.Ports) != 1 || b.Ports[0] != (bridge.PortMapping{Remote: 8155, Local: 8155}) {
				return fmt.Errorf("ports %v", b.Ports)
			}
			if len(b.Rules) != 1 || b.Rules[0].Path == nil || b.Rules[0].Path.Type != bridge.Prefix || b.Rules[0].Headers[0].Type != bridge.Exact {
				return fmt.Errorf("rules %+v", b.Rules)
			}
			for _, mt := range m.Mounts {
				if mt.Namespace == ns && mt.Name == mountName {
					if len(mt.Pods) != 3 || len(mt.Fallback) != 1 || len(mt.Ports) != 1 || mt.Ports[0].Port != 8155 {
						return fmt.Errorf("mount in model: %+v", mt)
					}
					if mt.Pods[0].Name != "demo-1" || mt.Pods[0].IP.String() != "10.244.0.11" {
						return fmt.Errorf("pods not sorted or without IP: %+v", mt.Pods)
					}
					return nil
				}
			}
			return fmt.Errorf("mount %s not in the model", mountName)
		}
		return fmt.Errorf("bridge not in the model")
	})

	// A second bridge shares the mount; deleting the first keeps it.
	newClient(t, "dev-mount-2")
	newBridge(t, ns, "theirs", "dev-mount-2", target, 8155)
	eventually(t, 20*time.Second, "second bridge accepted", func() error {
		b, err := getBridge(ns, "theirs")
		if err != nil {
			return err
		}
		if c := condition(b.Status.Conditions, gefyrav1.ConditionMountReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("mount ready %+v", c)
		}
		return nil
	})
	if err := k8s.Delete(ctx, &gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mine"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "first bridge gone", func() error {
		if _, err := getBridge(ns, "mine"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	if err := mountedBy(ns, "demo-1", "app", mountName, "demo/app:1.0"); err != nil {
		t.Fatalf("the other bridge's mount was restored: %v", err)
	}

	// Deleting the last bridge restores the workload: nothing is left.
	if err := k8s.Delete(ctx, &gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "theirs"}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"demo-1", "demo-2", "demo-3"} {
		eventually(t, 20*time.Second, "restored "+p, func() error { return restored(ns, p, "app", "demo/app:1.0") })
	}
	eventually(t, 20*time.Second, "mount and clone gone", func() error {
		if _, err := getMount(ns, mountName); !apierrors.IsNotFound(err) {
			return fmt.Errorf("mount still there: %v", err)
		}
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: clone.Name}, &appsv1.Deployment{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("clone still there: %v", err)
		}
		return nil
	})
	eventually(t, 20*time.Second, "bridge and mount gone from the model", func() error {
		m := published.latest()
		for _, b := range m.Bridges {
			if b.Namespace == ns {
				return fmt.Errorf("bridge %s still published", b.Name)
			}
		}
		for _, mt := range m.Mounts {
			if mt.Namespace == ns {
				return fmt.Errorf("mount %s still published", mt.Name)
			}
		}
		return nil
	})
}

// TestBarePodAndUndeclaredPorts bridges a bare Pod (its clone is a Pod with
// the original image) and reports a port the container does not declare.
func TestBarePodAndUndeclaredPorts(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	newClient(t, "dev-pod")
	newPod(t, ns, "solo", map[string]string{"app": "solo"}, "demo/solo:2", "10.244.0.31")
	target := gefyrav1.Target{Kind: gefyrav1.KindPod, Name: "solo", Container: "app"}
	mountName := gefyrav1.MountName(target)
	newBridge(t, ns, "ok", "dev-pod", target, 8155)
	eventually(t, 20*time.Second, "carrier in the Pod", func() error { return mountedBy(ns, "solo", "app", mountName, "demo/solo:2") })

	clone := &corev1.Pod{}
	eventually(t, 20*time.Second, "fallback Pod", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "solo-gefyra-fallback-app"}, clone)
	})
	if got := image(clone, "app"); got != "demo/solo:2" {
		t.Fatalf("the fallback Pod runs %s, want the original image", got)
	}
	if _, ok := clone.Labels["app"]; ok {
		t.Fatalf("a bare Pod's clone keeps its labels, so Services would select it: %v", clone.Labels)
	}

	b := newBridge(t, ns, "wrong-port", "dev-pod", target, 9000)
	// The mount becomes ready once its fallback is; stand in for kubelet.
	origClone := clone.DeepCopy()
	clone.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.32",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := k8s.Status().Patch(ctx, clone, client.MergeFrom(origClone)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "undeclared port reported", func() error {
		b, err := getBridge(ns, b.Name)
		if err != nil {
			return err
		}
		c := condition(b.Status.Conditions, gefyrav1.ConditionAccepted)
		if c == nil || c.Reason != "PortNotDeclared" {
			return fmt.Errorf("accepted %+v", c)
		}
		if want := "container app of Pod solo does not declare port(s) 9000 (declared: 8155)"; c.Message != want {
			return fmt.Errorf("message %q, want %q", c.Message, want)
		}
		return nil
	})
	// Never published: the model leaves out bridges whose ports the
	// container does not declare, whatever their conditions say.
	eventually(t, 20*time.Second, "a valid bridge of the mount is published", func() error {
		found := false
		for _, m := range published.latest().Bridges {
			if m.Namespace == ns && m.Name == "wrong-port" {
				t.Fatal("a bridge with an undeclared port was published")
			}
			found = found || (m.Namespace == ns && m.Name == "ok")
		}
		if !found {
			return fmt.Errorf("bridge ok not published yet")
		}
		return nil
	})

	// A container the workload does not have is reported on the mount.
	newBridge(t, ns, "no-container", "dev-pod", gefyrav1.Target{Kind: gefyrav1.KindPod, Name: "solo", Container: "nope"}, 8155)
	eventually(t, 20*time.Second, "missing container reported", func() error {
		b, err := getBridge(ns, "no-container")
		if err != nil {
			return err
		}
		c := condition(b.Status.Conditions, gefyrav1.ConditionReady)
		if c == nil || c.Reason != "ContainerNotFound" {
			return fmt.Errorf("ready %+v", c)
		}
		return nil
	})

	// Deleting the client deletes its bridges and restores the Pod.
	if err := k8s.Delete(ctx, &gefyrav1.GefyraClient{ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: "dev-pod"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "Pod restored after the client went", func() error { return restored(ns, "solo", "app", "demo/solo:2") })
	eventually(t, 20*time.Second, "everything gone", func() error {
		var bl gefyrav1.GefyraBridgeList
		if err := k8s.List(ctx, &bl, client.InNamespace(ns)); err != nil {
			return err
		}
		var ml gefyrav1.GefyraMountList
		if err := k8s.List(ctx, &ml, client.InNamespace(ns)); err != nil {
			return err
		}
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "solo-gefyra-fallback-app"}, &corev1.Pod{})
		if len(bl.Items) > 0 || len(ml.Items) > 0 || !apierrors.IsNotFound(err) {
			return fmt.Errorf("%d bridges, %d mounts, clone: %v", len(bl.Items), len(ml.Items), err)
		}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: "dev-pod"}, &gefyrav1.GefyraClient{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("client still there: %v", err)
		}
		return nil
	})
}

// TestMountReadyOnlyOnceCarrierRuns: patching the image is not enough for
// Ready. Until kubelet reports the mounted container running the carrier
// image and ready (probes passed), the mount and its bridge say which Pod
// they wait for; a Pod that appears later makes them wait again.
func TestMountReadyOnlyOnceCarrierRuns(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	newClient(t, "dev-starting")
	d := newDeployment(t, ns, "slow")
	labels := d.Spec.Template.Labels
	newPod(t, ns, "slow-1", labels, "demo/app:1.0", "10.244.3.1")
	target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "slow", Container: "app"}
	mountName := gefyrav1.MountName(target)
	newBridge(t, ns, "slow", "dev-starting", target, 8155)
	eventually(t, 20*time.Second, "carrier in the Pod's spec", func() error { return mountedBy(ns, "slow-1", "app", mountName, "demo/app:1.0") })

	// The fallback is ready, so only the mounted Pod is waited for.
	clone := &appsv1.Deployment{}
	eventually(t, 20*time.Second, "fallback clone", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "slow-gefyra-fallback-app"}, clone)
	})
	newPod(t, ns, "slow-gefyra-fallback-app-x1", clone.Spec.Template.Labels, "demo/app:1.0", "10.244.3.9")

	waitMount := func(what, reason, msg string) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() error {
			m, err := getMount(ns, mountName)
			if err != nil {
				return err
			}
			c := condition(m.Status.Conditions, gefyrav1.ConditionReady)
			if c == nil || c.Reason != reason || !strings.Contains(c.Message, msg) {
				return fmt.Errorf("ready condition %+v, want %s saying %q", c, reason, msg)
			}
			if f := condition(m.Status.Conditions, gefyrav1.ConditionFallbackReady); f == nil || f.Status != metav1.ConditionTrue {
				return fmt.Errorf("fallback ready %+v", f)
			}
			return nil
		})
	}
	waitBridge := func(what string, status metav1.ConditionStatus, reason, msg string) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() error {
			b, err := getBridge(ns, "slow")
			if err != nil {
				return err
			}
			c := condition(b.Status.Conditions, gefyrav1.ConditionMountReady)
			if c == nil || c.Status != status || c.Reason != reason || !strings.Contains(c.Message, msg) {
				return fmt.Errorf("MountReady %+v, want %s %s saying %q", c, status, reason, msg)
			}
			if r := condition(b.Status.Conditions, gefyrav1.ConditionReady); status != metav1.ConditionTrue && (r == nil || r.Status != metav1.ConditionFalse) {
				return fmt.Errorf("Ready %+v while the mount is not", r)
			}
			return nil
		})
	}

	// kubelet still runs the old container.
	waitMount("the mount waits for kubelet to restart the container", "CarrierStarting",
		"Pod slow-1: container app still runs demo/app:1.0; kubelet restarts it with carrier")
	waitBridge("the bridge waits for the mount", metav1.ConditionFalse, "CarrierStarting", "Pod slow-1")
	// carrier runs, its probes have not passed yet.
	kubeletRestarts(t, ns, "slow-1", false)
	waitMount("the mount waits for the readiness probe", "CarrierStarting", "Pod slow-1: carrier runs in container app, which is not ready yet")
	// Ready per kubelet.
	kubeletRestarts(t, ns, "slow-1", true)
	waitMount("the mount is ready", "Mounted", "carrier runs in 1 Pod(s)")
	waitBridge("the bridge's mount is ready", metav1.ConditionTrue, "Mounted", "")

	// A Pod created later (a scale-up): the mount waits for it in turn.
	newPod(t, ns, "slow-2", labels, "demo/app:1.0", "10.244.3.2")
	waitMount("the mount waits for the new Pod", "CarrierStarting", "Pod slow-2: container app still runs demo/app:1.0")
	carrierStarted(t, ns, "slow-2", "app")
	waitMount("the mount is ready with both Pods", "Mounted", "carrier runs in 2 Pod(s)")
}

// TestMountWaitsForTheStartupProber: after the swap kubelet may report the
// restarted container ready before its startup prober had a turn with it;
// the mount trusts that only a startup period after the container's start,
// and looks again by itself when nothing else changes.
func TestMountWaitsForTheStartupProber(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	newClient(t, "dev-startup")
	containers := appContainers(func(c *corev1.Container) {
		c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/started"}}},
			PeriodSeconds: 1}
	})
	d := newDeploymentWith(t, ns, "probed", containers)
	newPodWith(t, ns, "probed-1", d.Spec.Template.Labels, containers, "10.244.4.1")
	target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "probed", Container: "app"}
	mountName := gefyrav1.MountName(target)
	newBridge(t, ns, "probed", "dev-startup", target, 8155)
	clone := &appsv1.Deployment{}
	eventually(t, 20*time.Second, "fallback clone", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "probed-gefyra-fallback-app"}, clone)
	})
	newPodWith(t, ns, "probed-gefyra-fallback-app-x1", clone.Spec.Template.Labels, containers, "10.244.4.9")

	carrierStarted(t, ns, "probed-1", "app") // started and ready, just now
	reported := time.Now()
	eventually(t, 20*time.Second, "the mount waits for the startup prober", func() error {
		m, err := getMount(ns, mountName)
		if err != nil {
			return err
		}
		c := condition(m.Status.Conditions, gefyrav1.ConditionReady)
		if c == nil || c.Reason != "CarrierStarting" || !strings.Contains(c.Message, "Pod probed-1: carrier runs in container app; waiting for kubelet to run its startup probe") {
			return fmt.Errorf("ready condition %+v", c)
		}
		return nil
	})
	// No Pod changes from here: the mount must look again by itself.
	eventually(t, 20*time.Second, "the mount is ready", func() error {
		m, err := getMount(ns, mountName)
		if err != nil {
			return err
		}
		if c := condition(m.Status.Conditions, gefyrav1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ready condition %+v", c)
		}
		return nil
	})
	// Ready no sooner than the period (1s) and startupSettle (2s) after
	// StartedAt, which has whole seconds: 2s after the report, less a
	// margin.
	if took := time.Since(reported); took < 1500*time.Millisecond {
		t.Fatalf("the mount was Ready %s after the container was reported, before the startup prober's turn", took)
	}
}

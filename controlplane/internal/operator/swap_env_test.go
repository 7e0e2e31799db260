package operator_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

// appContainers are demoContainers with the app container changed by edit.
func appContainers(edit func(c *corev1.Container)) []corev1.Container {
	cs := demoContainers("demo/app:1.0")
	edit(&cs[1])
	return cs
}

// TestRefusesCommandsTheCarrierImageLacks: the operator swaps carrier into
// a container only if the carrier image has the container's command and its
// exec probes' commands; otherwise kubelet would fail the container, so the
// Pods keep their image and the mount and the bridge say why.
func TestRefusesCommandsTheCarrierImageLacks(t *testing.T) {
	ns := newNamespace(t)
	newClient(t, "dev-swap")
	execProbe := func(cmd ...string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: cmd}}}
	}
	tests := []struct {
		name string
		edit func(c *corev1.Container)
		// want is the mount's Ready message; "" means carrier is swapped in.
		want string
	}{
		{name: "own program outside the image", edit: func(c *corev1.Container) {
			c.Command = []string{"/opt/app/run", "--port", "8155"}
		}, want: "container app's command /opt/app/run is not in the carrier image; carrier is not swapped in"},
		{name: "exec probe outside the image", edit: func(c *corev1.Container) {
			c.Command = []string{"uvicorn", "main:app"}
			c.LivenessProbe = execProbe("/usr/local/sbin/check-health")
		}, want: "container app's liveness probe command /usr/local/sbin/check-health is not in the carrier image"},
		{name: "a PATH without the image's programs", edit: func(c *corev1.Container) {
			c.Command = []string{"python3", "-m", "app"}
			c.Env = []corev1.EnvVar{{Name: "PATH", Value: "/opt/venv/bin"}}
		}, want: "container app's command python3 is not in the carrier image"},
		{name: "server and probes the image has", edit: func(c *corev1.Container) {
			c.Command = []string{"$(SERVER)", "main:app"}
			c.Env = []corev1.EnvVar{{Name: "SERVER", Value: "uvicorn"}}
			c.ReadinessProbe = execProbe("cat", "/tmp/healthy")
			c.LivenessProbe = execProbe("/bin/grpc_health_probe", "-addr=:9000")
		}},
		{name: "args only: the image's entrypoint runs", edit: func(c *corev1.Container) {
			c.Args = []string{"--port", "8155"}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("swap-%d", i)
			d := newDeploymentWith(t, ns, name, appContainers(tt.edit))
			pod := name + "-1"
			newPodWith(t, ns, pod, d.Spec.Template.Labels, d.Spec.Template.Spec.Containers, fmt.Sprintf("10.244.1.%d", i+1))
			target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: name, Container: "app"}
			mountName := gefyrav1.MountName(target)
			newBridge(t, ns, name, "dev-swap", target, 8155)
			if tt.want == "" {
				eventually(t, 20*time.Second, "carrier in the Pod", func() error { return mountedBy(ns, pod, "app", mountName, "demo/app:1.0") })
				return
			}
			eventually(t, 20*time.Second, "the mount refuses", func() error {
				m, err := getMount(ns, mountName)
				if err != nil {
					return err
				}
				c := condition(m.Status.Conditions, gefyrav1.ConditionReady)
				if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "CommandNotInCarrierImage" || !strings.Contains(c.Message, tt.want) {
					return fmt.Errorf("ready condition %+v, want a refusal saying %q", c, tt.want)
				}
				return nil
			})
			eventually(t, 20*time.Second, "the bridge says why", func() error {
				b, err := getBridge(ns, name)
				if err != nil {
					return err
				}
				for _, typ := range []string{gefyrav1.ConditionMountReady, gefyrav1.ConditionReady} {
					c := condition(b.Status.Conditions, typ)
					if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "CommandNotInCarrierImage" || !strings.Contains(c.Message, tt.want) {
						return fmt.Errorf("%s = %+v", typ, c)
					}
				}
				return nil
			})
			// The refusal is decided before any Pod is touched.
			if err := restored(ns, pod, "app", "demo/app:1.0"); err != nil {
				t.Fatalf("the Pod was changed: %v", err)
			}
		})
	}
}

// TestRefusesOnlyThePodsTheCarrierImageCannotRun: a Pod of an older
// revision whose command differs from the workload's keeps its image; the
// others are mounted.
func TestRefusesOnlyThePodsTheCarrierImageCannotRun(t *testing.T) {
	ns := newNamespace(t)
	newClient(t, "dev-swap-pods")
	d := newDeploymentWith(t, ns, "mixed", appContainers(func(c *corev1.Container) { c.Command = []string{"/app/server"} }))
	labels := d.Spec.Template.Labels
	newPodWith(t, ns, "mixed-new", labels, d.Spec.Template.Spec.Containers, "10.244.2.1")
	newPodWith(t, ns, "mixed-old", labels, appContainers(func(c *corev1.Container) { c.Command = []string{"/srv/legacy"} }), "10.244.2.2")
	target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "mixed", Container: "app"}
	mountName := gefyrav1.MountName(target)
	newBridge(t, ns, "mixed", "dev-swap-pods", target, 8155)

	eventually(t, 20*time.Second, "carrier in the Pod it can run in", func() error {
		return mountedBy(ns, "mixed-new", "app", mountName, "demo/app:1.0")
	})
	want := "pod mixed-old: container app's command /srv/legacy is not in the carrier image"
	eventually(t, 20*time.Second, "the mount names the Pod it refused", func() error {
		m, err := getMount(ns, mountName)
		if err != nil {
			return err
		}
		c := condition(m.Status.Conditions, gefyrav1.ConditionReady)
		if c == nil || c.Reason != "CommandNotInCarrierImage" || !strings.Contains(c.Message, want) {
			return fmt.Errorf("ready condition %+v, want %q", c, want)
		}
		if len(m.Status.Pods) != 1 || m.Status.Pods[0].Name != "mixed-new" {
			return fmt.Errorf("status pods %+v, want only mixed-new", m.Status.Pods)
		}
		return nil
	})
	if err := restored(ns, "mixed-old", "app", "demo/app:1.0"); err != nil {
		t.Fatalf("the refused Pod was changed: %v", err)
	}
}

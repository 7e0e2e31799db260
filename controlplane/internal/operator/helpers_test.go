package operator_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

func publicKey(t *testing.T) string {
	t.Helper()
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k[:])
}

// newClient registers a client as an admin would, with a long lease.
func newClient(t *testing.T, name string) *gefyrav1.GefyraClient {
	t.Helper()
	c := &gefyrav1.GefyraClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: name},
		Spec: gefyrav1.GefyraClientSpec{User: name, PublicKey: publicKey(t),
			LeaseDuration: &metav1.Duration{Duration: time.Hour}},
	}
	if err := k8s.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	waitClientAddress(t, name)
	return c
}

func waitClientAddress(t *testing.T, name string) string {
	t.Helper()
	var addr string
	eventually(t, 20*time.Second, "client "+name+" gets an address", func() error {
		c := &gefyrav1.GefyraClient{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: "gefyra", Name: name}, c); err != nil {
			return err
		}
		if c.Status.Address == "" {
			return fmt.Errorf("no address yet")
		}
		addr = c.Status.Address
		return nil
	})
	return addr
}

func demoContainers(image string) []corev1.Container {
	return []corev1.Container{
		{Name: "oauth2-proxy", Image: "oauth2-proxy:v7", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8809}}},
		{Name: "app", Image: image, Ports: []corev1.ContainerPort{{Name: "api", ContainerPort: 8155, Protocol: corev1.ProtocolTCP}}},
	}
}

func newDeployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	return newDeploymentWith(t, ns, name, demoContainers("demo/app:1.0"))
}

// newDeploymentWith creates a Deployment of containers, selecting app=name.
func newDeploymentWith(t *testing.T, ns, name string, containers []corev1.Container) *appsv1.Deployment {
	t.Helper()
	labels := map[string]string{"app": name, "tier": "backend", "team": "blue"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: containers},
			},
		},
	}
	if err := k8s.Create(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	return d
}

// newPod creates a Pod and, standing in for kubelet, marks it running and
// ready with ip.
func newPod(t *testing.T, ns, name string, labels map[string]string, image, ip string) *corev1.Pod {
	t.Helper()
	return newPodWith(t, ns, name, labels, demoContainers(image), ip)
}

// newPodWith is newPod with the Pod's containers.
func newPodWith(t *testing.T, ns, name string, labels map[string]string, containers []corev1.Container, ip string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: containers},
	}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	orig := p.DeepCopy()
	p.Status = corev1.PodStatus{
		Phase:             corev1.PodRunning,
		PodIP:             ip,
		PodIPs:            []corev1.PodIP{{IP: ip}},
		Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		ContainerStatuses: runningStatuses(containers),
	}
	// A merge patch: the operator may have patched the Pod meanwhile.
	if err := k8s.Status().Patch(ctx, p, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	return p
}

// runningStatuses are the statuses kubelet reports for containers once
// each runs its image and passed its probes.
func runningStatuses(containers []corev1.Container) []corev1.ContainerStatus {
	out := make([]corev1.ContainerStatus, len(containers))
	for i, c := range containers {
		out[i] = corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		}
	}
	return out
}

// kubeletRestarts stands in for kubelet after the operator changed an
// image of Pod ns/name: it reports every container as running the image
// its spec now names, and ready if ready is set.
func kubeletRestarts(t *testing.T, ns, name string, ready bool) {
	t.Helper()
	ctx := context.Background()
	p := getPod(t, ns, name)
	orig := p.DeepCopy()
	p.Status.ContainerStatuses = runningStatuses(p.Spec.Containers)
	for i := range p.Status.ContainerStatuses {
		p.Status.ContainerStatuses[i].Ready = ready
	}
	if err := k8s.Status().Patch(ctx, p, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
}

// carrierStarted waits until carrier is swapped into container of Pod
// ns/name and then, standing in for kubelet, reports it running and ready.
func carrierStarted(t *testing.T, ns, name, container string) {
	t.Helper()
	eventually(t, 20*time.Second, "carrier swapped into "+name, func() error {
		if got := image(getPod(t, ns, name), container); got != carrierImage {
			return fmt.Errorf("container %s runs %s", container, got)
		}
		return nil
	})
	kubeletRestarts(t, ns, name, true)
}

func newBridge(t *testing.T, ns, name, clientName string, target gefyrav1.Target, remote int32) *gefyrav1.GefyraBridge {
	t.Helper()
	b := &gefyrav1.GefyraBridge{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gefyrav1.GefyraBridgeSpec{
			Client: clientName,
			Target: target,
			Ports:  []gefyrav1.PortMapping{{Remote: remote, Local: remote}},
			Rules: []gefyrav1.Rule{{Headers: []gefyrav1.HeaderMatch{{Name: "x-gefyra", Value: clientName}},
				Path: &gefyrav1.PathMatch{Value: "/items"}}},
		},
	}
	if err := k8s.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return b
}

func getPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func image(p *corev1.Pod, container string) string {
	for _, c := range p.Spec.Containers {
		if c.Name == container {
			return c.Image
		}
	}
	return ""
}

// mountedBy checks that container of Pod ns/name runs carrier for mount and
// remembers original.
func mountedBy(ns, name, container, mount, original string) error {
	p := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		return err
	}
	if got := image(p, container); got != carrierImage {
		return fmt.Errorf("pod %s: container %s runs %s, not carrier", name, container, got)
	}
	if got := p.Annotations["original-image.gefyra.dev/"+container]; got != original {
		return fmt.Errorf("pod %s: original image recorded as %q, want %q", name, got, original)
	}
	if got := p.Annotations["mount.gefyra.dev/"+container]; got != mount {
		return fmt.Errorf("pod %s: mount annotation %q, want %q", name, got, mount)
	}
	if p.Labels["gefyra.dev/carrier"] != "true" {
		return fmt.Errorf("pod %s: no carrier label", name)
	}
	return nil
}

// restored checks that Pod ns/name runs image in container and carries no
// trace of gefyra.
func restored(ns, name, container, want string) error {
	p := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		return err
	}
	if got := image(p, container); got != want {
		return fmt.Errorf("pod %s: container %s runs %s, want %s", name, container, got, want)
	}
	for k := range p.Annotations {
		if strings.Contains(k, "gefyra.dev/") {
			return fmt.Errorf("pod %s: annotation %s left behind", name, k)
		}
	}
	for k := range p.Labels {
		if strings.Contains(k, "gefyra.dev/") {
			return fmt.Errorf("pod %s: label %s left behind", name, k)
		}
	}
	return nil
}

func condition(conds []metav1.Condition, typ string) *metav1.Condition {
	return meta.FindStatusCondition(conds, typ)
}

func getBridge(ns, name string) (*gefyrav1.GefyraBridge, error) {
	b := &gefyrav1.GefyraBridge{}
	return b, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, b)
}

func getMount(ns, name string) (*gefyrav1.GefyraMount, error) {
	m := &gefyrav1.GefyraMount{}
	return m, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, m)
}

func clientKey(o client.Object) client.ObjectKey { return client.ObjectKeyFromObject(o) }

package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gefyra.dev/gefyra/cli/internal/errmark"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

// LabelFallback marks the Pods of the fallback clone the control plane
// runs beside a bridged workload; they are not the workload's own.
const LabelFallback = "gefyra.dev/fallback"

// ErrWorkloadNotFound marks a missing workload or container,
// ErrContainerAmbiguous a workload of several containers where none was
// named.
var (
	ErrWorkloadNotFound   = errors.New("workload not found")
	ErrContainerAmbiguous = errors.New("container not named")
)

// Workload is a bridge's target as the cluster has it.
type Workload struct {
	Kind       gefyrav1.TargetKind
	Namespace  string
	Name       string
	Containers []corev1.Container
	// Pods are the names of the workload's Pods (not the fallback's),
	// sorted; nil when the developer may not list Pods.
	Pods []string
}

// Ref spells the workload as kubectl does, e.g. deployment/oauth2-demo.
func (w *Workload) Ref() string { return KindRef(w.Kind) + "/" + w.Name }

// KindRef is the lowercase kind as kubectl spells it.
func KindRef(k gefyrav1.TargetKind) string { return strings.ToLower(string(k)) }

// Container returns the workload's container named name.
func (w *Workload) Container(name string) (*corev1.Container, bool) {
	for i := range w.Containers {
		if w.Containers[i].Name == name {
			return &w.Containers[i], true
		}
	}
	return nil, false
}

// ContainerNames lists the workload's containers.
func (w *Workload) ContainerNames() []string {
	names := make([]string, len(w.Containers))
	for i, c := range w.Containers {
		names[i] = c.Name
	}
	return names
}

// GetWorkload reads the workload kind/name in namespace and lists its
// Pods. A forbidden read is returned as is (IsForbidden).
func (c *Cluster) GetWorkload(ctx context.Context, namespace string, kind gefyrav1.TargetKind, name string) (*Workload, error) {
	w := &Workload{Kind: kind, Namespace: namespace, Name: name}
	var obj client.Object
	var sel *metav1.LabelSelector
	var spec *corev1.PodSpec
	switch kind {
	case gefyrav1.KindDeployment:
		d := &appsv1.Deployment{}
		obj, spec = d, &d.Spec.Template.Spec
	case gefyrav1.KindStatefulSet:
		s := &appsv1.StatefulSet{}
		obj, spec = s, &s.Spec.Template.Spec
	case gefyrav1.KindDaemonSet:
		s := &appsv1.DaemonSet{}
		obj, spec = s, &s.Spec.Template.Spec
	case gefyrav1.KindPod:
		p := &corev1.Pod{}
		obj, spec = p, &p.Spec
	default:
		return nil, fmt.Errorf("unknown workload kind %q", kind)
	}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, errmark.New(ErrWorkloadNotFound, "%s/%s does not exist in namespace %s", KindRef(kind), name, namespace)
		}
		return nil, err
	}
	w.Containers = spec.Containers
	switch o := obj.(type) {
	case *appsv1.Deployment:
		sel = o.Spec.Selector
	case *appsv1.StatefulSet:
		sel = o.Spec.Selector
	case *appsv1.DaemonSet:
		sel = o.Spec.Selector
	case *corev1.Pod:
		w.Pods = []string{o.Name}
		return w, nil
	}
	pods, err := c.podsOf(ctx, namespace, sel)
	if err == nil {
		w.Pods = pods
	} else if !apierrors.IsForbidden(err) {
		return nil, err
	}
	return w, nil
}

func (c *Cluster) podsOf(ctx context.Context, namespace string, sel *metav1.LabelSelector) ([]string, error) {
	if sel == nil {
		return []string{}, nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, err
	}
	var list corev1.PodList
	if err := c.Client.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: s}); err != nil {
		return nil, err
	}
	pods := []string{}
	for _, p := range list.Items {
		if _, fallback := p.Labels[LabelFallback]; fallback || !p.DeletionTimestamp.IsZero() {
			continue
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		pods = append(pods, p.Name)
	}
	sort.Strings(pods)
	return pods, nil
}

// TCPPorts are the TCP ports the container declares, sorted.
func TCPPorts(c *corev1.Container) []int32 {
	var out []int32
	for _, p := range c.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			out = append(out, p.ContainerPort)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// JoinPorts spells ports for messages.
func JoinPorts(ports []int32) string {
	if len(ports) == 0 {
		return "none"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ", ")
}

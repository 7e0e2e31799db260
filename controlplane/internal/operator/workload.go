package operator

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

// workload is a mount's target, whatever its kind.
type workload struct {
	kind     gefyrav1.TargetKind
	obj      client.Object
	selector labels.Selector         // the workload's Pod selector; nil for a bare Pod
	selKeys  []string                // label keys the selector uses
	template *corev1.PodTemplateSpec // the original Pod template (for a bare Pod: the Pod)
}

func (o *Operator) getWorkload(ctx context.Context, namespace string, t gefyrav1.Target) (*workload, error) {
	key := client.ObjectKey{Namespace: namespace, Name: t.Name}
	w := &workload{kind: t.Kind}
	var sel *metav1.LabelSelector
	switch t.Kind {
	case gefyrav1.KindDeployment:
		d := &appsv1.Deployment{}
		if err := o.client.Get(ctx, key, d); err != nil {
			return nil, err
		}
		w.obj, sel, w.template = d, d.Spec.Selector, &d.Spec.Template
	case gefyrav1.KindStatefulSet:
		s := &appsv1.StatefulSet{}
		if err := o.client.Get(ctx, key, s); err != nil {
			return nil, err
		}
		w.obj, sel, w.template = s, s.Spec.Selector, &s.Spec.Template
	case gefyrav1.KindDaemonSet:
		d := &appsv1.DaemonSet{}
		if err := o.client.Get(ctx, key, d); err != nil {
			return nil, err
		}
		w.obj, sel, w.template = d, d.Spec.Selector, &d.Spec.Template
	case gefyrav1.KindPod:
		p := &corev1.Pod{}
		if err := o.client.Get(ctx, key, p); err != nil {
			return nil, err
		}
		w.obj = p
		// A bare Pod has no selector: anything may select it by any of its
		// labels, so its clone keeps none of them.
		for k := range p.Labels {
			w.selKeys = append(w.selKeys, k)
		}
		w.template = &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: p.Labels}, Spec: *p.Spec.DeepCopy()}
		// A bare Pod may already run carrier: its template is what it ran before.
		for i := range w.template.Spec.Containers {
			c := &w.template.Spec.Containers[i]
			if orig := p.Annotations[AnnotationOriginalImage+c.Name]; orig != "" {
				c.Image = orig
			}
		}
		return w, nil
	default:
		return nil, fmt.Errorf("target kind %q is not supported", t.Kind)
	}
	if sel == nil {
		return nil, fmt.Errorf("%s %s has no selector", t.Kind, t.Name)
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("%s %s: selector: %w", t.Kind, t.Name, err)
	}
	if s.Empty() {
		return nil, fmt.Errorf("%s %s: an empty selector would select every Pod", t.Kind, t.Name)
	}
	w.selector = s
	for k := range sel.MatchLabels {
		w.selKeys = append(w.selKeys, k)
	}
	for _, e := range sel.MatchExpressions {
		w.selKeys = append(w.selKeys, e.Key)
	}
	return w, nil
}

// selects says whether pod belongs to the workload. Fallback clones' Pods
// never do.
func (w *workload) selects(pod *corev1.Pod) bool {
	if _, ok := pod.Labels[LabelFallback]; ok {
		return false
	}
	if w.kind == gefyrav1.KindPod {
		return pod.Name == w.obj.GetName()
	}
	return w.selector.Matches(labels.Set(pod.Labels))
}

// pods lists the workload's live Pods.
func (o *Operator) podsOf(ctx context.Context, w *workload) ([]corev1.Pod, error) {
	if w.kind == gefyrav1.KindPod {
		return []corev1.Pod{*w.obj.(*corev1.Pod)}, nil
	}
	var list corev1.PodList
	if err := o.client.List(ctx, &list, client.InNamespace(w.obj.GetNamespace()), client.MatchingLabelsSelector{Selector: w.selector}); err != nil {
		return nil, err
	}
	out := list.Items[:0]
	for _, p := range list.Items {
		if w.selects(&p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// cloneName is the fallback clone's name, shortened with a hash where the
// kind limits name length (a StatefulSet's name goes into a 63-character
// label of its Pods).
func cloneName(t gefyrav1.Target) string {
	name := t.Name + "-gefyra-fallback-" + t.Container
	limit := 253
	if t.Kind == gefyrav1.KindStatefulSet {
		limit = 52
	}
	if len(name) <= limit {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("%s-%08x", name[:limit-9], h.Sum32())
}

// cloneLabels are the labels of the clone's Pods: the originals without the
// ones that the workload's selector and the Services that select the
// workload's Pods use, plus the fallback label. So the clone runs beside the
// workload with its original image, but neither the workload nor its
// Services see its Pods; carrier sends them traffic directly.
func (o *Operator) cloneLabels(ctx context.Context, m *gefyrav1.GefyraMount, w *workload) (map[string]string, error) {
	orig := labels.Set(w.template.Labels)
	drop := map[string]bool{}
	for _, k := range w.selKeys {
		drop[k] = true
	}
	var services corev1.ServiceList
	if err := o.client.List(ctx, &services, client.InNamespace(m.Namespace)); err != nil {
		return nil, err
	}
	for _, s := range services.Items {
		if len(s.Spec.Selector) == 0 {
			continue
		}
		if labels.SelectorFromSet(s.Spec.Selector).Matches(orig) {
			for k := range s.Spec.Selector {
				drop[k] = true
			}
		}
	}
	out := map[string]string{}
	for k, v := range orig {
		if !drop[k] {
			out[k] = v
		}
	}
	out[LabelFallback] = string(m.UID)
	return out, nil
}

// ensureClone creates the fallback clone if it is missing and returns it.
func (o *Operator) ensureClone(ctx context.Context, m *gefyrav1.GefyraMount, w *workload) (client.Object, error) {
	name := cloneName(m.Spec.Target)
	key := client.ObjectKey{Namespace: m.Namespace, Name: name}
	existing, err := newOfKind(m.Spec.Target.Kind)
	if err != nil {
		return nil, err
	}
	err = o.client.Get(ctx, key, existing)
	if err == nil {
		if existing.GetLabels()[LabelFallback] != string(m.UID) {
			return nil, fmt.Errorf("%s %s exists and is not this mount's fallback clone", m.Spec.Target.Kind, name)
		}
		return existing, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	podLabels, err := o.cloneLabels(ctx, m, w)
	if err != nil {
		return nil, err
	}
	objLabels := map[string]string{LabelFallback: string(m.UID), "app.kubernetes.io/part-of": "gefyra"}
	meta := metav1.ObjectMeta{
		Namespace:   m.Namespace,
		Name:        name,
		Labels:      objLabels,
		Annotations: map[string]string{AnnotationFallbackOf: string(m.Spec.Target.Kind) + "/" + m.Spec.Target.Name},
	}
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{LabelFallback: string(m.UID)}}
	one := int32(1)
	tmpl := w.template.DeepCopy()
	tmpl.Labels = podLabels
	var clone client.Object
	switch src := w.obj.(type) {
	case *appsv1.Deployment:
		d := &appsv1.Deployment{ObjectMeta: meta, Spec: *src.Spec.DeepCopy()}
		d.Spec.Replicas, d.Spec.Selector, d.Spec.Template, d.Spec.Paused = &one, sel, *tmpl, false
		clone = d
	case *appsv1.StatefulSet:
		s := &appsv1.StatefulSet{ObjectMeta: meta, Spec: *src.Spec.DeepCopy()}
		s.Spec.Replicas, s.Spec.Selector, s.Spec.Template = &one, sel, *tmpl
		clone = s
	case *appsv1.DaemonSet:
		d := &appsv1.DaemonSet{ObjectMeta: meta, Spec: *src.Spec.DeepCopy()}
		d.Spec.Selector, d.Spec.Template = sel, *tmpl
		clone = d
	case *corev1.Pod:
		p := &corev1.Pod{ObjectMeta: meta, Spec: tmpl.Spec}
		p.Labels = podLabels
		maps.Copy(p.Labels, objLabels)
		p.Spec.NodeName = ""
		p.Spec.EphemeralContainers = nil
		clone = p
	}
	if err := controllerutil.SetControllerReference(m, clone, o.client.Scheme()); err != nil {
		return nil, err
	}
	if err := o.client.Create(ctx, clone); err != nil {
		return nil, err
	}
	o.log.Info("fallback clone created", "mount", m.Namespace+"/"+m.Name, "kind", m.Spec.Target.Kind, "clone", name)
	return clone, nil
}

func newOfKind(k gefyrav1.TargetKind) (client.Object, error) {
	switch k {
	case gefyrav1.KindDeployment:
		return &appsv1.Deployment{}, nil
	case gefyrav1.KindStatefulSet:
		return &appsv1.StatefulSet{}, nil
	case gefyrav1.KindDaemonSet:
		return &appsv1.DaemonSet{}, nil
	case gefyrav1.KindPod:
		return &corev1.Pod{}, nil
	}
	return nil, fmt.Errorf("target kind %q is not supported", k)
}

// fallbackEndpoints are the IPs of the clone's ready Pods.
func (o *Operator) fallbackEndpoints(ctx context.Context, m *gefyrav1.GefyraMount) ([]string, error) {
	var list corev1.PodList
	if err := o.client.List(ctx, &list, client.InNamespace(m.Namespace), client.MatchingLabels{LabelFallback: string(m.UID)}); err != nil {
		return nil, err
	}
	var out []string
	for _, p := range list.Items {
		if p.DeletionTimestamp.IsZero() && p.Status.PodIP != "" && podReady(&p) {
			out = append(out, p.Status.PodIP)
		}
	}
	return out, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

package operator

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

func request(namespace, name string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: namespace, Name: name}}
}

func (o *Operator) clientOfBridge(_ context.Context, obj client.Object) []reconcile.Request {
	return []reconcile.Request{request(o.cfg.Namespace, obj.(*gefyrav1.GefyraBridge).Spec.Client)}
}

func (o *Operator) bridgesOfClient(ctx context.Context, obj client.Object) []reconcile.Request {
	bridges, err := o.bridgesOf(ctx, obj.GetName())
	if err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(bridges))
	for _, b := range bridges {
		out = append(out, request(b.Namespace, b.Name))
	}
	return out
}

func (o *Operator) bridgesOfMount(ctx context.Context, obj client.Object) []reconcile.Request {
	bridges, err := o.bridgesUsingMount(ctx, obj.GetNamespace(), obj.GetName())
	if err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(bridges))
	for _, b := range bridges {
		out = append(out, request(b.Namespace, b.Name))
	}
	return out
}

func (o *Operator) mountOfBridge(_ context.Context, obj client.Object) []reconcile.Request {
	b := obj.(*gefyrav1.GefyraBridge)
	return []reconcile.Request{request(b.Namespace, gefyrav1.MountName(b.Spec.Target))}
}

// mountsOfPod maps a Pod to the mounts it matters to: as a Pod of the
// target, as a Pod that carries the mount, or as a Pod of its clone.
func (o *Operator) mountsOfPod(ctx context.Context, obj client.Object) []reconcile.Request {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil
	}
	var mounts gefyrav1.GefyraMountList
	if err := o.client.List(ctx, &mounts, client.InNamespace(pod.Namespace)); err != nil || len(mounts.Items) == 0 {
		return nil
	}
	var out []reconcile.Request
	for _, m := range mounts.Items {
		switch {
		case pod.Labels[LabelFallback] == string(m.UID),
			pod.Annotations[AnnotationMount+m.Spec.Target.Container] == m.Name:
			out = append(out, request(m.Namespace, m.Name))
		case m.Spec.Target.Kind == gefyrav1.KindPod:
			if pod.Name == m.Spec.Target.Name {
				out = append(out, request(m.Namespace, m.Name))
			}
		default:
			w, err := o.getWorkload(ctx, m.Namespace, m.Spec.Target)
			if apierrors.IsNotFound(err) || err != nil {
				continue
			}
			if w.selects(pod) {
				out = append(out, request(m.Namespace, m.Name))
			}
		}
	}
	return out
}

// mountsOfWorkload maps a workload (or a fallback clone) to its mounts.
func (o *Operator) mountsOfWorkload(kind gefyrav1.TargetKind) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		var mounts gefyrav1.GefyraMountList
		if err := o.client.List(ctx, &mounts, client.InNamespace(obj.GetNamespace())); err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, m := range mounts.Items {
			if (m.Spec.Target.Kind == kind && m.Spec.Target.Name == obj.GetName()) || obj.GetLabels()[LabelFallback] == string(m.UID) {
				out = append(out, request(m.Namespace, m.Name))
			}
		}
		return out
	}
}

package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

func (o *Operator) reconcileMount(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	m := &gefyrav1.GefyraMount{}
	if err := o.client.Get(ctx, req.NamespacedName, m); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !m.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, o.finalizeMount(ctx, m)
	}
	if m.Annotations[AnnotationManagedBy] == ManagedByBridge {
		// A mount made for bridges goes with the last of them (also when a
		// bridge vanished while the operator was away).
		if err := o.releaseMount(ctx, m.Namespace, m.Name, ""); err != nil {
			return reconcile.Result{}, err
		}
		if err := o.client.Get(ctx, req.NamespacedName, m); err != nil || !m.DeletionTimestamp.IsZero() {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
	}
	if controllerutil.AddFinalizer(m, gefyrav1.Finalizer) {
		if err := o.client.Update(ctx, m); err != nil {
			return reconcile.Result{}, err
		}
	}
	orig := m.DeepCopy()
	m.Status.ObservedGeneration = m.Generation
	notReady := func(reason, msg string) (reconcile.Result, error) {
		setCondition(&m.Status.Conditions, m.Generation, gefyrav1.ConditionReady, metav1.ConditionFalse, reason, msg)
		return reconcile.Result{}, o.client.Status().Patch(ctx, m, client.MergeFrom(orig))
	}
	t := m.Spec.Target
	w, err := o.getWorkload(ctx, m.Namespace, t)
	if apierrors.IsNotFound(err) {
		return notReady("TargetNotFound", fmt.Sprintf("%s %s/%s does not exist", t.Kind, m.Namespace, t.Name))
	}
	if err != nil {
		return notReady("InvalidTarget", err.Error())
	}
	idx := slices.IndexFunc(w.template.Spec.Containers, func(c corev1.Container) bool { return c.Name == t.Container })
	if idx < 0 {
		var names []string
		for _, c := range w.template.Spec.Containers {
			names = append(names, c.Name)
		}
		return notReady("ContainerNotFound", fmt.Sprintf("%s %s has no container %q (containers: %s)", t.Kind, t.Name, t.Container, strings.Join(names, ", ")))
	}
	m.Status.Ports = w.template.Spec.Containers[idx].Ports
	// A container the carrier image cannot start keeps its image: better
	// no bridge than a broken Pod.
	refuse := func(msg string) (reconcile.Result, error) {
		if c := meta.FindStatusCondition(orig.Status.Conditions, gefyrav1.ConditionReady); c == nil || c.Reason != ReasonNotInCarrierImage || c.Message != msg {
			o.log.Warn("not swapping carrier in", "mount", m.Namespace+"/"+m.Name, "why", msg)
		}
		return notReady(ReasonNotInCarrierImage, msg)
	}
	if msg := swapRefusal(&w.template.Spec.Containers[idx]); msg != "" {
		return refuse(msg)
	}

	pods, err := o.podsOf(ctx, w)
	if err != nil {
		return reconcile.Result{}, err
	}
	m.Status.Pods = nil
	var errs []error
	var refusals []string
	for i := range pods {
		p := &pods[i]
		if !p.DeletionTimestamp.IsZero() || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		original, refusal, err := o.mountPod(ctx, m, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %w", p.Name, err))
			continue
		}
		if refusal != "" {
			refusals = append(refusals, "pod "+p.Name+": "+refusal)
			continue
		}
		if original != "" {
			m.Status.Pods = append(m.Status.Pods, gefyrav1.MountedPod{Name: p.Name, OriginalImage: original, IP: p.Status.PodIP})
		}
	}
	if err := errors.Join(errs...); err != nil {
		setCondition(&m.Status.Conditions, m.Generation, gefyrav1.ConditionReady, metav1.ConditionFalse, "PatchFailed", err.Error())
		if perr := o.client.Status().Patch(ctx, m, client.MergeFrom(orig)); perr != nil {
			return reconcile.Result{}, perr
		}
		return reconcile.Result{}, err
	}

	clone, err := o.ensureClone(ctx, m, w)
	if err != nil {
		setCondition(&m.Status.Conditions, m.Generation, gefyrav1.ConditionFallbackReady, metav1.ConditionFalse, "CloneFailed", err.Error())
		return notReady("CloneFailed", err.Error())
	}
	endpoints, err := o.fallbackEndpoints(ctx, m)
	if err != nil {
		return reconcile.Result{}, err
	}
	m.Status.Fallback = &gefyrav1.Fallback{Kind: t.Kind, Name: clone.GetName(), Endpoints: endpoints}
	if len(endpoints) == 0 {
		msg := fmt.Sprintf("waiting for a ready Pod of the fallback clone %s %s", t.Kind, clone.GetName())
		setCondition(&m.Status.Conditions, m.Generation, gefyrav1.ConditionFallbackReady, metav1.ConditionFalse, "FallbackPending", msg)
		if len(refusals) == 0 {
			return notReady("FallbackPending", msg)
		}
	} else {
		setCondition(&m.Status.Conditions, m.Generation, gefyrav1.ConditionFallbackReady, metav1.ConditionTrue, "FallbackReady", "")
	}
	if len(refusals) > 0 {
		// Pods whose spec differs from the workload's (an older
		// revision): the others carry the mount, with their fallback;
		// these keep their image.
		return refuse(strings.Join(refusals, "; "))
	}
	setCondition(&m.Status.Conditions, m.Generation, gefyrav1.ConditionReady, metav1.ConditionTrue, "Mounted",
		fmt.Sprintf("carrier runs in %d Pod(s)", len(m.Status.Pods)))
	return reconcile.Result{}, o.client.Status().Patch(ctx, m, client.MergeFrom(orig))
}

// mountPod swaps carrier into the mount's container of p, remembering the
// original image in an annotation. It returns that original image, or ""
// when p cannot take the mount (the container is missing, or another mount
// has it), and why the carrier image could not start the container, if it
// could not (then p is left alone).
func (o *Operator) mountPod(ctx context.Context, m *gefyrav1.GefyraMount, p *corev1.Pod) (original, refusal string, err error) {
	name := m.Spec.Target.Container
	idx := slices.IndexFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == name })
	if idx < 0 {
		return "", "", nil
	}
	if owner := p.Annotations[AnnotationMount+name]; owner != "" && owner != m.Name {
		o.log.Warn("container already mounted by another mount", "pod", p.Namespace+"/"+p.Name, "container", name, "mount", owner)
		return "", "", nil
	}
	original = p.Annotations[AnnotationOriginalImage+name]
	if original == "" {
		original = p.Spec.Containers[idx].Image
	}
	if p.Spec.Containers[idx].Image == o.cfg.CarrierImage && p.Annotations[AnnotationMount+name] == m.Name && p.Labels[LabelCarrier] == "true" {
		return original, "", nil
	}
	if msg := swapRefusal(&p.Spec.Containers[idx]); msg != "" {
		return "", msg, nil
	}
	patch := map[string]any{
		"metadata": map[string]any{
			"labels":      map[string]any{LabelCarrier: "true"},
			"annotations": map[string]any{AnnotationOriginalImage + name: original, AnnotationMount + name: m.Name},
		},
		"spec": map[string]any{"containers": []any{map[string]any{"name": name, "image": o.cfg.CarrierImage}}},
	}
	if err := o.patchPod(ctx, p, patch); err != nil {
		return "", "", err
	}
	o.log.Info("carrier swapped in", "pod", p.Namespace+"/"+p.Name, "container", name, "original", original)
	return original, "", nil
}

// restorePod puts the original image back into the mount's container of p
// and removes every trace of the mount.
func (o *Operator) restorePod(ctx context.Context, m *gefyrav1.GefyraMount, p *corev1.Pod) error {
	name := m.Spec.Target.Container
	if p.Annotations[AnnotationMount+name] != m.Name {
		return nil
	}
	annotations := map[string]any{AnnotationOriginalImage + name: nil, AnnotationMount + name: nil}
	meta := map[string]any{"annotations": annotations}
	others := false
	for k := range p.Annotations {
		if strings.HasPrefix(k, AnnotationMount) && k != AnnotationMount+name {
			others = true
		}
	}
	if !others {
		meta["labels"] = map[string]any{LabelCarrier: nil}
	}
	patch := map[string]any{"metadata": meta}
	if original := p.Annotations[AnnotationOriginalImage+name]; original != "" && slices.ContainsFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == name }) {
		patch["spec"] = map[string]any{"containers": []any{map[string]any{"name": name, "image": original}}}
	}
	if err := o.patchPod(ctx, p, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	o.metrics.Restores.Inc()
	o.log.Info("original image restored", "pod", p.Namespace+"/"+p.Name, "container", name)
	return nil
}

func (o *Operator) patchPod(ctx context.Context, p *corev1.Pod, patch map[string]any) error {
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	return o.client.Patch(ctx, p, client.RawPatch(types.StrategicMergePatchType, data))
}

// finalizeMount restores every Pod the mount changed and deletes its clone.
func (o *Operator) finalizeMount(ctx context.Context, m *gefyrav1.GefyraMount) error {
	if !controllerutil.ContainsFinalizer(m, gefyrav1.Finalizer) {
		return nil
	}
	// Read live: a Pod patched just before must not be missed for a stale cache.
	var pods corev1.PodList
	if err := o.api.List(ctx, &pods, client.InNamespace(m.Namespace), client.MatchingLabels{LabelCarrier: "true"}); err != nil {
		return err
	}
	var errs []error
	for i := range pods.Items {
		if err := o.restorePod(ctx, m, &pods.Items[i]); err != nil {
			errs = append(errs, fmt.Errorf("restoring pod %s: %w", pods.Items[i].Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	clone, err := newOfKind(m.Spec.Target.Kind)
	if err != nil {
		return err
	}
	err = o.api.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: cloneName(m.Spec.Target)}, clone)
	if err == nil && clone.GetLabels()[LabelFallback] == string(m.UID) {
		if err := o.client.Delete(ctx, clone, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return err
		}
		o.log.Info("fallback clone deleted", "mount", m.Namespace+"/"+m.Name, "clone", clone.GetName())
	} else if client.IgnoreNotFound(err) != nil {
		return err
	}
	controllerutil.RemoveFinalizer(m, gefyrav1.Finalizer)
	return client.IgnoreNotFound(o.client.Update(ctx, m))
}

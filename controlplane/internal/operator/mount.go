package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

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
	// Patching the image is not the end: kubelet restarts the container
	// with carrier, and its probes must pass before the Pod's Service
	// endpoint is back. Until then a bridge would be Ready with nothing
	// behind the Service.
	var starting []string
	var recheck time.Duration
	now := time.Now()
	for i := range pods {
		p := &pods[i]
		if slices.ContainsFunc(m.Status.Pods, func(mp gefyrav1.MountedPod) bool { return mp.Name == p.Name }) {
			if why, wait := o.carrierStarting(p, t.Container, now); why != "" {
				starting = append(starting, why)
				if wait > 0 && (recheck == 0 || wait < recheck) {
					recheck = wait
				}
			}
		}
	}
	if len(starting) > 0 {
		res, err := notReady(ReasonCarrierStarting, "waiting for kubelet: "+strings.Join(starting, "; "))
		if err == nil {
			// Pod events bring the rest; a wait that no status change
			// ends needs a requeue.
			res.RequeueAfter = recheck
		}
		return res, err
	}
	setCondition(&m.Status.Conditions, m.Generation, gefyrav1.ConditionReady, metav1.ConditionTrue, "Mounted",
		fmt.Sprintf("carrier runs in %d Pod(s)", len(m.Status.Pods)))
	return reconcile.Result{}, o.client.Status().Patch(ctx, m, client.MergeFrom(orig))
}

// ReasonCarrierStarting is the mount's Ready reason while a mounted Pod's
// container does not yet run the carrier image, running and ready, as
// kubelet reports it.
const ReasonCarrierStarting = "CarrierStarting"

// startupSettle is how long after a restarted container's start, beyond
// its startup probe's period, kubelet's own report of it is trusted: see
// carrierStarting. It covers the start time's whole seconds and kubelet's
// status update.
const startupSettle = 2 * time.Second

// carrierStarting says why container of p is not yet running carrier and
// ready per kubelet (its status in p) at now, or "" when it is; wait, if
// set, is when to look again though nothing in p changes.
//
// A container with a startup probe is trusted only once kubelet's startup
// prober had its turn with the new container: after an in-place restart
// (the image swap) kubelet carries the old container's "started" over to
// the new one until its startup prober next ticks (up to the probe's
// period), runs the readiness probe meanwhile, and may report the new
// container ready, then not started and not ready, then ready for good.
func (o *Operator) carrierStarting(p *corev1.Pod, container string, now time.Time) (why string, wait time.Duration) {
	i := slices.IndexFunc(p.Status.ContainerStatuses, func(cs corev1.ContainerStatus) bool { return cs.Name == container })
	if i < 0 {
		return fmt.Sprintf("Pod %s: container %s has not started yet", p.Name, container), 0
	}
	cs := &p.Status.ContainerStatuses[i]
	switch {
	case !sameImage(cs, o.cfg.CarrierImage):
		return fmt.Sprintf("Pod %s: container %s still runs %s; kubelet restarts it with carrier", p.Name, container, cs.Image), 0
	case cs.State.Running == nil:
		what := "not running"
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			what = "waiting (" + w.Reason
			if w.Message != "" {
				what += ": " + w.Message
			}
			what += ")"
		} else if term := cs.State.Terminated; term != nil {
			what = fmt.Sprintf("terminated (%s, exit code %d)", term.Reason, term.ExitCode)
		}
		return fmt.Sprintf("Pod %s: carrier in container %s is %s", p.Name, container, what), 0
	case cs.Started != nil && !*cs.Started:
		return fmt.Sprintf("Pod %s: carrier runs in container %s, whose startup probe has not passed yet", p.Name, container), 0
	case !cs.Ready:
		return fmt.Sprintf("Pod %s: carrier runs in container %s, which is not ready yet", p.Name, container), 0
	}
	c := slices.IndexFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == container })
	if c >= 0 && p.Spec.Containers[c].StartupProbe != nil {
		period := time.Duration(p.Spec.Containers[c].StartupProbe.PeriodSeconds) * time.Second
		if period <= 0 {
			period = 10 * time.Second // the API's default
		}
		if settled := cs.State.Running.StartedAt.Add(period + startupSettle); now.Before(settled) {
			return fmt.Sprintf("Pod %s: carrier runs in container %s; waiting for kubelet to run its startup probe", p.Name, container), settled.Sub(now)
		}
	}
	return "", 0
}

// sameImage says whether the container of status cs runs image ref: by
// name, or by digest where ref names one.
func sameImage(cs *corev1.ContainerStatus, ref string) bool {
	if normalizeImage(cs.Image) == normalizeImage(ref) {
		return true
	}
	_, digest, ok := strings.Cut(ref, "@")
	return ok && digest != "" && strings.HasSuffix(cs.ImageID, "@"+digest)
}

// normalizeImage spells an image reference the way the runtime reports it
// back, so the spec's and the status's spelling of one image compare equal:
// Docker Hub's implicit registry and library/ namespace dropped, an
// implicit :latest tag added.
func normalizeImage(ref string) string {
	for _, prefix := range []string{"docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"} {
		if rest, ok := strings.CutPrefix(ref, prefix); ok {
			ref = rest
			break
		}
	}
	if rest, ok := strings.CutPrefix(ref, "library/"); ok && !strings.Contains(rest, "/") {
		ref = rest
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if !strings.ContainsAny(last, ":@") {
		ref += ":latest"
	}
	return ref
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

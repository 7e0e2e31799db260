package operator

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

func (o *Operator) reconcileBridge(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	b := &gefyrav1.GefyraBridge{}
	if err := o.client.Get(ctx, req.NamespacedName, b); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !b.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, o.finalizeBridge(ctx, b)
	}
	if controllerutil.AddFinalizer(b, gefyrav1.Finalizer) {
		if err := o.client.Update(ctx, b); err != nil {
			return reconcile.Result{}, err
		}
	}
	now := time.Now()
	var res reconcile.Result
	orig := b.DeepCopy()
	if b.Spec.TTL != nil {
		end := b.CreationTimestamp.Add(b.Spec.TTL.Duration)
		if !now.Before(end) {
			o.metrics.Expired.WithLabelValues("ttl").Inc()
			o.log.Info("bridge TTL passed; deleting it", "bridge", req.String())
			return reconcile.Result{}, client.IgnoreNotFound(o.client.Delete(ctx, b))
		}
		b.Status.ExpiresAt = &metav1.Time{Time: end}
		res.RequeueAfter = end.Sub(now) + 100*time.Millisecond
	}
	b.Status.ObservedGeneration = b.Generation
	accepted, reason, msg, err := o.acceptBridge(ctx, b, now)
	if err != nil {
		return reconcile.Result{}, err
	}
	if !accepted {
		setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionAccepted, metav1.ConditionFalse, reason, msg)
		setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionReady, metav1.ConditionFalse, reason, msg)
		return res, o.client.Status().Patch(ctx, b, client.MergeFrom(orig))
	}
	setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionAccepted, metav1.ConditionTrue, "Accepted", "")

	mountReady, reason, msg := true, "", ""
	mount := &gefyrav1.GefyraMount{}
	if err := o.client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Status.Mount}, mount); client.IgnoreNotFound(err) != nil {
		return reconcile.Result{}, err
	}
	ready := meta.FindStatusCondition(mount.Status.Conditions, gefyrav1.ConditionReady)
	// Once the mount has seen the container, its declared ports are known
	// (even while the fallback is still starting): check them first.
	if ready != nil && mount.Status.ObservedGeneration == mount.Generation && !slices.Contains(targetProblems, ready.Reason) {
		if missing := undeclaredPorts(b, mount); len(missing) > 0 {
			reason = "PortNotDeclared"
			msg = fmt.Sprintf("container %s of %s %s does not declare port(s) %s (declared: %s)", b.Spec.Target.Container,
				b.Spec.Target.Kind, b.Spec.Target.Name, joinPorts(missing), joinPorts(declaredPorts(mount)))
			setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionAccepted, metav1.ConditionFalse, reason, msg)
			setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionReady, metav1.ConditionFalse, reason, msg)
			return res, o.client.Status().Patch(ctx, b, client.MergeFrom(orig))
		}
	}
	switch {
	case ready == nil || mount.Generation == 0:
		mountReady, reason, msg = false, "MountPending", "waiting for mount "+mount.Name
	case ready.Status != metav1.ConditionTrue:
		mountReady, reason, msg = false, ready.Reason, "mount "+mount.Name+": "+ready.Message
	}
	if mountReady {
		setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionMountReady, metav1.ConditionTrue, "Mounted", "")
	} else {
		setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionMountReady, metav1.ConditionFalse, reason, msg)
	}
	dp := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionDataPlaneReady)
	if dp == nil {
		setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionDataPlaneReady, metav1.ConditionUnknown, "WaitingForDataPlane",
			"waiting for carrier to acknowledge the configuration and for the client's tunnel handshake")
		dp = meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionDataPlaneReady)
	}
	switch {
	case !mountReady:
		setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionReady, metav1.ConditionFalse, reason, msg)
	case dp.Status != metav1.ConditionTrue:
		setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionReady, dp.Status, dp.Reason, dp.Message)
	default:
		setCondition(&b.Status.Conditions, b.Generation, gefyrav1.ConditionReady, metav1.ConditionTrue, "Ready", "")
	}
	return res, o.client.Status().Patch(ctx, b, client.MergeFrom(orig))
}

// acceptBridge checks the spec and the client, and makes sure the bridge's
// mount exists. A rejection is reported as reason and message, not error.
func (o *Operator) acceptBridge(ctx context.Context, b *gefyrav1.GefyraBridge, now time.Time) (ok bool, reason, msg string, err error) {
	if _, _, err := b.Spec.Model(); err != nil {
		return false, "InvalidSpec", err.Error(), nil
	}
	c := &gefyrav1.GefyraClient{}
	if err := o.client.Get(ctx, client.ObjectKey{Namespace: o.cfg.Namespace, Name: b.Spec.Client}, c); err != nil {
		if apierrors.IsNotFound(err) {
			return false, "ClientNotFound", fmt.Sprintf("GefyraClient %s/%s does not exist", o.cfg.Namespace, b.Spec.Client), nil
		}
		return false, "", "", err
	}
	b.Status.ClientAddress = c.Status.Address
	switch {
	case !c.DeletionTimestamp.IsZero():
		return false, "ClientDeleting", "the client is being deleted", nil
	case c.Status.Address == "":
		return false, "ClientPending", "the client has no tunnel address yet", nil
	case !now.Before(o.leaseOf(c)):
		return false, "ClientLeaseExpired", "the client's lease expired at " + o.leaseOf(c).UTC().Format(time.RFC3339), nil
	}
	name := gefyrav1.MountName(b.Spec.Target)
	m := &gefyrav1.GefyraMount{}
	err = o.client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: name}, m)
	switch {
	case apierrors.IsNotFound(err):
		m = &gefyrav1.GefyraMount{
			ObjectMeta: metav1.ObjectMeta{Namespace: b.Namespace, Name: name,
				Annotations: map[string]string{AnnotationManagedBy: ManagedByBridge},
				Labels:      map[string]string{"app.kubernetes.io/part-of": "gefyra"}},
			Spec: gefyrav1.GefyraMountSpec{Target: b.Spec.Target},
		}
		if err := o.client.Create(ctx, m); err != nil && !apierrors.IsAlreadyExists(err) {
			return false, "", "", err
		}
		o.log.Info("mount created for bridge", "mount", b.Namespace+"/"+name, "bridge", b.Name)
	case err != nil:
		return false, "", "", err
	case !m.DeletionTimestamp.IsZero():
		// The last bridge before this one went and took the mount along;
		// a new one is made once the workload is restored.
		return false, "MountRestoring", "the workload is being restored; the bridge is mounted again afterwards", nil
	case m.Spec.Target != b.Spec.Target:
		return false, "MountConflict", fmt.Sprintf("GefyraMount %s exists for another target", name), nil
	}
	b.Status.Mount = name
	return true, "", "", nil
}

func (o *Operator) finalizeBridge(ctx context.Context, b *gefyrav1.GefyraBridge) error {
	if !controllerutil.ContainsFinalizer(b, gefyrav1.Finalizer) {
		return nil
	}
	if err := o.releaseMount(ctx, b.Namespace, gefyrav1.MountName(b.Spec.Target), b.Name); err != nil {
		return err
	}
	controllerutil.RemoveFinalizer(b, gefyrav1.Finalizer)
	return client.IgnoreNotFound(o.client.Update(ctx, b))
}

// releaseMount deletes the named mount if bridges created it and no bridge
// other than except still uses it. Deleting it restores the workload.
func (o *Operator) releaseMount(ctx context.Context, namespace, name, except string) error {
	m := &gefyrav1.GefyraMount{}
	if err := o.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, m); err != nil {
		return client.IgnoreNotFound(err)
	}
	if m.Annotations[AnnotationManagedBy] != ManagedByBridge || !m.DeletionTimestamp.IsZero() {
		return nil
	}
	users, err := o.bridgesUsingMount(ctx, namespace, name)
	if err != nil {
		return err
	}
	for _, u := range users {
		if u.Name != except && u.DeletionTimestamp.IsZero() {
			return nil
		}
	}
	o.log.Info("last bridge of the mount is gone; restoring the workload", "mount", namespace+"/"+name)
	return client.IgnoreNotFound(o.client.Delete(ctx, m, client.Preconditions{UID: &m.UID}))
}

func (o *Operator) bridgesUsingMount(ctx context.Context, namespace, mount string) ([]gefyrav1.GefyraBridge, error) {
	var list gefyrav1.GefyraBridgeList
	if err := o.client.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{indexBridgeMount: mount}); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// targetProblems are the mount reasons that leave its ports unknown.
var targetProblems = []string{"TargetNotFound", "InvalidTarget", "ContainerNotFound"}

func declaredPorts(m *gefyrav1.GefyraMount) []int32 {
	var out []int32
	for _, p := range m.Status.Ports {
		if p.Protocol == "" || p.Protocol == "TCP" {
			out = append(out, p.ContainerPort)
		}
	}
	slices.Sort(out)
	return out
}

func undeclaredPorts(b *gefyrav1.GefyraBridge, m *gefyrav1.GefyraMount) []int32 {
	declared := declaredPorts(m)
	var missing []int32
	for _, p := range b.Spec.Ports {
		if !slices.Contains(declared, p.Remote) {
			missing = append(missing, p.Remote)
		}
	}
	return missing
}

func joinPorts(ports []int32) string {
	if len(ports) == 0 {
		return "none"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ", ")
}

package operator

import (
	"context"
	"fmt"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

// leaseOf returns when c's lease ends: its lease duration after the later of
// its last heartbeat and its creation.
func (o *Operator) leaseOf(c *gefyrav1.GefyraClient) time.Time {
	last := c.CreationTimestamp.Time
	if hb := c.Status.LastHeartbeat; hb != nil && hb.After(last) {
		last = hb.Time
	}
	d := o.cfg.DefaultLease
	if c.Spec.LeaseDuration != nil && c.Spec.LeaseDuration.Duration > 0 {
		d = c.Spec.LeaseDuration.Duration
	}
	return last.Add(d)
}

// clientActive says whether c may carry bridges: allocated, lease valid,
// not being deleted.
func (o *Operator) clientActive(c *gefyrav1.GefyraClient, now time.Time) bool {
	return c.DeletionTimestamp.IsZero() && c.Status.Address != "" && now.Before(o.leaseOf(c))
}

func (o *Operator) reconcileClient(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	c := &gefyrav1.GefyraClient{}
	if err := o.client.Get(ctx, req.NamespacedName, c); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !c.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, o.finalizeClient(ctx, c)
	}
	if controllerutil.AddFinalizer(c, gefyrav1.Finalizer) {
		if err := o.client.Update(ctx, c); err != nil {
			return reconcile.Result{}, err
		}
	}
	if err := o.ensureClientAccess(ctx, c); err != nil {
		return reconcile.Result{}, fmt.Errorf("granting %s access to its client: %w", c.Spec.User, err)
	}
	addr, err := o.ipam.Allocate(ctx, c.Name)
	orig := c.DeepCopy()
	if err != nil {
		setCondition(&c.Status.Conditions, c.Generation, gefyrav1.ConditionAddressAllocated, metav1.ConditionFalse, "AllocationFailed", err.Error())
		setCondition(&c.Status.Conditions, c.Generation, gefyrav1.ConditionReady, metav1.ConditionFalse, "AllocationFailed", err.Error())
		if perr := o.client.Status().Patch(ctx, c, client.MergeFrom(orig)); perr != nil {
			return reconcile.Result{}, perr
		}
		return reconcile.Result{}, err
	}
	c.Status.Address = addr.String()
	setCondition(&c.Status.Conditions, c.Generation, gefyrav1.ConditionAddressAllocated, metav1.ConditionTrue, "Allocated", "tunnel address "+c.Status.Address)

	pub, err := o.stowawayPublicKey(ctx)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("stowaway key: %w", err)
	}
	c.Status.Stowaway = &gefyrav1.StowawayEndpoint{
		Endpoint:  o.cfg.StowawayEndpoint,
		PublicKey: pub,
		Address:   o.pool.Stowaway().String(),
		CIDR:      o.pool.Prefix().String(),
	}

	var res reconcile.Result
	now := time.Now()
	end := o.leaseOf(c)
	if now.Before(end) {
		setCondition(&c.Status.Conditions, c.Generation, gefyrav1.ConditionLeaseValid, metav1.ConditionTrue, "HeartbeatRecent",
			"lease valid until "+end.UTC().Format(time.RFC3339))
		setCondition(&c.Status.Conditions, c.Generation, gefyrav1.ConditionReady, metav1.ConditionTrue, "Ready", "")
		res.RequeueAfter = end.Sub(now) + 100*time.Millisecond
	} else {
		msg := "no heartbeat since " + end.Add(-o.leaseDuration(c)).UTC().Format(time.RFC3339) + "; the client's bridges were deleted"
		setCondition(&c.Status.Conditions, c.Generation, gefyrav1.ConditionLeaseValid, metav1.ConditionFalse, "LeaseExpired", msg)
		setCondition(&c.Status.Conditions, c.Generation, gefyrav1.ConditionReady, metav1.ConditionFalse, "LeaseExpired", msg)
		n, err := o.deleteBridgesOf(ctx, c.Name)
		if err != nil {
			return reconcile.Result{}, err
		}
		if n > 0 {
			o.metrics.Expired.WithLabelValues("lease").Add(float64(n))
			o.log.Info("client lease expired; its bridges were deleted", "client", c.Name, "bridges", n)
		}
	}

	bridges, err := o.bridgesOf(ctx, c.Name)
	if err != nil {
		return reconcile.Result{}, err
	}
	c.Status.Bridges = c.Status.Bridges[:0]
	for _, b := range bridges {
		s := gefyrav1.ClientBridgeStatus{Namespace: b.Namespace, Name: b.Name}
		if r := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionReady); r != nil {
			s.Ready = r.Status == metav1.ConditionTrue
			s.Reason, s.Message = r.Reason, r.Message
		}
		if !b.DeletionTimestamp.IsZero() {
			s.Ready, s.Reason, s.Message = false, "Deleting", "the bridge is being deleted"
		}
		c.Status.Bridges = append(c.Status.Bridges, s)
	}
	if len(c.Status.Bridges) == 0 {
		c.Status.Bridges = nil
	}
	c.Status.ObservedGeneration = c.Generation
	return res, o.client.Status().Patch(ctx, c, client.MergeFrom(orig))
}

func (o *Operator) leaseDuration(c *gefyrav1.GefyraClient) time.Duration {
	if c.Spec.LeaseDuration != nil && c.Spec.LeaseDuration.Duration > 0 {
		return c.Spec.LeaseDuration.Duration
	}
	return o.cfg.DefaultLease
}

func (o *Operator) finalizeClient(ctx context.Context, c *gefyrav1.GefyraClient) error {
	if !controllerutil.ContainsFinalizer(c, gefyrav1.Finalizer) {
		return nil
	}
	if _, err := o.deleteBridgesOf(ctx, c.Name); err != nil {
		return err
	}
	// The bridges' own finalizers restore the workloads; the client goes
	// once they are gone, so a deleted client never leaves a mount behind.
	left, err := o.bridgesOf(ctx, c.Name)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("client %s: waiting for %d bridges to be deleted", c.Name, len(left))
	}
	if err := o.ipam.Release(ctx, c.Name); err != nil {
		return err
	}
	controllerutil.RemoveFinalizer(c, gefyrav1.Finalizer)
	return client.IgnoreNotFound(o.client.Update(ctx, c))
}

func (o *Operator) bridgesOf(ctx context.Context, clientName string) ([]gefyrav1.GefyraBridge, error) {
	var list gefyrav1.GefyraBridgeList
	if err := o.client.List(ctx, &list, client.MatchingFields{indexBridgeClient: clientName}); err != nil {
		return nil, err
	}
	return list.Items, nil
}

func (o *Operator) deleteBridgesOf(ctx context.Context, clientName string) (int, error) {
	bridges, err := o.bridgesOf(ctx, clientName)
	if err != nil {
		return 0, err
	}
	n := 0
	for i := range bridges {
		if !bridges[i].DeletionTimestamp.IsZero() {
			continue
		}
		if err := o.client.Delete(ctx, &bridges[i]); client.IgnoreNotFound(err) != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// ensureClientAccess lets the client's user read its client and renew the
// heartbeat in its status, and nothing else: a Role naming just this client,
// bound to just that user, owned by the client so both go with it.
func (o *Operator) ensureClientAccess(ctx context.Context, c *gefyrav1.GefyraClient) error {
	name := "gefyra-client-" + c.Name
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: name}}
	if _, err := controllerutil.CreateOrUpdate(ctx, o.client, role, func() error {
		role.Labels = map[string]string{"app.kubernetes.io/part-of": "gefyra"}
		role.Rules = ClientAccessRules(c.Name)
		return controllerutil.SetControllerReference(c, role, o.client.Scheme())
	}); err != nil {
		return err
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: name}}
	_, err := controllerutil.CreateOrUpdate(ctx, o.client, rb, func() error {
		if rb.RoleRef.Name != "" && rb.RoleRef.Name != name {
			// roleRef is immutable; a foreign binding of this name is not ours to fix.
			return apierrors.NewConflict(rbacv1.Resource("rolebindings"), name, fmt.Errorf("binds %s, not %s", rb.RoleRef.Name, name))
		}
		rb.Labels = map[string]string{"app.kubernetes.io/part-of": "gefyra"}
		rb.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
		rb.Subjects = []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: c.Spec.User}}
		return controllerutil.SetControllerReference(c, rb, o.client.Scheme())
	})
	return err
}

// ClientAccessRules are the rights the operator grants the user of client
// name. The API server lets it grant only rights it holds itself
// (deploy/rbac/operator.yaml).
func ClientAccessRules(name string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{gefyrav1.GroupVersion.Group}, Resources: []string{"gefyraclients"}, ResourceNames: []string{name},
			Verbs: []string{"get", "list", "watch", "update", "patch", "delete"}},
		{APIGroups: []string{gefyrav1.GroupVersion.Group}, Resources: []string{"gefyraclients/status"}, ResourceNames: []string{name},
			Verbs: []string{"get", "update", "patch"}},
	}
}

// setCondition sets a condition, keeping its transition time when the
// status does not change.
func setCondition(conds *[]metav1.Condition, gen int64, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
}

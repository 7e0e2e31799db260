package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gefyra.dev/gefyra/cli/internal/errmark"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/bridge"
)

// The add-on's objects the CLI looks for (deploy/).
const (
	Namespace               = bridge.ClientNamespace
	ControlPlane            = "gefyra-controlplane"
	StowawayService         = "gefyra-stowaway-wireguard"
	DefaultStowawayNodePort = 31820
)

// CheckInstalled makes sure gefyra's CRDs and control plane are in the
// cluster. A control plane the developer may not read counts as present.
func (c *Cluster) CheckInstalled(ctx context.Context) error {
	res, err := c.Kube.Discovery().ServerResourcesForGroupVersion(gefyrav1.GroupVersion.String())
	if apierrors.IsNotFound(err) {
		return errmark.New(ErrNotInstalled, "gefyra is not installed in the cluster (no %s resources): run `gefyra up --install`", gefyrav1.GroupVersion)
	}
	if err != nil {
		return fmt.Errorf("looking for gefyra's resources: %w", err)
	}
	for _, want := range []string{"gefyraclients", "gefyrabridges"} {
		if !slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == want }) {
			return errmark.New(ErrNotInstalled, "gefyra is not installed in the cluster (the %s CRD is missing): run `gefyra up --install`", want)
		}
	}
	d := &appsv1.Deployment{}
	err = c.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: ControlPlane}, d)
	switch {
	case apierrors.IsNotFound(err):
		return errmark.New(ErrNotInstalled, "gefyra is not installed in the cluster (deployment %s/%s is missing): run `gefyra up --install`", Namespace, ControlPlane)
	case err != nil && !apierrors.IsForbidden(err):
		return fmt.Errorf("looking for gefyra's control plane: %w", err)
	}
	return nil
}

// ControlPlaneProblem describes why the control plane may not answer (no
// available replica), or "" when it looks fine or cannot be read.
func (c *Cluster) ControlPlaneProblem(ctx context.Context) string {
	d := &appsv1.Deployment{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: ControlPlane}, d); err != nil {
		return ""
	}
	if d.Status.AvailableReplicas == 0 {
		return fmt.Sprintf("deployment %s/%s has no available replica (kubectl -n %s get pods)", Namespace, ControlPlane, Namespace)
	}
	return ""
}

// GetClient returns the GefyraClient name; nil if there is none.
func (c *Cluster) GetClient(ctx context.Context, name string) (*gefyrav1.GefyraClient, error) {
	gc := &gefyrav1.GefyraClient{}
	err := c.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, gc)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading GefyraClient %s: %w", name, err)
	}
	return gc, nil
}

// RegisterClient creates the developer's GefyraClient, or brings an
// existing one up to date (its public key and lease), and renews its
// heartbeat.
//
// A developer may read their client only once the control plane granted
// it (a Role it makes for each new client), so a forbidden read before
// the client exists is normal: the client is created, and an existing one
// is waited for until it can be read.
func (c *Cluster) RegisterClient(ctx context.Context, name, user, publicKey string, lease time.Duration) (*gefyrav1.GefyraClient, error) {
	var leaseDur *metav1.Duration
	if lease > 0 {
		leaseDur = &metav1.Duration{Duration: lease}
	}
	gc, err := c.GetClient(ctx, name)
	if err != nil && !apierrors.IsForbidden(err) {
		return nil, err
	}
	if gc == nil {
		gc = &gefyrav1.GefyraClient{
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "gefyra-cli"}},
			Spec: gefyrav1.GefyraClientSpec{User: user, PublicKey: publicKey, LeaseDuration: leaseDur},
		}
		err := c.Client.Create(ctx, gc)
		switch {
		case err == nil:
			// A new client's lease counts from its creation; the control
			// plane grants the right to renew it in a moment.
			if err := c.Heartbeat(ctx, name); err != nil && !apierrors.IsForbidden(err) {
				return nil, err
			}
			return gc, nil
		case !apierrors.IsAlreadyExists(err):
			return nil, fmt.Errorf("registering GefyraClient %s: %s", name, apiMessage(err))
		}
		if gc, err = c.waitReadable(ctx, name); err != nil {
			return nil, err
		}
	}
	if !gc.DeletionTimestamp.IsZero() {
		return nil, fmt.Errorf("GefyraClient %s is still being deleted (the control plane restores its bridges' workloads first): wait a moment and run `gefyra up` again", name)
	}
	if gc.Spec.User != user {
		return nil, fmt.Errorf("GefyraClient %s belongs to user %q, not to you (%q)", name, gc.Spec.User, user)
	}
	if gc.Spec.PublicKey != publicKey || !sameDuration(gc.Spec.LeaseDuration, leaseDur) {
		gc.Spec.PublicKey = publicKey
		gc.Spec.LeaseDuration = leaseDur
		if err := c.Client.Update(ctx, gc); err != nil {
			return nil, fmt.Errorf("updating GefyraClient %s: %s", name, apiMessage(err))
		}
	}
	if err := c.Heartbeat(ctx, name); err != nil {
		return nil, err
	}
	return gc, nil
}

// waitReadable waits until the client exists and may be read.
func (c *Cluster) waitReadable(ctx context.Context, name string) (*gefyrav1.GefyraClient, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var gc *gefyrav1.GefyraClient
	err := poll(ctx, 250*time.Millisecond, func() (bool, error) {
		var err error
		gc, err = c.GetClient(ctx, name)
		if apierrors.IsForbidden(err) {
			return false, nil
		}
		if err == nil && gc == nil {
			return false, fmt.Errorf("GefyraClient %s disappeared while registering: run `gefyra up` again", name)
		}
		return err == nil, err
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("GefyraClient %s exists but you may not read it: is it yours, and does gefyra-controlplane run? (kubectl -n gefyra get pods)", name)
		}
		return nil, err
	}
	return gc, nil
}

func sameDuration(a, b *metav1.Duration) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Duration == b.Duration
}

// Heartbeat renews the client's lease (status.lastHeartbeat, the one field
// of its status a developer may write).
func (c *Cluster) Heartbeat(ctx context.Context, name string) error {
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"lastHeartbeat": metav1.Now().UTC().Format(time.RFC3339)}})
	gc := &gefyrav1.GefyraClient{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}}
	if err := c.Client.Status().Patch(ctx, gc, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("renewing the heartbeat of GefyraClient %s: %w", name, err)
	}
	return nil
}

// ClientReady says whether the operator gave the client what the agent
// needs: a tunnel address and stowaway's public key.
func ClientReady(gc *gefyrav1.GefyraClient) bool {
	return gc != nil && gc.Status.Address != "" && gc.Status.Stowaway != nil && gc.Status.Stowaway.PublicKey != ""
}

// ClientProblem returns the reason and message of a failed condition the
// operator set on the client ("" if none).
func ClientProblem(gc *gefyrav1.GefyraClient) (reason, message string) {
	for _, t := range []string{gefyrav1.ConditionAddressAllocated, gefyrav1.ConditionReady} {
		if cond := meta.FindStatusCondition(gc.Status.Conditions, t); cond != nil && cond.Status == metav1.ConditionFalse {
			return cond.Reason, cond.Message
		}
	}
	return "", ""
}

// WaitClient polls the client until ClientReady, calling progress with
// each version read.
func (c *Cluster) WaitClient(ctx context.Context, name string, progress func(*gefyrav1.GefyraClient)) (*gefyrav1.GefyraClient, error) {
	var last *gefyrav1.GefyraClient
	err := poll(ctx, 250*time.Millisecond, func() (bool, error) {
		gc, err := c.GetClient(ctx, name)
		if apierrors.IsForbidden(err) {
			// Not yet granted by the control plane.
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if gc == nil {
			return false, fmt.Errorf("GefyraClient %s disappeared: run `gefyra up` again", name)
		}
		last = gc
		if progress != nil {
			progress(gc)
		}
		if r, m := ClientProblem(gc); r == "AllocationFailed" {
			return false, fmt.Errorf("the control plane cannot give this client a tunnel address: %s", m)
		}
		return ClientReady(gc), nil
	})
	return last, err
}

// DeleteClient deletes the client; a missing one is fine.
func (c *Cluster) DeleteClient(ctx context.Context, name string) error {
	gc := &gefyrav1.GefyraClient{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name}}
	if err := c.Client.Delete(ctx, gc); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting GefyraClient %s: %w", name, err)
	}
	return nil
}

// WaitClientGone waits until the client is deleted (the operator's
// finalizer lets it go once its bridges are gone).
func (c *Cluster) WaitClientGone(ctx context.Context, name string) error {
	return poll(ctx, 250*time.Millisecond, func() (bool, error) {
		gc, err := c.GetClient(ctx, name)
		if apierrors.IsForbidden(err) {
			// The Role that let us read it went with it.
			return true, nil
		}
		return gc == nil, err
	})
}

// StowawayNodePortEndpoint finds stowaway's WireGuard port the way a
// developer's machine reaches it by default: a Ready node's InternalIP and
// the NodePort of the gefyra-stowaway-wireguard Service.
func (c *Cluster) StowawayNodePortEndpoint(ctx context.Context) (string, error) {
	svc := &corev1.Service{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: StowawayService}, svc); err != nil {
		return "", fmt.Errorf("reading service %s/%s: %w", Namespace, StowawayService, err)
	}
	var port int32
	for _, p := range svc.Spec.Ports {
		if p.Protocol == corev1.ProtocolUDP && p.NodePort > 0 {
			port = p.NodePort
			break
		}
	}
	if port == 0 {
		return "", fmt.Errorf("service %s/%s has no UDP NodePort", Namespace, StowawayService)
	}
	var nodes corev1.NodeList
	if err := c.Client.List(ctx, &nodes); err != nil {
		return "", fmt.Errorf("listing nodes: %w", err)
	}
	slices.SortFunc(nodes.Items, func(a, b corev1.Node) int { return cmpString(a.Name, b.Name) })
	var fallback string
	for _, n := range nodes.Items {
		ip := internalIP(n)
		if ip == "" {
			continue
		}
		if nodeReady(n) {
			return net.JoinHostPort(ip, strconv.Itoa(int(port))), nil
		}
		if fallback == "" {
			fallback = ip
		}
	}
	if fallback != "" {
		return net.JoinHostPort(fallback, strconv.Itoa(int(port))), nil
	}
	return "", fmt.Errorf("no node has an InternalIP")
}

func internalIP(n corev1.Node) string {
	var v6 string
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip := net.ParseIP(a.Address); ip != nil && ip.To4() != nil {
			return a.Address
		}
		if v6 == "" {
			v6 = a.Address
		}
	}
	return v6
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// expired says whether ctx's deadline has passed.
func expired(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// poll calls f every interval until it returns true or an error, or ctx
// ends.
func poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, err := f()
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && expired(ctx) {
			// The request failed because time ran out (client-go's rate
			// limiter says so in its own words, a moment before ctx does).
			return context.DeadlineExceeded
		}
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gefyra.dev/gefyra/cli/internal/errmark"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

// ErrBridgeExists is wrapped when a bridge's name is taken.
var ErrBridgeExists = errors.New("bridge exists")

// CreateBridge creates b.
func (c *Cluster) CreateBridge(ctx context.Context, b *gefyrav1.GefyraBridge) error {
	if err := c.Client.Create(ctx, b); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return errmark.New(ErrBridgeExists, "a bridge named %s already exists in namespace %s: choose another name with -I, or remove it with `gefyra unbridge -I %s -n %s`",
				b.Name, b.Namespace, b.Name, b.Namespace)
		}
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
			return fmt.Errorf("the cluster refused bridge %s: %s", b.Name, apiMessage(err))
		}
		return fmt.Errorf("creating bridge %s: %w", b.Name, err)
	}
	return nil
}

func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) && se.Status().Message != "" {
		return se.Status().Message
	}
	return err.Error()
}

// BridgeState is a bridge's state as the operator reports it.
type BridgeState struct {
	Exists   bool
	Deleting bool
	Ready    bool
	// Reason and Message of the Ready condition (or of the condition that
	// holds it back).
	Reason  string
	Message string
	// Accepted is false once the operator rejected the bridge.
	Rejected bool
	// Bridge is the object when the developer may read it.
	Bridge *gefyrav1.GefyraBridge
}

// terminalReasons will not change by waiting: the bridge is wrong.
var terminalReasons = []string{
	"InvalidSpec", "ClientNotFound", "ClientDeleting", "ClientLeaseExpired", "MountConflict", "PortNotDeclared",
	"TargetNotFound", "InvalidTarget", "ContainerNotFound",
	// Another bridge holds a TCP port this one asks for (the control
	// plane's DataPlaneReady): it stays so until that bridge goes.
	"PortConflict",
}

// Terminal says whether the state is a failure that waiting will not fix.
func (s BridgeState) Terminal() bool {
	return s.Rejected || (!s.Ready && slices.Contains(terminalReasons, s.Reason))
}

// GetBridgeState reads the bridge namespace/name of client clientName:
// the object itself, or where the developer may not read bridges, the
// entry in the client's status.
func (c *Cluster) GetBridgeState(ctx context.Context, clientName, namespace, name string) (BridgeState, error) {
	b := &gefyrav1.GefyraBridge{}
	err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, b)
	switch {
	case err == nil:
		return stateOf(b), nil
	case apierrors.IsNotFound(err):
		return BridgeState{}, nil
	case !apierrors.IsForbidden(err):
		return BridgeState{}, fmt.Errorf("reading bridge %s: %w", name, err)
	}
	gc, err := c.GetClient(ctx, clientName)
	if err != nil || gc == nil {
		return BridgeState{}, err
	}
	for _, s := range gc.Status.Bridges {
		if s.Namespace == namespace && s.Name == name {
			st := BridgeState{Exists: true, Ready: s.Ready, Reason: s.Reason, Message: s.Message, Deleting: s.Reason == "Deleting"}
			st.Rejected = !s.Ready && slices.Contains(terminalReasons, s.Reason)
			return st, nil
		}
	}
	// Not listed yet (the operator has not seen it) or gone: the caller
	// knows which from what it did.
	return BridgeState{Exists: true, Reason: "Pending", Message: "waiting for the control plane to see the bridge"}, nil
}

func stateOf(b *gefyrav1.GefyraBridge) BridgeState {
	s := BridgeState{Exists: true, Bridge: b, Deleting: !b.DeletionTimestamp.IsZero()}
	if a := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionAccepted); a != nil && a.Status == metav1.ConditionFalse {
		s.Rejected, s.Reason, s.Message = true, a.Reason, a.Message
		return s
	}
	r := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionReady)
	switch {
	case r == nil:
		s.Reason, s.Message = "Pending", "waiting for the control plane to accept the bridge"
	case r.Status == metav1.ConditionTrue && r.ObservedGeneration >= b.Generation:
		s.Ready, s.Reason, s.Message = true, r.Reason, r.Message
	default:
		s.Reason, s.Message = r.Reason, r.Message
	}
	if s.Deleting {
		s.Ready, s.Reason, s.Message = false, "Deleting", "the bridge is being deleted"
	}
	return s
}

// WaitBridge polls the bridge until it is Ready, or its state is terminal,
// calling progress on each change.
func (c *Cluster) WaitBridge(ctx context.Context, clientName, namespace, name string, progress func(BridgeState)) (BridgeState, error) {
	var last BridgeState
	err := poll(ctx, 250*time.Millisecond, func() (bool, error) {
		s, err := c.GetBridgeState(ctx, clientName, namespace, name)
		if err != nil {
			return false, err
		}
		if !s.Exists {
			return false, fmt.Errorf("bridge %s was deleted while waiting for it (by its TTL, the client's lease or someone else)", name)
		}
		if progress != nil && (s.Reason != last.Reason || s.Message != last.Message) {
			progress(s)
		}
		last = s
		return s.Ready || s.Terminal(), nil
	})
	return last, err
}

// DeleteBridge deletes the bridge; a missing one is fine (found says
// whether it was there).
func (c *Cluster) DeleteBridge(ctx context.Context, namespace, name string) (found bool, err error) {
	b := &gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := c.Client.Delete(ctx, b); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("deleting bridge %s/%s: %w", namespace, name, err)
	}
	return true, nil
}

// WaitBridgeGone waits until the bridge is deleted, which the operator
// allows once it restored the workload (or moved the mount to the
// remaining bridges).
// onPoll, if not nil, is called before each look.
func (c *Cluster) WaitBridgeGone(ctx context.Context, clientName, namespace, name string, onPoll func()) error {
	return poll(ctx, 250*time.Millisecond, func() (bool, error) {
		if onPoll != nil {
			onPoll()
		}
		b := &gefyrav1.GefyraBridge{}
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, b)
		switch {
		case apierrors.IsNotFound(err):
			return true, nil
		case err == nil:
			return false, nil
		case !apierrors.IsForbidden(err):
			return false, err
		}
		gc, err := c.GetClient(ctx, clientName)
		if err != nil || gc == nil {
			return gc == nil, err
		}
		return !slices.ContainsFunc(gc.Status.Bridges, func(s gefyrav1.ClientBridgeStatus) bool {
			return s.Namespace == namespace && s.Name == name
		}), nil
	})
}

// ClientBridges lists the bridges of client clientName: from the cluster
// when the developer may list bridges, else from the client's status.
func (c *Cluster) ClientBridges(ctx context.Context, clientName string) ([]gefyrav1.ClientBridgeStatus, []gefyrav1.GefyraBridge, error) {
	var list gefyrav1.GefyraBridgeList
	err := c.Client.List(ctx, &list)
	if err == nil {
		var out []gefyrav1.ClientBridgeStatus
		var objs []gefyrav1.GefyraBridge
		for _, b := range list.Items {
			if b.Spec.Client != clientName {
				continue
			}
			s := stateOf(&b)
			out = append(out, gefyrav1.ClientBridgeStatus{Namespace: b.Namespace, Name: b.Name, Ready: s.Ready, Reason: s.Reason, Message: s.Message})
			objs = append(objs, b)
		}
		return out, objs, nil
	}
	if !apierrors.IsForbidden(err) {
		return nil, nil, fmt.Errorf("listing bridges: %w", err)
	}
	gc, err := c.GetClient(ctx, clientName)
	if err != nil || gc == nil {
		return nil, nil, err
	}
	return gc.Status.Bridges, nil, nil
}

package xds

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/controlplane/internal/translate"
)

// Reasons of the DataPlaneReady condition.
const (
	ReasonAcknowledged = "Acknowledged"
	ReasonWaiting      = "WaitingForDataPlane"
	ReasonRejected     = "ConfigRejected"
	// ReasonPortConflict: another bridge of the workload holds a port
	// this one asks for in a way both cannot share (a TCP port).
	ReasonPortConflict = "PortConflict"
)

// Readiness sets each bridge's DataPlaneReady condition from what the
// nodes acknowledged, on every replica's streams: True once every carrier
// of the bridge's mount and stowaway acknowledged a configuration holding
// the bridge as it is now; False with the node's error when one of them
// rejected a configuration holding the bridge; Unknown while waiting. The
// tunnel handshake of the client is not part of it: stowaway does not
// report it to the control plane.
//
// It runs on the leader only, so one writer decides; it re-checks every
// Interval, so a condition overwritten by a concurrent status update is
// put right again.
type Readiness struct {
	// Client reads bridges (cached) and patches their status.
	Client client.Client
	// Model is the last published model; Local this replica's view of the
	// nodes; Share, if set, adds the other replicas'.
	Model func() *model.Model
	Local func() map[string]NodeStatus
	Share *Share
	// StowawayNodeID is stowaway's node ID (default "gefyra/stowaway").
	StowawayNodeID string
	// Interval between checks (default 1s).
	Interval time.Duration
	Log      *slog.Logger

	notify chan struct{}
}

// NewReadiness returns a Readiness; its fields are as documented.
func NewReadiness(r Readiness) *Readiness {
	if r.StowawayNodeID == "" {
		r.StowawayNodeID = translate.DefaultStowawayNodeID
	}
	if r.Interval <= 0 {
		r.Interval = time.Second
	}
	if r.Log == nil {
		r.Log = slog.New(slog.DiscardHandler)
	}
	r.notify = make(chan struct{}, 1)
	return &r
}

// NeedLeaderElection is true: one writer.
func (r *Readiness) NeedLeaderElection() bool { return true }

// Notify asks for a check soon; it never blocks.
func (r *Readiness) Notify() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Start checks until ctx is done.
func (r *Readiness) Start(ctx context.Context) error {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	lastGC := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.notify:
		}
		nodes := map[string]NodeStatus{}
		if r.Share != nil {
			peers, stale, err := r.Share.Peers(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.Log.Warn("reading the other replicas' xDS node status failed", "err", err)
				}
				continue
			}
			nodes = peers
			if time.Since(lastGC) > time.Minute {
				lastGC = time.Now()
				for _, l := range stale {
					if err := r.Client.Delete(ctx, l, client.Preconditions{ResourceVersion: &l.ResourceVersion}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
						r.Log.Debug("deleting a stale xDS status lease failed", "lease", l.Name, "err", err)
					}
				}
			}
		}
		merge(nodes, r.Local())
		if err := r.apply(ctx, r.Model(), nodes); err != nil && ctx.Err() == nil {
			r.Log.Debug("updating DataPlaneReady; retrying", "err", err)
		}
	}
}

func (r *Readiness) apply(ctx context.Context, m *model.Model, nodes map[string]NodeStatus) error {
	if m == nil {
		return nil
	}
	var errs []string
	refused := translate.Refused(m)
	for i := range m.Bridges {
		mb := &m.Bridges[i]
		st, reason, msg := condition(m, mb, nodes, r.StowawayNodeID, refused)
		b := &gefyrav1.GefyraBridge{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: mb.Namespace, Name: mb.Name}, b); err != nil {
			if !apierrors.IsNotFound(err) {
				errs = append(errs, err.Error())
			}
			continue
		}
		if !b.DeletionTimestamp.IsZero() {
			continue
		}
		cur := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionDataPlaneReady)
		if cur != nil && cur.Status == st && cur.Reason == reason && cur.Message == msg && cur.ObservedGeneration == b.Generation {
			continue
		}
		orig := b.DeepCopy()
		meta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{
			Type: gefyrav1.ConditionDataPlaneReady, Status: st, Reason: reason, Message: msg, ObservedGeneration: b.Generation,
		})
		err := r.Client.Status().Patch(ctx, b, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		switch {
		case err == nil:
			r.Log.Info("bridge data plane", "bridge", mb.Key(), "ready", string(st), "reason", reason, "message", msg)
		case apierrors.IsConflict(err), apierrors.IsNotFound(err):
			// A newer bridge: next round.
		default:
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// Condition is the DataPlaneReady condition of bridge b of model m, given
// what the nodes acknowledged. A bridge that no carrier serves because
// another one holds its port is False with the reason.
func Condition(m *model.Model, b *model.Bridge, nodes map[string]NodeStatus, stowawayID string) (metav1.ConditionStatus, string, string) {
	return condition(m, b, nodes, stowawayID, translate.Refused(m))
}

// condition is Condition with the model's refused bridges (translate.Refused)
// worked out already.
func condition(m *model.Model, b *model.Bridge, nodes map[string]NodeStatus, stowawayID string, refused map[string]string) (metav1.ConditionStatus, string, string) {
	if why, ok := refused[b.Key()]; ok {
		return metav1.ConditionFalse, ReasonPortConflict, "no carrier serves this bridge: " + why
	}
	want := translate.BridgeFingerprint(b)
	var pods []string
	for _, mt := range m.Mounts {
		if mt.Namespace == b.Namespace && mt.Name == b.Mount {
			for _, p := range mt.Pods {
				pods = append(pods, p.NodeID())
			}
		}
	}
	slices.Sort(pods)
	type required struct{ id, what string }
	var req []required
	for _, p := range pods {
		req = append(req, required{p, "carrier in Pod " + p})
	}
	req = append(req, required{stowawayID, "stowaway"})
	var waiting []string
	for _, n := range req {
		st, ok := nodes[n.id]
		switch {
		case ok && st.Bridges[b.Key()] == want:
			// Runs the bridge as it is now, whatever it rejected since.
		case ok && st.Rejected != "" && (st.RejectedVersion == "" || slices.Contains(st.RejectedBridges, b.Key())):
			return metav1.ConditionFalse, ReasonRejected, n.what + " rejected its configuration: " + st.Rejected
		default:
			waiting = append(waiting, n.what)
		}
	}
	if len(pods) == 0 {
		return metav1.ConditionUnknown, ReasonWaiting, "no Pod of mount " + b.Mount + " runs carrier yet"
	}
	if len(waiting) > 0 {
		return metav1.ConditionUnknown, ReasonWaiting, "waiting for " + strings.Join(waiting, ", ") + " to acknowledge the configuration"
	}
	return metav1.ConditionTrue, ReasonAcknowledged, fmt.Sprintf("carrier in %d Pod(s) and stowaway acknowledged the configuration", len(pods))
}

package xds

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Each replica keeps what its nodes acknowledged in a Lease of its own,
// "gefyra-xds-<replica>", labelled LabelShare: the holder is the replica,
// the renew time says it is alive, and AnnotationNodes holds the JSON map
// node ID -> NodeStatus. Leases not renewed within their duration are
// ignored, and the leader deletes them after a while.
const (
	LabelShare      = "gefyra.dev/xds-status"
	AnnotationNodes = "gefyra.dev/xds-nodes"
	leasePrefix     = "gefyra-xds-"
)

// Share publishes this replica's view of the nodes and reads the others'.
type Share struct {
	// Client writes this replica's Lease; Reader lists every replica's
	// (uncached: Leases are not in the manager's cache).
	Client client.Client
	Reader client.Reader
	// Namespace holds the Leases; Replica names this replica (its Pod).
	Namespace, Replica string
	// Nodes is this replica's view.
	Nodes func() map[string]NodeStatus
	// Renew is how often the Lease is renewed (default 10s); it expires
	// after three times that.
	Renew time.Duration
	Log   *slog.Logger

	notify chan struct{}
}

func (s *Share) init() {
	if s.notify == nil {
		s.notify = make(chan struct{}, 1)
	}
	if s.Renew <= 0 {
		s.Renew = 10 * time.Second
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
}

// NewShare returns a Share; its fields are as documented.
func NewShare(s Share) *Share {
	s.init()
	return &s
}

// Notify says the view changed; it never blocks.
func (s *Share) Notify() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// NeedLeaderElection is false: every replica shares what it serves.
func (s *Share) NeedLeaderElection() bool { return false }

func (s *Share) leaseName() string { return leasePrefix + s.Replica }

// Start writes the Lease on every change (at most every 200ms) and renews
// it until ctx is done.
func (s *Share) Start(ctx context.Context) error {
	renew := time.NewTicker(s.Renew)
	defer renew.Stop()
	for {
		if err := s.write(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn("sharing the xDS node status failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := s.Delete(dctx); err != nil {
				s.Log.Warn("removing the xDS node status failed; it expires by itself", "err", err)
			}
			return nil
		case <-renew.C:
		case <-s.notify:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

func (s *Share) write(ctx context.Context) error {
	nodes, err := json.Marshal(s.Nodes())
	if err != nil {
		return err
	}
	now := metav1.NewMicroTime(time.Now())
	dur := int32((3 * s.Renew).Seconds())
	l := &coordinationv1.Lease{}
	err = s.Reader.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.leaseName()}, l)
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.leaseName(),
				Labels:      map[string]string{LabelShare: "true", "app.kubernetes.io/part-of": "gefyra"},
				Annotations: map[string]string{AnnotationNodes: string(nodes)}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &s.Replica, LeaseDurationSeconds: &dur, RenewTime: &now},
		}
		return s.Client.Create(ctx, l)
	}
	if err != nil {
		return err
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[AnnotationNodes] = string(nodes)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &s.Replica, &dur, &now
	return s.Client.Update(ctx, l)
}

// Peers merges the views of the other replicas whose Leases are fresh.
// stale lists the Leases that expired longer than an hour ago.
func (s *Share) Peers(ctx context.Context) (nodes map[string]NodeStatus, stale []*coordinationv1.Lease, err error) {
	var list coordinationv1.LeaseList
	if err := s.Reader.List(ctx, &list, client.InNamespace(s.Namespace), client.MatchingLabels{LabelShare: "true"}); err != nil {
		return nil, nil, err
	}
	nodes = map[string]NodeStatus{}
	now := time.Now()
	for i := range list.Items {
		l := &list.Items[i]
		if l.Name == s.leaseName() || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
			continue
		}
		expires := l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
		if now.After(expires) {
			if now.After(expires.Add(time.Hour)) {
				stale = append(stale, l)
			}
			continue
		}
		var view map[string]NodeStatus
		if err := json.Unmarshal([]byte(l.Annotations[AnnotationNodes]), &view); err != nil {
			s.Log.Warn("a replica's xDS node status is unreadable", "lease", l.Name, "err", err)
			continue
		}
		merge(nodes, view)
	}
	return nodes, stale, nil
}

// merge adds from to into, the newest status of each node winning.
func merge(into, from map[string]NodeStatus) {
	for id, st := range from {
		if cur, ok := into[id]; !ok || st.Updated.After(cur.Updated) || (st.Updated.Equal(cur.Updated) && st.Connected && !cur.Connected) {
			st.Bridges = maps.Clone(st.Bridges)
			into[id] = st
		}
	}
}

// Delete removes this replica's Lease (on shutdown; best effort).
func (s *Share) Delete(ctx context.Context) error {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.leaseName()}}
	if err := s.Client.Delete(ctx, l); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting lease %s: %w", l.Name, err)
	}
	return nil
}

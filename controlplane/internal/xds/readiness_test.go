package xds_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/controlplane/internal/translate"
	"gefyra.dev/gefyra/controlplane/internal/xds"
	"gefyra.dev/gefyra/internal/bridge"
)

func TestCondition(t *testing.T) {
	m := &model.Model{
		Mounts: []model.Mount{{Namespace: "shop", Name: "web", Pods: []model.Pod{{Namespace: "shop", Name: "web-1"}, {Namespace: "shop", Name: "web-2"}}},
			{Namespace: "shop", Name: "empty"}},
		Bridges: []model.Bridge{{Namespace: "shop", Name: "b1", Mount: "web", Client: "dev1", Ports: []bridge.PortMapping{{Remote: 8080, Local: 8080}}},
			{Namespace: "shop", Name: "b2", Mount: "empty", Client: "dev1"},
			// db-a has the TCP port first (by key); db-b asks for it too.
			{Namespace: "shop", Name: "db-a", Mount: "web", Client: "dev1", Ports: []bridge.PortMapping{{Remote: 5432, Local: 5432, Protocol: bridge.ProtocolTCP}}},
			{Namespace: "shop", Name: "db-b", Mount: "web", Client: "dev2", Ports: []bridge.PortMapping{{Remote: 5432, Local: 5432, Protocol: bridge.ProtocolTCP}}}},
	}
	b := &m.Bridges[0]
	fp := translate.BridgeFingerprint(b)
	has := func(f string) xds.NodeStatus { return xds.NodeStatus{Bridges: map[string]string{"shop/b1": f}} }
	all := map[string]xds.NodeStatus{"shop/web-1": has(fp), "shop/web-2": has(fp), "gefyra/stowaway": has(fp)}
	with := func(id string, st xds.NodeStatus) map[string]xds.NodeStatus {
		out := map[string]xds.NodeStatus{}
		for k, v := range all {
			out[k] = v
		}
		out[id] = st
		return out
	}
	without := func(id string) map[string]xds.NodeStatus {
		out := with(id, xds.NodeStatus{})
		delete(out, id)
		return out
	}
	rejected := xds.NodeStatus{Rejected: "cluster x: bad", RejectedVersion: "v2", RejectedBridges: []string{"shop/b1"}, Bridges: map[string]string{}}
	tests := []struct {
		name   string
		bridge *model.Bridge
		nodes  map[string]xds.NodeStatus
		status metav1.ConditionStatus
		reason string
		msg    string
	}{
		{name: "everyone acknowledged", bridge: b, nodes: all, status: metav1.ConditionTrue, reason: xds.ReasonAcknowledged, msg: "carrier in 2 Pod(s) and stowaway"},
		{name: "nothing heard", bridge: b, nodes: nil, status: metav1.ConditionUnknown, reason: xds.ReasonWaiting,
			msg: "waiting for carrier in Pod shop/web-1, carrier in Pod shop/web-2, stowaway to acknowledge"},
		{name: "one carrier missing", bridge: b, nodes: without("shop/web-2"), status: metav1.ConditionUnknown, reason: xds.ReasonWaiting, msg: "waiting for carrier in Pod shop/web-2 to"},
		{name: "stowaway missing", bridge: b, nodes: without("gefyra/stowaway"), status: metav1.ConditionUnknown, reason: xds.ReasonWaiting, msg: "waiting for stowaway to"},
		{name: "an older bridge acknowledged", bridge: b, nodes: with("shop/web-1", has("0000")), status: metav1.ConditionUnknown, reason: xds.ReasonWaiting, msg: "shop/web-1"},
		{name: "a carrier rejected it", bridge: b, nodes: with("shop/web-2", rejected), status: metav1.ConditionFalse, reason: xds.ReasonRejected,
			msg: "carrier in Pod shop/web-2 rejected its configuration: cluster x: bad"},
		{name: "stowaway rejected it", bridge: b, nodes: with("gefyra/stowaway", rejected), status: metav1.ConditionFalse, reason: xds.ReasonRejected, msg: "stowaway rejected"},
		{name: "rejected a version without the bridge", bridge: b, nodes: with("shop/web-2", xds.NodeStatus{Rejected: "bad", RejectedVersion: "v2", RejectedBridges: []string{"shop/other"}}),
			status: metav1.ConditionUnknown, reason: xds.ReasonWaiting},
		{name: "rejected an unknown version", bridge: b, nodes: with("shop/web-2", xds.NodeStatus{Rejected: "bad"}), status: metav1.ConditionFalse, reason: xds.ReasonRejected},
		{name: "rejected something newer but runs the bridge as it is", bridge: b,
			nodes:  with("shop/web-2", xds.NodeStatus{Rejected: "bad", RejectedVersion: "v3", RejectedBridges: []string{"shop/b1"}, Bridges: map[string]string{"shop/b1": fp}}),
			status: metav1.ConditionTrue, reason: xds.ReasonAcknowledged},
		{name: "mount without carrier Pods", bridge: &m.Bridges[1], nodes: all, status: metav1.ConditionUnknown, reason: xds.ReasonWaiting, msg: "no Pod of mount empty runs carrier"},
		{name: "the TCP port's holder waits as usual", bridge: &m.Bridges[2], nodes: all, status: metav1.ConditionUnknown, reason: xds.ReasonWaiting},
		{name: "a TCP port another bridge holds", bridge: &m.Bridges[3], nodes: all, status: metav1.ConditionFalse, reason: xds.ReasonPortConflict,
			msg: "no carrier serves this bridge: port 5432 is bridged over TCP by shop/db-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, reason, msg := xds.Condition(m, tt.bridge, tt.nodes, "gefyra/stowaway")
			if st != tt.status || reason != tt.reason || !strings.Contains(msg, tt.msg) {
				t.Fatalf("got %s %s %q, want %s %s containing %q", st, reason, msg, tt.status, tt.reason, tt.msg)
			}
		})
	}
}

// views are replicas' node views that tests change.
type view struct {
	mu    sync.Mutex // guards nodes
	nodes map[string]xds.NodeStatus
}

func (v *view) get() map[string]xds.NodeStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]xds.NodeStatus{}
	for k, s := range v.nodes {
		out[k] = s
	}
	return out
}

func (v *view) set(id string, st xds.NodeStatus) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.nodes == nil {
		v.nodes = map[string]xds.NodeStatus{}
	}
	v.nodes[id] = st
}

// TestReadinessAcrossReplicas: carrier's stream is on one replica and
// stowaway's on another; the leader learns both through the Leases and
// sets the bridge's condition.
func TestReadinessAcrossReplicas(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	br := &gefyrav1.GefyraBridge{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ready"},
		Spec: gefyrav1.GefyraBridgeSpec{Client: "dev1",
			Target: gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "web", Container: "app"},
			Ports:  []gefyrav1.PortMapping{{Remote: 8080, Local: 8080}}},
	}
	if err := k8s.Create(ctx, br); err != nil {
		t.Fatal(err)
	}
	m := &model.Model{
		Mounts: []model.Mount{{Namespace: "shop", Name: "web", Pods: []model.Pod{{Namespace: "shop", Name: "web-1"}}}},
		Bridges: []model.Bridge{{Namespace: "shop", Name: "ready", Mount: "web", Client: "dev1", ClientAddress: netip.MustParseAddr("10.122.0.2"),
			Ports: []bridge.PortMapping{{Remote: 8080, Local: 8080}}}},
	}
	fp := translate.BridgeFingerprint(&m.Bridges[0])

	var mu sync.Mutex // guards cur
	cur := m
	currentModel := func() *model.Model { mu.Lock(); defer mu.Unlock(); return cur }

	leader, follower := &view{}, &view{}
	share := func(ctx context.Context, name string, v *view) (*xds.Share, chan struct{}) {
		s := xds.NewShare(xds.Share{Client: k8s, Reader: k8s, Namespace: "gefyra", Replica: name, Nodes: v.get, Renew: time.Second})
		done := make(chan struct{})
		go func() { s.Start(ctx); close(done) }()
		return s, done
	}
	leaderShare, _ := share(ctx, "replica-a", leader)
	fctx, stopFollower := context.WithCancel(ctx)
	defer stopFollower()
	followerShare, followerDone := share(fctx, "replica-b", follower)
	r := xds.NewReadiness(xds.Readiness{Client: k8s, Model: currentModel, Local: leader.get, Share: leaderShare,
		Interval: 50 * time.Millisecond})
	go r.Start(ctx)

	condition := func(want metav1.ConditionStatus, reason, msg string) func() error {
		return func() error {
			b := &gefyrav1.GefyraBridge{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(br), b); err != nil {
				return err
			}
			c := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionDataPlaneReady)
			if c == nil || c.Status != want || c.Reason != reason || !strings.Contains(c.Message, msg) {
				return fmt.Errorf("condition %+v", c)
			}
			if c.ObservedGeneration != b.Generation {
				return errors.New("observed generation is not the bridge's")
			}
			return nil
		}
	}
	eventually(t, 10*time.Second, "waiting for both", condition(metav1.ConditionUnknown, xds.ReasonWaiting, "carrier in Pod shop/web-1, stowaway"))

	now := time.Now()
	leader.set("shop/web-1", xds.NodeStatus{Version: "v1", Bridges: map[string]string{"shop/ready": fp}, Connected: true, Updated: now})
	r.Notify()
	eventually(t, 10*time.Second, "waiting for stowaway", condition(metav1.ConditionUnknown, xds.ReasonWaiting, "waiting for stowaway"))

	follower.set("gefyra/stowaway", xds.NodeStatus{Version: "s1", Bridges: map[string]string{"shop/ready": fp}, Connected: true, Updated: now})
	followerShare.Notify()
	eventually(t, 10*time.Second, "ready once the follower shared stowaway's acknowledgement", condition(metav1.ConditionTrue, xds.ReasonAcknowledged, "carrier in 1 Pod(s)"))

	var l coordinationv1.Lease
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: "gefyra-xds-replica-b"}, &l); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.Annotations[xds.AnnotationNodes], "gefyra/stowaway") || *l.Spec.HolderIdentity != "replica-b" {
		t.Fatalf("the follower's lease does not hold its view: %+v", l)
	}

	// The bridge changes and carrier, now on the follower, rejects it:
	// the newest status wins.
	m2 := *m
	m2.Bridges = []model.Bridge{m.Bridges[0]}
	m2.Bridges[0].Rules = []bridge.Rule{{Path: &bridge.PathMatch{Type: bridge.Prefix, Value: "/x"}}}
	mu.Lock()
	cur = &m2
	mu.Unlock()
	follower.set("shop/web-1", xds.NodeStatus{Version: "v1", Bridges: map[string]string{"shop/ready": fp}, Rejected: "listener port-8080: boom",
		RejectedVersion: "v2", RejectedBridges: []string{"shop/ready"}, Updated: now.Add(time.Second)})
	followerShare.Notify()
	eventually(t, 10*time.Second, "rejected", condition(metav1.ConditionFalse, xds.ReasonRejected, "carrier in Pod shop/web-1 rejected its configuration: listener port-8080: boom"))

	// The follower stops: its Lease goes, and with it what only it knew.
	stopFollower()
	<-followerDone
	eventually(t, 10*time.Second, "waiting again", condition(metav1.ConditionUnknown, xds.ReasonWaiting, "carrier in Pod shop/web-1, stowaway"))
}

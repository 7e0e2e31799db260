package model

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestSortIsDeterministic(t *testing.T) {
	a := func() *Model {
		return &Model{
			Mounts: []Mount{
				{Namespace: "b", Name: "m", Pods: []Pod{{Name: "p2"}, {Name: "p1"}},
					Ports:    []Port{{Port: 9000, Protocol: "TCP"}, {Port: 80, Protocol: "UDP"}, {Port: 80, Protocol: "TCP"}},
					Fallback: []netip.Addr{netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.1")}},
				{Namespace: "a", Name: "z"},
			},
			Bridges: []Bridge{{Namespace: "x", Name: "2"}, {Namespace: "x", Name: "1"}},
			Clients: []Client{{Name: "c"}, {Name: "a"}},
		}
	}
	m1, m2 := a(), a()
	m2.Bridges[0], m2.Bridges[1] = m2.Bridges[1], m2.Bridges[0]
	m2.Mounts[0], m2.Mounts[1] = m2.Mounts[1], m2.Mounts[0]
	m1.Sort()
	m2.Sort()
	if !reflect.DeepEqual(m1, m2) {
		t.Fatalf("two orders of one state sort differently:\n%+v\n%+v", m1, m2)
	}
	if m1.Mounts[0].Key() != "a/z" || m1.Bridges[0].Key() != "x/1" || m1.Clients[0].Name != "a" {
		t.Fatalf("not sorted: %+v", m1)
	}
	mt := m1.Mounts[1]
	if mt.Pods[0].Name != "p1" || mt.Fallback[0].String() != "10.0.0.1" ||
		mt.Ports[0] != (Port{Port: 80, Protocol: "TCP"}) || mt.Ports[2].Port != 9000 {
		t.Fatalf("mount contents not sorted: %+v", mt)
	}
	if got := (Pod{Namespace: "ns", Name: "p"}).NodeID(); got != "ns/p" {
		t.Fatalf("NodeID = %q", got)
	}
}

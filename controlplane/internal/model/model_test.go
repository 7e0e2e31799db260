package model

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"gefyra.dev/gefyra/internal/bridge"
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

func TestClaimPorts(t *testing.T) {
	http := func(port uint16) bridge.PortMapping { return bridge.PortMapping{Remote: port, Local: port} }
	tcp := func(port uint16) bridge.PortMapping {
		return bridge.PortMapping{Remote: port, Local: port, Protocol: bridge.ProtocolTCP}
	}
	rule := []bridge.Rule{{Headers: []bridge.HeaderMatch{{Name: "x-user", Type: bridge.Exact, Value: "a"}}}}
	b := func(name string, rules []bridge.Rule, ports ...bridge.PortMapping) *Bridge {
		return &Bridge{Namespace: "ns", Name: name, Ports: ports, Rules: rules}
	}
	tests := []struct {
		name    string
		bridges []*Bridge
		tcp     map[uint16]string // port -> owner's key
		refused map[string]string // key -> part of the reason
	}{
		{name: "http ports are shared", bridges: []*Bridge{b("a", rule, http(80)), b("b", rule, http(80)), b("c", nil, http(80))}},
		{name: "one bridge with both", bridges: []*Bridge{b("a", nil, http(80), tcp(5432))}, tcp: map[uint16]string{5432: "ns/a"}},
		{name: "a second bridge on a tcp port", bridges: []*Bridge{b("a", nil, tcp(5432)), b("b", nil, http(80), tcp(5432))},
			tcp: map[uint16]string{5432: "ns/a"}, refused: map[string]string{"ns/b": "port 5432 is bridged over TCP by ns/a"}},
		{name: "http on a tcp port", bridges: []*Bridge{b("a", nil, tcp(5432)), b("b", rule, http(5432))},
			tcp: map[uint16]string{5432: "ns/a"}, refused: map[string]string{"ns/b": "port 5432 is bridged over TCP by ns/a"}},
		{name: "tcp on an http port", bridges: []*Bridge{b("a", rule, http(80)), b("b", nil, tcp(80))},
			refused: map[string]string{"ns/b": "port 80 is bridged as HTTP by ns/a"}},
		{name: "rules with a tcp port", bridges: []*Bridge{b("a", rule, http(80), tcp(5432)), b("b", nil, tcp(5432))},
			tcp: map[uint16]string{5432: "ns/b"}, refused: map[string]string{"ns/a": "port 5432 is TCP and the bridge has rules"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ClaimPorts(tt.bridges)
			got := map[uint16]string{}
			for port, owner := range c.TCP {
				got[port] = owner.Key()
			}
			if len(got) != len(tt.tcp) {
				t.Errorf("TCP ports %v, want %v", got, tt.tcp)
			}
			for port, key := range tt.tcp {
				if got[port] != key {
					t.Errorf("TCP port %d is %q's, want %q's", port, got[port], key)
				}
			}
			if len(c.Refused) != len(tt.refused) {
				t.Errorf("refused %v, want %v", c.Refused, tt.refused)
			}
			for key, want := range tt.refused {
				if !strings.Contains(c.Refused[key], want) {
					t.Errorf("%s refused with %q, want %q", key, c.Refused[key], want)
				}
			}
		})
	}
}

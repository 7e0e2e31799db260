package v1alpha1

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"gefyra.dev/gefyra/internal/bridge"
)

// Model returns the bridge's ports and rules in the shared bridge model,
// validated as carrier will apply them (regular expressions included, which
// the API server cannot check). An empty protocol is HTTP.
func (s *GefyraBridgeSpec) Model() ([]bridge.PortMapping, []bridge.Rule, error) {
	ports := make([]bridge.PortMapping, 0, len(s.Ports))
	for _, p := range s.Ports {
		if p.Remote < 1 || p.Remote > 65535 || p.Local < 1 || p.Local > 65535 {
			return nil, nil, fmt.Errorf("port mapping %d:%d: ports must be 1-65535", p.Remote, p.Local)
		}
		var proto bridge.Protocol // HTTP
		switch p.Protocol {
		case "", ProtocolHTTP:
		case ProtocolTCP:
			proto = bridge.ProtocolTCP
		default:
			return nil, nil, fmt.Errorf("port mapping %d:%d: protocol %q: want HTTP or TCP", p.Remote, p.Local, p.Protocol)
		}
		ports = append(ports, bridge.PortMapping{Remote: uint16(p.Remote), Local: uint16(p.Local), Protocol: proto})
	}
	rules := make([]bridge.Rule, 0, len(s.Rules))
	for _, r := range s.Rules {
		var br bridge.Rule
		for _, h := range r.Headers {
			br.Headers = append(br.Headers, bridge.HeaderMatch{Name: h.Name, Type: matchType(h.Type, bridge.Exact), Value: h.Value})
		}
		if r.Path != nil {
			br.Path = &bridge.PathMatch{Type: matchType(r.Path.Type, bridge.Prefix), Value: r.Path.Value}
		}
		rules = append(rules, br)
	}
	if err := bridge.Validate(ports, rules); err != nil {
		return nil, nil, err
	}
	return ports, rules, nil
}

func matchType(t MatchType, def bridge.MatchType) bridge.MatchType {
	if t == "" {
		return def
	}
	return bridge.MatchType(t)
}

// SpecFromModel builds a bridge spec's ports and rules from the shared model
// (what the CLI parsed from its flags).
func SpecFromModel(ports []bridge.PortMapping, rules []bridge.Rule) ([]PortMapping, []Rule) {
	out := make([]PortMapping, 0, len(ports))
	for _, p := range ports {
		proto := ProtocolHTTP
		if p.IsTCP() {
			proto = ProtocolTCP
		}
		out = append(out, PortMapping{Remote: int32(p.Remote), Local: int32(p.Local), Protocol: proto})
	}
	var outRules []Rule
	for _, r := range rules {
		var o Rule
		for _, h := range r.Headers {
			o.Headers = append(o.Headers, HeaderMatch{Name: h.Name, Type: MatchType(h.Type), Value: h.Value})
		}
		if r.Path != nil {
			o.Path = &PathMatch{Type: MatchType(r.Path.Type), Value: r.Path.Value}
		}
		outRules = append(outRules, o)
	}
	return out, outRules
}

// MountName is the name of the mount the operator keeps for target: one per
// workload container, shared by every bridge on it.
// Names too long for an object name are shortened with a hash of the whole.
func MountName(t Target) string {
	name := strings.ToLower(string(t.Kind)) + "-" + t.Name + "-" + t.Container
	if len(name) <= 253 {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("%s-%08x", name[:253-9], h.Sum32())
}

// Validate checks a target as the API server would, for callers that build
// one before sending it.
func (t Target) Validate() error {
	switch t.Kind {
	case KindDeployment, KindStatefulSet, KindDaemonSet, KindPod:
	default:
		return fmt.Errorf("target kind %q: want Deployment, StatefulSet, DaemonSet or Pod", t.Kind)
	}
	if t.Name == "" {
		return errors.New("target: the workload name is empty")
	}
	if t.Container == "" {
		return errors.New("target: the container name is empty")
	}
	return nil
}

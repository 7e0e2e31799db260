// Package bridge is the model of a bridge that the CLI and the control plane
// share: which container ports of a cluster workload are carried to which
// local ports, and which HTTP requests go to the developer instead of the
// fallback. It parses the CLI's spellings of both (`--port 8155:8155`,
// `--port 5432:5432/tcp` for a port that is not HTTP, `--match-header
// name:value`, `--match-path /prefix`) and validates them the
// way the cluster's API server and carrier will, so a mistake is reported
// where it is typed.
package bridge

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Protocol says how carrier carries a bridged port's traffic.
type Protocol string

// The protocols of a bridged port. The zero value means ProtocolHTTP, and
// is how the parser and the cluster's model spell it.
const (
	// ProtocolHTTP routes each request (HTTP/1.1, h2c, WebSocket) by the
	// rules of the bridges on the port; other requests go to the fallback.
	ProtocolHTTP Protocol = "HTTP"
	// ProtocolTCP carries whole connections, byte for byte, to the one
	// bridge of the port: for databases and anything that is not HTTP.
	// No rule can pick a connection, so a bridge with a TCP port has no
	// rules and no other bridge may take the port.
	ProtocolTCP Protocol = "TCP"
)

// PortMapping carries the workload container's port Remote to port Local on
// the developer's side, as Protocol says (empty: HTTP).
type PortMapping struct {
	Remote   uint16
	Local    uint16
	Protocol Protocol
}

// IsTCP reports whether the port carries whole TCP connections.
func (p PortMapping) IsTCP() bool { return p.Protocol == ProtocolTCP }

// String spells the mapping as ParsePortMapping reads it: "remote:local",
// with "/tcp" for a TCP port.
func (p PortMapping) String() string {
	s := strconv.Itoa(int(p.Remote)) + ":" + strconv.Itoa(int(p.Local))
	switch p.Protocol {
	case "", ProtocolHTTP:
		return s
	case ProtocolTCP:
		return s + "/tcp"
	default:
		return s + "/" + string(p.Protocol)
	}
}

// portSyntax is the hint every port mapping error ends with.
const portSyntax = "want remote:local[/tcp], e.g. 8155:8155 or 5432:5432/tcp"

// ParsePortMapping reads "remote:local" (e.g. "8155:8155"); a single port
// "8155" means the same port on both sides. A suffix "/tcp" carries whole
// TCP connections instead of routing HTTP requests ("5432:5432/tcp"); "/http"
// is the default. The protocol is not case-sensitive.
func ParsePortMapping(s string) (PortMapping, error) {
	ports, proto, hasProto := strings.Cut(s, "/")
	var protocol Protocol
	if hasProto {
		switch strings.ToUpper(proto) {
		case "HTTP":
		case "TCP":
			protocol = ProtocolTCP
		case "UDP", "SCTP":
			return PortMapping{}, fmt.Errorf("port mapping %q: %s ports cannot be bridged, only TCP (HTTP or raw TCP)", s, strings.ToUpper(proto))
		case "":
			return PortMapping{}, fmt.Errorf("port mapping %q: the protocol after / is missing (%s)", s, portSyntax)
		default:
			return PortMapping{}, fmt.Errorf("port mapping %q: unknown protocol %q: want tcp or http (%s)", s, proto, portSyntax)
		}
	}
	remote, local, found := strings.Cut(ports, ":")
	if !found {
		local = remote
	}
	r, err := parsePort(remote)
	if err != nil {
		return PortMapping{}, fmt.Errorf("port mapping %q: remote port: %w (%s)", s, err, portSyntax)
	}
	l, err := parsePort(local)
	if err != nil {
		return PortMapping{}, fmt.Errorf("port mapping %q: local port: %w (%s)", s, err, portSyntax)
	}
	return PortMapping{Remote: r, Local: l, Protocol: protocol}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("missing")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%s is out of range 1-65535", s)
	}
	return uint16(n), nil
}

// ParsePortMappings parses each of specs and checks that no remote port is
// carried twice.
func ParsePortMappings(specs []string) ([]PortMapping, error) {
	out := make([]PortMapping, 0, len(specs))
	for _, s := range specs {
		p, err := ParsePortMapping(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if err := ValidatePorts(out); err != nil {
		return nil, err
	}
	return out, nil
}

// MaxPorts is the most port mappings one bridge may carry.
const MaxPorts = 16

// ValidatePorts checks a bridge's port mappings: at least one, at most
// MaxPorts, ports in range, a known protocol and each remote port once.
func ValidatePorts(ports []PortMapping) error {
	if len(ports) == 0 {
		return errors.New("a bridge needs at least one port mapping (remote:local)")
	}
	if len(ports) > MaxPorts {
		return fmt.Errorf("%d port mappings: a bridge carries at most %d", len(ports), MaxPorts)
	}
	seen := make(map[uint16]bool, len(ports))
	for _, p := range ports {
		if p.Remote == 0 || p.Local == 0 {
			return fmt.Errorf("port mapping %s: ports must be 1-65535", p)
		}
		switch p.Protocol {
		case "", ProtocolHTTP, ProtocolTCP:
		default:
			return fmt.Errorf("port mapping %d:%d: protocol %q: want HTTP or TCP", p.Remote, p.Local, p.Protocol)
		}
		if seen[p.Remote] {
			return fmt.Errorf("remote port %d is mapped twice", p.Remote)
		}
		seen[p.Remote] = true
	}
	return nil
}

// MatchType says how a header or path value is compared.
type MatchType string

// The match types; their names are those of the Kubernetes Gateway API.
const (
	Exact             MatchType = "Exact"
	Prefix            MatchType = "Prefix"
	RegularExpression MatchType = "RegularExpression"
)

func (t MatchType) valid() bool {
	return t == Exact || t == Prefix || t == RegularExpression
}

// MaxValueLen bounds a header value, path or regular expression.
const MaxValueLen = 1024

// HeaderMatch matches requests whose header Name (compared without regard to
// case, as HTTP does) has a value matching Value.
type HeaderMatch struct {
	Name  string
	Type  MatchType
	Value string
}

// PathMatch matches requests whose URL path matches Value.
type PathMatch struct {
	Type  MatchType
	Value string
}

// Rule selects the requests that go to the developer: all of its conditions
// must hold. A rule with no condition is invalid; a bridge with no rules
// takes all traffic. A request matches a bridge when any of its rules does.
type Rule struct {
	Headers []HeaderMatch
	Path    *PathMatch
}

// ParseHeaderMatch reads the CLI's "name:value" into an exact header match.
func ParseHeaderMatch(s string) (HeaderMatch, error) {
	name, value, found := strings.Cut(s, ":")
	if !found {
		return HeaderMatch{}, fmt.Errorf("header match %q: want name:value, e.g. x-user:john", s)
	}
	h := HeaderMatch{Name: strings.TrimSpace(name), Type: Exact, Value: strings.TrimSpace(value)}
	if err := h.Validate(); err != nil {
		return HeaderMatch{}, err
	}
	return h, nil
}

// ParsePathMatch reads the CLI's path prefix, e.g. "/items".
func ParsePathMatch(s string) (PathMatch, error) {
	p := PathMatch{Type: Prefix, Value: s}
	if err := p.Validate(); err != nil {
		return PathMatch{}, err
	}
	return p, nil
}

// Validate checks the header match.
func (h HeaderMatch) Validate() error {
	if h.Name == "" {
		return errors.New("header match: the header name is empty")
	}
	if len(h.Name) > 256 {
		return fmt.Errorf("header match: header name of %d bytes is too long (at most 256)", len(h.Name))
	}
	for i := 0; i < len(h.Name); i++ {
		if !isTokenChar(h.Name[i]) {
			return fmt.Errorf("header match: %q is not a valid HTTP header name (character %q)", h.Name, h.Name[i])
		}
	}
	if !h.Type.valid() {
		return fmt.Errorf("header match %s: type %q: want Exact, Prefix or RegularExpression", h.Name, h.Type)
	}
	return validateValue("header "+h.Name, h.Type, h.Value)
}

// Validate checks the path match.
func (p PathMatch) Validate() error {
	if !p.Type.valid() {
		return fmt.Errorf("path match: type %q: want Exact, Prefix or RegularExpression", p.Type)
	}
	if p.Type != RegularExpression && !strings.HasPrefix(p.Value, "/") {
		return fmt.Errorf("path match %q: a path must start with /", p.Value)
	}
	return validateValue("path", p.Type, p.Value)
}

func validateValue(what string, t MatchType, v string) error {
	if len(v) > MaxValueLen {
		return fmt.Errorf("%s match: value of %d bytes is too long (at most %d)", what, len(v), MaxValueLen)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return fmt.Errorf("%s match: value contains a control character (CR, LF or NUL)", what)
		}
	}
	if t == RegularExpression {
		if v == "" {
			return fmt.Errorf("%s match: the regular expression is empty", what)
		}
		if _, err := regexp.Compile(v); err != nil {
			return fmt.Errorf("%s match: invalid regular expression: %w", what, err)
		}
	}
	return nil
}

// Validate checks the rule: at least one condition, each valid.
func (r Rule) Validate() error {
	if len(r.Headers) == 0 && r.Path == nil {
		return errors.New("a rule needs at least one header or path match (leave out rules to take all traffic)")
	}
	for _, h := range r.Headers {
		if err := h.Validate(); err != nil {
			return err
		}
	}
	if r.Path != nil {
		return r.Path.Validate()
	}
	return nil
}

// MaxRules bounds the rules of one bridge.
const MaxRules = 16

// ValidateRules checks every rule.
func ValidateRules(rules []Rule) error {
	if len(rules) > MaxRules {
		return fmt.Errorf("%d rules: a bridge has at most %d", len(rules), MaxRules)
	}
	for i, r := range rules {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("rule %d: %w", i+1, err)
		}
	}
	return nil
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110 5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// Validate checks a whole bridge: its ports, its rules, and that rules and
// TCP ports do not meet. Rules select HTTP requests; a TCP port carries
// whole connections, where there is no request to select, so a bridge with
// a TCP port takes all of its connections and has no rules.
func Validate(ports []PortMapping, rules []Rule) error {
	if err := ValidatePorts(ports); err != nil {
		return err
	}
	if err := ValidateRules(rules); err != nil {
		return err
	}
	if len(rules) == 0 {
		return nil
	}
	for _, p := range ports {
		if p.IsTCP() {
			return fmt.Errorf("port %d is TCP: header and path rules select HTTP requests and cannot pick a TCP connection; bridge the TCP port in a bridge without rules", p.Remote)
		}
	}
	return nil
}

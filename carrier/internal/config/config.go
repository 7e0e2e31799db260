// Package config is carrier's compiled, immutable configuration: the
// listeners, route tables and clusters that Compile builds from Envoy xDS
// resources, and the routing decision made on them.
//
// A *Config is never changed after Compile returns it; carrier swaps whole
// configs atomically, so a request keeps the config it started with.
//
// # Mapping from xDS
//
// Listener: its socket address is where carrier listens. It has one filter
// chain whose one network filter is either an HttpConnectionManager
// (envoy.filters.network.http_connection_manager; routes inline in
// route_config or by name over RDS) or a TcpProxy
// (envoy.filters.network.tcp_proxy; one cluster). The listener's metadata
// filter_metadata["gefyra"]["fallback_cluster"] names the fallback cluster
// of that port: where requests go when no route matches, and where a
// bridged request or connection goes when its bridge cannot be reached.
//
// RouteConfiguration: virtual hosts chosen by domain (exact, "*.suffix",
// "prefix.*", "*"), routes tried in order, first match wins. A match is the
// path (prefix, exact path, safe_regex, path_separated_prefix; optional
// case_sensitive=false) and any number of HeaderMatchers, all ANDed. The
// action is either a route to a cluster (timeout: time to the response
// headers, unset = 15s, 0 = none; idle_timeout: the longest pause while
// streaming) or a direct_response (used to answer health checks locally).
//
// Cluster: endpoints come from load_assignment (STATIC, STRICT_DNS,
// LOGICAL_DNS) or, for EDS, from the ClusterLoadAssignment named by
// eds_cluster_config.service_name (or the cluster's name). A cluster whose
// metadata has filter_metadata["gefyra"] is a bridge cluster: its endpoints
// are stowaway's relay address and carrier opens each upstream connection
// with the internal/wire preamble built from these keys:
//
//	bridge     string  the GefyraBridge, "namespace/name"
//	port       number  the remote port of the bridge's port mapping
//	credential string  the control plane's short-lived JWT
//
// Requests of HTTP/2 clients go upstream over HTTP/2 (h2c, prior
// knowledge) when the cluster's typed_extension_protocol_options
// ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] say
// explicit_http_config.http2_protocol_options or
// use_downstream_protocol_config (gRPC needs this), and over HTTP/1.1
// otherwise. Requests of HTTP/1.1 clients always go over HTTP/1.1.
//
// Health checks: kubelet's HTTP probes are answered locally by a route
// with a direct_response (typically path exact "/healthz" with a
// "user-agent" prefix "kube-probe/" header match, placed first). A TCP
// probe only needs the port to accept: any listener on it does (an
// HttpConnectionManager whose routes are only direct responses is the
// simplest). Exec probes never reach the proxy (see multicall).
//
// What would change behaviour and is not implemented (weighted clusters,
// rewrites, redirects, query parameter matchers, ...) is rejected with an
// error naming it, so the control plane gets a NACK instead of a carrier
// that silently routes differently. References to resources not yet
// received (a RouteConfiguration over RDS, a cluster) are not errors:
// until they arrive the traffic concerned goes to the fallback.
package config

import (
	"bytes"
	"regexp"
	"sync/atomic"
	"time"

	"gefyra.dev/gefyra/carrier/internal/metrics"
)

// Config is one compiled configuration.
type Config struct {
	Listeners []*Listener // sorted by name
	Clusters  map[string]*Cluster
}

// Listener returns the listener named name, or nil.
func (c *Config) Listener(name string) *Listener {
	if c == nil {
		return nil
	}
	for _, l := range c.Listeners {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// Codec is the HTTP version a listener accepts.
type Codec int

// Codecs, as in HttpConnectionManager.codec_type.
const (
	CodecAuto Codec = iota // HTTP/1.1 or HTTP/2 with prior knowledge, told apart by the preface
	CodecHTTP1
	CodecHTTP2
)

// Listener is one port carrier listens on.
type Listener struct {
	Name    string
	Address string // host:port to listen on

	HTTP *HTTP // exactly one of HTTP and TCP is set
	TCP  *TCP

	FallbackName string
	Fallback     *Cluster // nil when not configured or not received

	// NoRouteStats counts requests answered without a route (503s).
	NoRouteStats *metrics.Series
}

// HTTP is a listener's HTTP connection manager.
type HTTP struct {
	Codec           Codec
	RouteConfigName string      // for RDS; "" when inline
	Routes          *RouteTable // nil while an RDS RouteConfiguration is pending
	// IdleTimeout closes a client connection with no request in flight.
	IdleTimeout time.Duration
	// RequestHeadersTimeout bounds reading a request's headers.
	RequestHeadersTimeout time.Duration
}

// TCP is a listener's TCP proxy.
type TCP struct {
	ClusterName string
	Cluster     *Cluster // nil while not received
	IdleTimeout time.Duration
	Stats       *metrics.Series // for the cluster, bridge label set if a bridge
	// FallbackStats counts connections that went to the fallback.
	FallbackStats *metrics.Series
	StatName      string
}

// RouteTable is a compiled RouteConfiguration.
type RouteTable struct {
	Name         string
	VirtualHosts []*VirtualHost
	exact        map[string]*VirtualHost
	suffixes     []domainVH // longest suffix first
	prefixes     []domainVH // longest prefix first
	star         *VirtualHost
}

type domainVH struct {
	s  string
	vh *VirtualHost
}

// VirtualHost is a set of routes for some domains.
type VirtualHost struct {
	Name   string
	Routes []*Route
}

// Route is one route: a match and what to do with it.
type Route struct {
	Name  string
	Match Match

	ClusterName string
	Cluster     *Cluster        // nil for direct responses and while a cluster is missing
	Direct      *DirectResponse // set for direct_response routes

	Timeout     time.Duration // to the response headers; 0 means none
	IdleTimeout time.Duration // longest pause while streaming; 0 means none

	// Stats of requests served by this route's own cluster (or its direct
	// response; its bridge label is the cluster's bridge, and it counts the
	// route's fallbacks too), and of requests that went to the fallback.
	Stats, FallbackStats *metrics.Series
}

// DirectResponse is a response carrier makes itself.
type DirectResponse struct {
	Status int
	Body   []byte
}

// Bridge is what carrier tells stowaway about a bridged connection.
type Bridge struct {
	Name       string // namespace/name
	Port       uint16
	Credential []byte
}

// Protocol is the HTTP version spoken upstream.
type Protocol int

// Upstream protocols.
const (
	ProtocolHTTP1 Protocol = iota
	ProtocolHTTP2
	ProtocolDownstream // same as the client
)

// Cluster is a set of endpoints.
type Cluster struct {
	Name           string
	Endpoints      []string // host:port
	ConnectTimeout time.Duration
	Bridge         *Bridge // nil for plain clusters
	Protocol       Protocol
	next           atomic.Uint32
}

// BridgeName is the bridge's name, "" for plain clusters.
func (c *Cluster) BridgeName() string {
	if c == nil || c.Bridge == nil {
		return ""
	}
	return c.Bridge.Name
}

// Endpoint picks the next endpoint round robin; "" if there is none.
func (c *Cluster) Endpoint() string {
	switch len(c.Endpoints) {
	case 0:
		return ""
	case 1:
		return c.Endpoints[0]
	}
	return c.Endpoints[int(c.next.Add(1)-1)%len(c.Endpoints)]
}

// Request is what a route matches on. Names passed to Header are
// lower-case; a header that occurs more than once reads as its values
// joined with ",".
type Request interface {
	Method() []byte
	Host() []byte
	Path() []byte // the request target in origin form, query included
	Header(lowerName string) (value []byte, ok bool)
}

// Select returns the virtual host for a Host header value, or nil.
func (t *RouteTable) Select(host []byte) *VirtualHost {
	if t == nil {
		return nil
	}
	if len(t.exact) > 0 || len(t.suffixes) > 0 || len(t.prefixes) > 0 {
		var buf [256]byte
		h := host
		if len(host) <= len(buf) {
			h = buf[:len(host)]
			for i, c := range host {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				h[i] = c
			}
		}
		if vh := t.exact[string(h)]; vh != nil {
			return vh
		}
		if i := bytes.LastIndexByte(h, ':'); i > 0 && bytes.IndexByte(h[i:], ']') < 0 {
			if vh := t.exact[string(h[:i])]; vh != nil {
				return vh
			}
		}
		for _, d := range t.suffixes {
			if len(h) > len(d.s) && bytes.HasSuffix(h, []byte(d.s)) {
				return d.vh
			}
		}
		for _, d := range t.prefixes {
			if len(h) > len(d.s) && bytes.HasPrefix(h, []byte(d.s)) {
				return d.vh
			}
		}
	}
	return t.star
}

// Route returns the first route of the table that matches r, or nil.
func (t *RouteTable) Route(r Request) *Route {
	vh := t.Select(r.Host())
	if vh == nil {
		return nil
	}
	for _, rt := range vh.Routes {
		if rt.Match.Matches(r) {
			return rt
		}
	}
	return nil
}

// PathKind is how a route matches the path.
type PathKind int

// Path match kinds.
const (
	PathPrefix          PathKind = iota // the path (query included) starts with Value
	PathExact                           // the path without the query is Value
	PathRegex                           // the path without the query matches Regex in full
	PathSeparatedPrefix                 // the path without the query is Value or starts with Value + "/"
)

// Match is a compiled RouteMatch.
type Match struct {
	PathKind      PathKind
	Value         []byte // lower-case when !CaseSensitive
	Regex         *regexp.Regexp
	CaseSensitive bool
	Headers       []HeaderMatcher
}

// Matches reports whether r matches every condition.
func (m *Match) Matches(r Request) bool {
	if !m.matchPath(r.Path()) {
		return false
	}
	for i := range m.Headers {
		if !m.Headers[i].Matches(r) {
			return false
		}
	}
	return true
}

func stripQuery(p []byte) []byte {
	if i := bytes.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

func (m *Match) matchPath(p []byte) bool {
	switch m.PathKind {
	case PathPrefix:
		if len(m.Value) == 0 {
			return true
		}
		if len(p) < len(m.Value) {
			return false
		}
		return equal(p[:len(m.Value)], m.Value, !m.CaseSensitive)
	case PathExact:
		return equal(stripQuery(p), m.Value, !m.CaseSensitive)
	case PathRegex:
		return m.Regex.Match(stripQuery(p))
	case PathSeparatedPrefix:
		p = stripQuery(p)
		if len(p) < len(m.Value) || !equal(p[:len(m.Value)], m.Value, !m.CaseSensitive) {
			return false
		}
		return len(p) == len(m.Value) || p[len(m.Value)] == '/'
	}
	return false
}

// equal compares a to b; with fold, b must already be lower-case.
func equal(a, b []byte, fold bool) bool {
	if len(a) != len(b) {
		return false
	}
	if !fold {
		return string(a) == string(b)
	}
	for i := range a {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != b[i] {
			return false
		}
	}
	return true
}

// StringKind is how a StringMatcher compares.
type StringKind int

// String match kinds.
const (
	StringExact StringKind = iota
	StringPrefix
	StringSuffix
	StringContains
	StringRegex // the whole value must match
)

// StringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type StringMatcher struct {
	Kind       StringKind
	Value      []byte // lower-case when IgnoreCase
	IgnoreCase bool
	Regex      *regexp.Regexp
}

// Matches reports whether v matches.
func (s *StringMatcher) Matches(v []byte) bool {
	switch s.Kind {
	case StringExact:
		return equal(v, s.Value, s.IgnoreCase)
	case StringPrefix:
		return len(v) >= len(s.Value) && equal(v[:len(s.Value)], s.Value, s.IgnoreCase)
	case StringSuffix:
		return len(v) >= len(s.Value) && equal(v[len(v)-len(s.Value):], s.Value, s.IgnoreCase)
	case StringContains:
		if !s.IgnoreCase {
			return bytes.Contains(v, s.Value)
		}
		for i := 0; i+len(s.Value) <= len(v); i++ {
			if equal(v[i:i+len(s.Value)], s.Value, true) {
				return true
			}
		}
		return false
	case StringRegex:
		return s.Regex.Match(v)
	}
	return false
}

// HeaderMatcher is a compiled route HeaderMatcher.
type HeaderMatcher struct {
	Name string // lower-case; ":authority", ":path" and ":method" read the request line
	// Present set: match on presence (PresentValue says which) instead of
	// the value.
	Present      bool
	PresentValue bool
	String       StringMatcher
	Invert       bool
	MissingEmpty bool // treat_missing_header_as_empty
}

// Matches follows Envoy: a missing header fails every value matcher, even
// an inverted one, unless MissingEmpty.
func (h *HeaderMatcher) Matches(r Request) bool {
	var v []byte
	ok := true
	switch h.Name {
	case ":authority":
		v = r.Host()
	case ":path":
		v = r.Path()
	case ":method":
		v = r.Method()
	default:
		v, ok = r.Header(h.Name)
	}
	if !ok && !h.MissingEmpty {
		if h.Invert {
			return h.Present && h.PresentValue
		}
		return h.Present && !h.PresentValue
	}
	var m bool
	if h.Present {
		m = h.PresentValue
	} else {
		m = h.String.Matches(v)
	}
	return m != h.Invert
}

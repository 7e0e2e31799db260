package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpupv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/internal/wire"
)

// Type URLs of the resources carrier consumes.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// Types lists the type URLs carrier subscribes to.
var Types = []string{ClusterType, EndpointType, ListenerType, RouteType}

// MetadataKey is the filter_metadata key carrier reads.
const MetadataKey = "gefyra"

// Defaults, as in Envoy where Envoy has one.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultRouteTimeout   = 15 * time.Second
	DefaultIdleTimeout    = time.Hour
	DefaultHeadersTimeout = 0 // none, as in Envoy
)

// Compile builds a Config from xDS resources keyed by type URL. m, if not
// nil, provides the metrics handles hung on routes. The error names the
// offending resource.
func Compile(res map[string][]proto.Message, m *metrics.Metrics) (*Config, error) {
	cfg := &Config{Clusters: map[string]*Cluster{}}

	cla := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, r := range res[EndpointType] {
		c, ok := r.(*endpointv3.ClusterLoadAssignment)
		if !ok {
			return nil, fmt.Errorf("endpoint resource of type %T", r)
		}
		cla[c.GetClusterName()] = c
	}
	for _, r := range res[ClusterType] {
		c, ok := r.(*clusterv3.Cluster)
		if !ok {
			return nil, fmt.Errorf("cluster resource of type %T", r)
		}
		cl, err := compileCluster(c, cla)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		if cfg.Clusters[cl.Name] != nil {
			return nil, fmt.Errorf("cluster %q defined twice", cl.Name)
		}
		cfg.Clusters[cl.Name] = cl
	}

	tables := map[string]*RouteTable{}
	for _, r := range res[RouteType] {
		rc, ok := r.(*routev3.RouteConfiguration)
		if !ok {
			return nil, fmt.Errorf("route resource of type %T", r)
		}
		t, err := compileRoutes(rc, cfg.Clusters, m)
		if err != nil {
			return nil, fmt.Errorf("route configuration %q: %w", rc.GetName(), err)
		}
		if tables[t.Name] != nil {
			return nil, fmt.Errorf("route configuration %q defined twice", t.Name)
		}
		tables[t.Name] = t
	}

	addrs := map[string]string{}
	for _, r := range res[ListenerType] {
		l, ok := r.(*listenerv3.Listener)
		if !ok {
			return nil, fmt.Errorf("listener resource of type %T", r)
		}
		cl, err := compileListener(l, cfg.Clusters, tables, m)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		if cfg.Listener(cl.Name) != nil {
			return nil, fmt.Errorf("listener %q defined twice", cl.Name)
		}
		if other, dup := addrs[cl.Address]; dup && !strings.HasSuffix(cl.Address, ":0") {
			return nil, fmt.Errorf("listeners %q and %q both listen on %s", other, cl.Name, cl.Address)
		}
		addrs[cl.Address] = cl.Name
		cfg.Listeners = append(cfg.Listeners, cl)
	}
	sort.Slice(cfg.Listeners, func(i, j int) bool { return cfg.Listeners[i].Name < cfg.Listeners[j].Name })
	return cfg, nil
}

func duration(d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, err
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, fmt.Errorf("negative duration %v", v)
	}
	return v, nil
}

func gefyraMetadata(md *corev3.Metadata) (map[string]any, bool) {
	s := md.GetFilterMetadata()[MetadataKey]
	if s == nil {
		return nil, false
	}
	return s.AsMap(), true
}

func compileCluster(c *clusterv3.Cluster, cla map[string]*endpointv3.ClusterLoadAssignment) (*Cluster, error) {
	if c.GetName() == "" {
		return nil, errors.New("no name")
	}
	cl := &Cluster{Name: c.GetName()}
	var err error
	if cl.ConnectTimeout, err = duration(c.GetConnectTimeout(), DefaultConnectTimeout); err != nil {
		return nil, fmt.Errorf("connect_timeout: %w", err)
	}
	if cl.ConnectTimeout == 0 {
		cl.ConnectTimeout = DefaultConnectTimeout
	}
	var assignment *endpointv3.ClusterLoadAssignment
	if ct := c.GetClusterType(); ct != nil {
		return nil, fmt.Errorf("custom cluster type %q is not supported", ct.GetName())
	}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		assignment = c.GetLoadAssignment()
	case clusterv3.Cluster_EDS:
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		assignment = cla[name] // absent: no endpoints until it arrives
	default:
		return nil, fmt.Errorf("cluster type %v is not supported", c.GetType())
	}
	for _, loc := range assignment.GetEndpoints() {
		for _, ep := range loc.GetLbEndpoints() {
			switch ep.GetHealthStatus() {
			case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
				continue
			}
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, errors.New("an endpoint has no socket address")
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return nil, fmt.Errorf("endpoint %s: only TCP is supported", sa.GetAddress())
			}
			port := sa.GetPortValue()
			if sa.GetAddress() == "" || port == 0 || port > 65535 {
				return nil, fmt.Errorf("endpoint %q port %d: want an address and a port 1..65535", sa.GetAddress(), port)
			}
			cl.Endpoints = append(cl.Endpoints, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(port))))
		}
	}

	if c.GetHttp2ProtocolOptions() != nil {
		cl.Protocol = ProtocolHTTP2
	}
	if a := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; a != nil {
		var o httpupv3.HttpProtocolOptions
		if err := a.UnmarshalTo(&o); err != nil {
			return nil, fmt.Errorf("HttpProtocolOptions: %w", err)
		}
		switch {
		case o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil:
			cl.Protocol = ProtocolHTTP2
		case o.GetExplicitHttpConfig().GetHttp3ProtocolOptions() != nil:
			return nil, errors.New("upstream HTTP/3 is not supported")
		case o.GetUseDownstreamProtocolConfig() != nil:
			cl.Protocol = ProtocolDownstream
		case o.GetAutoConfig() != nil:
			return nil, errors.New("auto_config needs TLS/ALPN, which carrier does not speak upstream")
		}
	}

	if md, ok := gefyraMetadata(c.GetMetadata()); ok {
		b := &Bridge{}
		name, _ := md["bridge"].(string)
		if err := wire.ValidateBridge(name); err != nil {
			return nil, fmt.Errorf("metadata %s.bridge: %w", MetadataKey, err)
		}
		b.Name = name
		port, _ := md["port"].(float64)
		if port < 1 || port > 65535 || port != float64(int(port)) {
			return nil, fmt.Errorf("metadata %s.port %v: want a port number 1..65535", MetadataKey, md["port"])
		}
		b.Port = uint16(port)
		cred, _ := md["credential"].(string)
		if cred == "" || len(cred) > wire.MaxCredentialLen {
			return nil, fmt.Errorf("metadata %s.credential: want 1..%d bytes", MetadataKey, wire.MaxCredentialLen)
		}
		b.Credential = []byte(cred)
		cl.Bridge = b
	}
	return cl, nil
}

func compileRoutes(rc *routev3.RouteConfiguration, clusters map[string]*Cluster, m *metrics.Metrics) (*RouteTable, error) {
	t := &RouteTable{Name: rc.GetName(), exact: map[string]*VirtualHost{}}
	seen := map[string]bool{}
	for _, vh := range rc.GetVirtualHosts() {
		v := &VirtualHost{Name: vh.GetName()}
		if len(vh.GetDomains()) == 0 {
			return nil, fmt.Errorf("virtual host %q has no domains", vh.GetName())
		}
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			if seen[d] {
				return nil, fmt.Errorf("domain %q is in two virtual hosts", d)
			}
			seen[d] = true
			switch {
			case d == "*":
				t.star = v
			case strings.HasPrefix(d, "*"):
				t.suffixes = append(t.suffixes, domainVH{d[1:], v})
			case strings.HasSuffix(d, "*"):
				t.prefixes = append(t.prefixes, domainVH{d[:len(d)-1], v})
			case strings.Contains(d, "*"):
				return nil, fmt.Errorf("domain %q: a wildcard must be first or last", d)
			default:
				t.exact[d] = v
			}
		}
		for i, r := range vh.GetRoutes() {
			cr, err := compileRoute(r, clusters, m)
			if err != nil {
				name := r.GetName()
				if name == "" {
					name = "#" + strconv.Itoa(i)
				}
				return nil, fmt.Errorf("virtual host %q route %s: %w", vh.GetName(), name, err)
			}
			v.Routes = append(v.Routes, cr)
		}
		t.VirtualHosts = append(t.VirtualHosts, v)
	}
	sort.SliceStable(t.suffixes, func(i, j int) bool { return len(t.suffixes[i].s) > len(t.suffixes[j].s) })
	sort.SliceStable(t.prefixes, func(i, j int) bool { return len(t.prefixes[i].s) > len(t.prefixes[j].s) })
	return t, nil
}

func compileRoute(r *routev3.Route, clusters map[string]*Cluster, m *metrics.Metrics) (*Route, error) {
	cr := &Route{Name: r.GetName()}
	mt := r.GetMatch()
	if mt == nil {
		return nil, errors.New("no match")
	}
	switch {
	case len(mt.GetQueryParameters()) > 0:
		return nil, errors.New("query_parameters matching is not supported")
	case mt.GetRuntimeFraction() != nil:
		return nil, errors.New("runtime_fraction is not supported")
	case mt.GetGrpc() != nil:
		return nil, errors.New("grpc matching is not supported")
	case mt.GetTlsContext() != nil:
		return nil, errors.New("tls_context matching is not supported")
	case len(mt.GetDynamicMetadata()) > 0 || len(mt.GetFilterState()) > 0 || len(mt.GetCookies()) > 0:
		return nil, errors.New("dynamic_metadata, filter_state and cookie matching are not supported")
	}
	cr.Match.CaseSensitive = mt.GetCaseSensitive() == nil || mt.GetCaseSensitive().GetValue()
	fold := func(s string) []byte {
		if !cr.Match.CaseSensitive {
			s = strings.ToLower(s)
		}
		return []byte(s)
	}
	switch p := mt.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		cr.Match.PathKind, cr.Match.Value = PathPrefix, fold(p.Prefix)
	case *routev3.RouteMatch_Path:
		cr.Match.PathKind, cr.Match.Value = PathExact, fold(p.Path)
	case *routev3.RouteMatch_PathSeparatedPrefix:
		if strings.HasSuffix(p.PathSeparatedPrefix, "/") || strings.ContainsAny(p.PathSeparatedPrefix, "?#") {
			return nil, fmt.Errorf("path_separated_prefix %q must not end in '/' or hold '?' or '#'", p.PathSeparatedPrefix)
		}
		cr.Match.PathKind, cr.Match.Value = PathSeparatedPrefix, fold(p.PathSeparatedPrefix)
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return nil, fmt.Errorf("path safe_regex: %w", err)
		}
		cr.Match.PathKind, cr.Match.Regex = PathRegex, re
	case nil:
		return nil, errors.New("match has no path specifier (prefix, path, safe_regex or path_separated_prefix)")
	default:
		return nil, fmt.Errorf("path specifier %T is not supported", p)
	}
	for _, h := range mt.GetHeaders() {
		hm, err := compileHeader(h)
		if err != nil {
			return nil, fmt.Errorf("header matcher %q: %w", h.GetName(), err)
		}
		cr.Match.Headers = append(cr.Match.Headers, hm)
	}

	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		ra := a.Route
		switch {
		case ra.GetCluster() != "":
			cr.ClusterName = ra.GetCluster()
		default:
			return nil, errors.New("route action must name one cluster (weighted_clusters, cluster_header and plugins are not supported)")
		}
		switch {
		case ra.GetPrefixRewrite() != "" || ra.GetRegexRewrite() != nil || ra.GetPathRewrite() != "" || ra.GetPathRewritePolicy() != nil:
			return nil, errors.New("path rewrites are not supported")
		case ra.GetHostRewriteSpecifier() != nil:
			return nil, errors.New("host rewrites are not supported")
		}
		var err error
		if cr.Timeout, err = duration(ra.GetTimeout(), DefaultRouteTimeout); err != nil {
			return nil, fmt.Errorf("timeout: %w", err)
		}
		if cr.IdleTimeout, err = duration(ra.GetIdleTimeout(), 0); err != nil {
			return nil, fmt.Errorf("idle_timeout: %w", err)
		}
		cr.Cluster = clusters[cr.ClusterName]
	case *routev3.Route_DirectResponse:
		st := int(a.DirectResponse.GetStatus())
		if st < 200 || st > 599 {
			return nil, fmt.Errorf("direct_response status %d: want 200..599", st)
		}
		d := &DirectResponse{Status: st}
		if b := a.DirectResponse.GetBody(); b != nil {
			switch {
			case b.GetInlineBytes() != nil:
				d.Body = b.GetInlineBytes()
			case b.GetInlineString() != "":
				d.Body = []byte(b.GetInlineString())
			default:
				return nil, errors.New("direct_response body: only inline_bytes and inline_string are supported")
			}
		}
		cr.Direct = d
	case nil:
		return nil, errors.New("no action")
	default:
		return nil, fmt.Errorf("action %T is not supported (want route or direct_response)", a)
	}
	if m != nil {
		cr.Stats = m.Series(cr.Cluster.BridgeName(), cr.Name)
		cr.FallbackStats = m.Series("", cr.Name)
	}
	return cr, nil
}

func compileRegex(rm *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if rm == nil {
		return nil, errors.New("no regex")
	}
	re, err := regexp.Compile("^(?:" + rm.GetRegex() + ")$")
	if err != nil {
		// Report the regex as written, not as wrapped.
		if _, err2 := regexp.Compile(rm.GetRegex()); err2 != nil {
			return nil, err2
		}
		return nil, err
	}
	return re, nil
}

func compileString(sm *matcherv3.StringMatcher) (StringMatcher, error) {
	s := StringMatcher{IgnoreCase: sm.GetIgnoreCase()}
	val := func(v string) []byte {
		if s.IgnoreCase {
			v = strings.ToLower(v)
		}
		return []byte(v)
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.Kind, s.Value = StringExact, val(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		s.Kind, s.Value = StringPrefix, val(p.Prefix)
	case *matcherv3.StringMatcher_Suffix:
		s.Kind, s.Value = StringSuffix, val(p.Suffix)
	case *matcherv3.StringMatcher_Contains:
		s.Kind, s.Value = StringContains, val(p.Contains)
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return s, fmt.Errorf("safe_regex: %w", err)
		}
		s.Kind, s.Regex, s.IgnoreCase = StringRegex, re, false
	case nil:
		return s, errors.New("string matcher has no pattern")
	default:
		return s, fmt.Errorf("string matcher %T is not supported", p)
	}
	return s, nil
}

func compileHeader(h *routev3.HeaderMatcher) (HeaderMatcher, error) {
	name := strings.ToLower(h.GetName())
	if name == "" {
		return HeaderMatcher{}, errors.New("no header name")
	}
	if strings.HasPrefix(name, ":") && name != ":authority" && name != ":path" && name != ":method" {
		return HeaderMatcher{}, fmt.Errorf("pseudo-header %q is not supported (:authority, :path and :method are)", name)
	}
	hm := HeaderMatcher{Name: name, Invert: h.GetInvertMatch(), MissingEmpty: h.GetTreatMissingHeaderAsEmpty()}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_StringMatch:
		hm.String, err = compileString(s.StringMatch)
	case *routev3.HeaderMatcher_PresentMatch:
		hm.Present, hm.PresentValue = true, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		hm.String = StringMatcher{Kind: StringExact, Value: []byte(s.ExactMatch)}
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.String = StringMatcher{Kind: StringPrefix, Value: []byte(s.PrefixMatch)}
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.String = StringMatcher{Kind: StringSuffix, Value: []byte(s.SuffixMatch)}
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.String = StringMatcher{Kind: StringContains, Value: []byte(s.ContainsMatch)}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		var re *regexp.Regexp
		re, err = compileRegex(s.SafeRegexMatch)
		hm.String = StringMatcher{Kind: StringRegex, Regex: re}
	case nil:
		// Envoy: no specifier means the header must be present.
		hm.Present, hm.PresentValue = true, true
	default:
		return hm, fmt.Errorf("header match %T is not supported", s)
	}
	return hm, err
}

func compileListener(l *listenerv3.Listener, clusters map[string]*Cluster, tables map[string]*RouteTable, m *metrics.Metrics) (*Listener, error) {
	cl := &Listener{Name: l.GetName()}
	if cl.Name == "" {
		return nil, errors.New("no name")
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil || sa.GetProtocol() != corev3.SocketAddress_TCP {
		return nil, errors.New("address must be a TCP socket address")
	}
	if sa.GetPortValue() > 65535 {
		return nil, fmt.Errorf("port %d", sa.GetPortValue())
	}
	host := sa.GetAddress()
	if host == "" {
		host = "0.0.0.0"
	}
	cl.Address = net.JoinHostPort(host, strconv.Itoa(int(sa.GetPortValue())))

	if md, ok := gefyraMetadata(l.GetMetadata()); ok {
		if v, present := md["fallback_cluster"]; present {
			s, _ := v.(string)
			if s == "" {
				return nil, fmt.Errorf("metadata %s.fallback_cluster: want a cluster name", MetadataKey)
			}
			cl.FallbackName = s
			cl.Fallback = clusters[s]
		}
	}
	cl.NoRouteStats = m.Series("", "")

	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	if len(chains) != 1 {
		return nil, fmt.Errorf("%d filter chains: carrier supports exactly one", len(chains))
	}
	fc := chains[0]
	if fc.GetFilterChainMatch() != nil && !proto.Equal(fc.GetFilterChainMatch(), &listenerv3.FilterChainMatch{}) {
		return nil, errors.New("filter_chain_match is not supported")
	}
	if fc.GetTransportSocket() != nil {
		return nil, errors.New("transport sockets (TLS) are not supported")
	}
	var terminal *listenerv3.Filter
	for _, f := range fc.GetFilters() {
		if f.GetTypedConfig() == nil {
			return nil, fmt.Errorf("filter %q has no typed_config", f.GetName())
		}
		if terminal != nil {
			return nil, fmt.Errorf("filter %q follows the terminal filter %q", f.GetName(), terminal.GetName())
		}
		switch f.GetTypedConfig().MessageName() {
		case "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
			"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":
			terminal = f
		default:
			return nil, fmt.Errorf("network filter %s is not supported", f.GetTypedConfig().GetTypeUrl())
		}
	}
	if terminal == nil {
		return nil, errors.New("no http_connection_manager or tcp_proxy filter")
	}
	switch terminal.GetTypedConfig().MessageName() {
	case "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
		var hcm hcmv3.HttpConnectionManager
		if err := terminal.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			return nil, fmt.Errorf("http_connection_manager: %w", err)
		}
		h, err := compileHCM(&hcm, clusters, tables, m)
		if err != nil {
			return nil, fmt.Errorf("http_connection_manager: %w", err)
		}
		cl.HTTP = h
	default:
		var tp tcpv3.TcpProxy
		if err := terminal.GetTypedConfig().UnmarshalTo(&tp); err != nil {
			return nil, fmt.Errorf("tcp_proxy: %w", err)
		}
		if tp.GetCluster() == "" {
			return nil, errors.New("tcp_proxy: must name one cluster (weighted_clusters is not supported)")
		}
		if tp.GetTunnelingConfig() != nil {
			return nil, errors.New("tcp_proxy: tunneling_config is not supported")
		}
		t := &TCP{ClusterName: tp.GetCluster(), Cluster: clusters[tp.GetCluster()], StatName: tp.GetStatPrefix()}
		var err error
		if t.IdleTimeout, err = duration(tp.GetIdleTimeout(), DefaultIdleTimeout); err != nil {
			return nil, fmt.Errorf("tcp_proxy idle_timeout: %w", err)
		}
		t.Stats = m.Series(t.Cluster.BridgeName(), t.StatName)
		t.FallbackStats = m.Series("", t.StatName)
		cl.TCP = t
	}
	return cl, nil
}

func compileHCM(hcm *hcmv3.HttpConnectionManager, clusters map[string]*Cluster, tables map[string]*RouteTable, m *metrics.Metrics) (*HTTP, error) {
	h := &HTTP{}
	switch hcm.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
		h.Codec = CodecAuto
	case hcmv3.HttpConnectionManager_HTTP1:
		h.Codec = CodecHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		h.Codec = CodecHTTP2
	default:
		return nil, fmt.Errorf("codec %v is not supported", hcm.GetCodecType())
	}
	switch rs := hcm.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		h.RouteConfigName = rs.Rds.GetRouteConfigName()
		if h.RouteConfigName == "" {
			return nil, errors.New("rds without route_config_name")
		}
		h.Routes = tables[h.RouteConfigName]
	case *hcmv3.HttpConnectionManager_RouteConfig:
		t, err := compileRoutes(rs.RouteConfig, clusters, m)
		if err != nil {
			return nil, fmt.Errorf("route_config %q: %w", rs.RouteConfig.GetName(), err)
		}
		h.Routes = t
	default:
		return nil, fmt.Errorf("route specifier %T is not supported (want rds or route_config)", rs)
	}
	var err error
	if h.IdleTimeout, err = duration(hcm.GetCommonHttpProtocolOptions().GetIdleTimeout(), DefaultIdleTimeout); err != nil {
		return nil, fmt.Errorf("idle_timeout: %w", err)
	}
	if h.RequestHeadersTimeout, err = duration(hcm.GetRequestHeadersTimeout(), DefaultHeadersTimeout); err != nil {
		return nil, fmt.Errorf("request_headers_timeout: %w", err)
	}
	return h, nil
}

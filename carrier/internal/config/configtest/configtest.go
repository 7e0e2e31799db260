// Package configtest builds the Envoy resources carrier consumes, for
// tests: the same shapes the control plane sends.
package configtest

import (
	"net"
	"strconv"
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
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"gefyra.dev/gefyra/carrier/internal/config"
)

func socket(addr string) *corev3.Address {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		panic(err)
	}
	p, _ := strconv.Atoi(port)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func gefyraMeta(fields map[string]any) *corev3.Metadata {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		panic(err)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{config.MetadataKey: s}}
}

// HTTPListener listens on addr with routes from RDS routeConfig and, if
// fallback is not "", that fallback cluster.
func HTTPListener(name, addr, routeConfig, fallback string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeConfig,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router"}},
	}
	return listener(name, addr, fallback, &listenerv3.Filter{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
	})
}

// InlineHTTPListener is HTTPListener with the route configuration inline.
func InlineHTTPListener(name, addr string, rc *routev3.RouteConfiguration, fallback string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
	}
	return listener(name, addr, fallback, &listenerv3.Filter{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
	})
}

// TCPListener sends every connection to cluster.
func TCPListener(name, addr, cluster, fallback string) *listenerv3.Listener {
	tp := &tcpv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}}
	return listener(name, addr, fallback, &listenerv3.Filter{
		Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)},
	})
}

func listener(name, addr, fallback string, f *listenerv3.Filter) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:         name,
		Address:      socket(addr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{f}}},
	}
	if fallback != "" {
		l.Metadata = gefyraMeta(map[string]any{"fallback_cluster": fallback})
	}
	return l
}

// Cluster is a STATIC cluster with the given endpoints (host:port).
func Cluster(name string, endpoints ...string) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(2 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       Endpoints(name, endpoints...),
	}
	return c
}

// EDSCluster takes its endpoints from the ClusterLoadAssignment of its name.
func EDSCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(2 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		},
	}
}

// BridgeCluster reaches bridge (namespace/name) on port through stowaway
// at relay.
func BridgeCluster(name, relay, bridge string, port int, credential string) *clusterv3.Cluster {
	c := Cluster(name, relay)
	c.Metadata = gefyraMeta(map[string]any{"bridge": bridge, "port": port, "credential": credential})
	return c
}

// HTTP2 makes c speak h2c upstream.
func HTTP2(c *clusterv3.Cluster) *clusterv3.Cluster {
	o := &httpupv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpupv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpupv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpupv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		},
	}}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(o)}
	return c
}

// Endpoints is a ClusterLoadAssignment.
func Endpoints(cluster string, endpoints ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, e := range endpoints {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: socket(e)},
		}})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
	}
}

// Routes is a RouteConfiguration with one virtual host for every domain.
func Routes(name string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name:         name,
		VirtualHosts: []*routev3.VirtualHost{{Name: name, Domains: []string{"*"}, Routes: routes}},
	}
}

// Header is an exact header match.
func Header(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}},
	}}
}

// HeaderRegex is a safe_regex header match.
func HeaderRegex(name, re string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}},
	}}
}

// Prefix is a path prefix match with optional header matchers.
func Prefix(prefix string, headers ...*routev3.HeaderMatcher) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}, Headers: headers}
}

// Path is an exact path match.
func Path(path string, headers ...*routev3.HeaderMatcher) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}, Headers: headers}
}

// Regex is a safe_regex path match.
func Regex(re string, headers ...*routev3.HeaderMatcher) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}, Headers: headers}
}

// To routes m to cluster.
func To(name string, m *routev3.RouteMatch, cluster string) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
	}}}
}

// Direct answers m with status and body.
func Direct(name string, m *routev3.RouteMatch, status int, body string) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
		Status: uint32(status), Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}},
	}}}
}

// Resources groups resources by carrier's type URLs.
func Resources(msgs ...proto.Message) map[string][]proto.Message {
	res := map[string][]proto.Message{}
	for _, t := range config.Types {
		res[t] = nil
	}
	for _, m := range msgs {
		var t string
		switch m.(type) {
		case *listenerv3.Listener:
			t = config.ListenerType
		case *routev3.RouteConfiguration:
			t = config.RouteType
		case *clusterv3.Cluster:
			t = config.ClusterType
		case *endpointv3.ClusterLoadAssignment:
			t = config.EndpointType
		default:
			panic("configtest: unexpected resource type")
		}
		res[t] = append(res[t], m)
	}
	return res
}

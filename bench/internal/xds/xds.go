// Package xds is the benchmark's control plane: a go-control-plane ADS
// server on loopback that gives carrier the resources of one bridged
// workload, an HTTP listener whose route table has a header-matched route
// to a bridge cluster ahead of the fallback, and a TCP listener, both
// going to the benchmark's backend.
package xds

import (
	"context"
	"fmt"
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
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// NodeID is the node carrier must announce (its -node-id).
const NodeID = "bench/carrier"

// Spec is what carrier gets.
type Spec struct {
	// HTTPAddr and TCPAddr are where carrier listens (host:port).
	HTTPAddr, TCPAddr string
	// Backend is the fallback's only endpoint.
	Backend string
	// Relay is the bridge cluster's endpoint (never reached: the bridge's
	// header never appears in the benchmark's requests).
	Relay string
	// BridgeHeader and BridgeRegex are the bridge route's header match.
	BridgeHeader, BridgeRegex string
}

// Server is a running ADS server.
type Server struct {
	// Addr is its gRPC address.
	Addr string
	gs   *grpc.Server
	ln   net.Listener
}

// Start serves spec's resources to NodeID on a free loopback port until
// Stop.
func Start(ctx context.Context, spec Spec) (*Server, error) {
	res, err := Resources(spec)
	if err != nil {
		return nil, err
	}
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		return nil, err
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("xds snapshot: %w", err)
	}
	if err := cache.SetSnapshot(ctx, NodeID, snap); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, cache, nil))
	go gs.Serve(ln)
	return &Server{Addr: ln.Addr().String(), gs: gs, ln: ln}, nil
}

// Stop ends the server.
func (s *Server) Stop() { s.gs.Stop() }

// Resources builds spec's listeners, routes, clusters and endpoints.
func Resources(spec Spec) (map[resourcev3.Type][]types.Resource, error) {
	httpAddr, err := socket(spec.HTTPAddr)
	if err != nil {
		return nil, err
	}
	tcpAddr, err := socket(spec.TCPAddr)
	if err != nil {
		return nil, err
	}
	backend, err := socket(spec.Backend)
	if err != nil {
		return nil, err
	}
	relay, err := socket(spec.Relay)
	if err != nil {
		return nil, err
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "http",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "routes-http",
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router"}},
	}
	tp := &tcpv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "fallback"}}
	hl, err := listener("http", httpAddr, hcm, "envoy.filters.network.http_connection_manager")
	if err != nil {
		return nil, err
	}
	tl, err := listener("tcp", tcpAddr, tp, "envoy.filters.network.tcp_proxy")
	if err != nil {
		return nil, err
	}
	routes := &routev3.RouteConfiguration{Name: "routes-http", VirtualHosts: []*routev3.VirtualHost{{
		Name: "all", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Name: "bridge",
			Match: &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*routev3.HeaderMatcher{{Name: spec.BridgeHeader, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
					StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: spec.BridgeRegex}}},
				}}},
			},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "bridge"}}},
		}},
	}}}
	meta, err := structpb.NewStruct(map[string]any{"bridge": "bench/bridge", "port": 8080, "credential": "unused"})
	if err != nil {
		return nil, err
	}
	bridge := cluster("bridge", relay)
	bridge.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"gefyra": meta}}
	return map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {hl, tl},
		resourcev3.RouteType:    {routes},
		resourcev3.ClusterType:  {cluster("fallback", backend), bridge},
		resourcev3.EndpointType: {},
	}, nil
}

func listener(name string, addr *corev3.Address, filter proto.Message, filterName string) (*listenerv3.Listener, error) {
	a, err := anypb.New(filter)
	if err != nil {
		return nil, err
	}
	meta, err := structpb.NewStruct(map[string]any{"fallback_cluster": "fallback"})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: addr,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: filterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a},
		}}}},
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"gefyra": meta}},
	}, nil
}

func cluster(name string, ep *corev3.Address) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(2 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: ep}}}},
		}}},
	}
}

func socket(addr string) (*corev3.Address, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("xds: address %q: %w", addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("xds: port of %q: %w", addr, err)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}, nil
}

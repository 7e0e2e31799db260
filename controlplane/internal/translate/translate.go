// Package translate turns the control plane's model into the xDS resources
// each data-plane node gets: a pure, deterministic function of the model
// and Options (the credential signer's clock included, and the
// credentials a cache in Options still holds), so the same inputs give
// byte-identical resources and the same version string.
//
// # Carrier (node ID "namespace/pod", one per Pod of a mount)
//
// For every declared TCP port P of the Pod's mount (UDP and SCTP ports are
// left alone) that no bridge carries as raw TCP:
//
//	Listener              "port-P"   0.0.0.0:P, one HttpConnectionManager
//	                                 (codec AUTO: HTTP/1.1 and h2c; routes
//	                                 over RDS "port-P"; WebSocket upgrades;
//	                                 no stream idle timeout), metadata
//	                                 gefyra.fallback_cluster = "fallback-P"
//	                                 (carrier also relays a connection that
//	                                 does not start as HTTP there, whole)
//	RouteConfiguration    "port-P"   one virtual host "*"; first the route
//	                                 "kube-probe" (header user-agent prefix
//	                                 "kube-probe/": a direct response 200),
//	                                 then the routes of
//	                                 every bridge that maps P, bridges by
//	                                 namespace/name, each bridge's rules in
//	                                 their order (a bridge without rules is
//	                                 one route for everything), then the route
//	                                 "fallback" (prefix "/") to "fallback-P".
//	                                 First match wins. No route has a timeout:
//	                                 a developer may sit on a breakpoint.
//	Cluster               "fallback-P"  EDS, upstream protocol as the client's
//	ClusterLoadAssignment "fallback-P"  the fallback clone's Pod IPs, port P
//	Cluster  "bridge/NS/NAME/P"      per bridge and mapped port: STATIC (or
//	                                 STRICT_DNS for a host name) at
//	                                 Options.RelayAddress, metadata
//	                                 gefyra.{bridge, port, credential},
//	                                 upstream protocol as the client's
//
// For a port P that a bridge maps with protocol TCP:
//
//	Listener              "port-P"   0.0.0.0:P, one TcpProxy (stat prefix
//	                                 "port-P", no idle timeout: connection
//	                                 pools keep connections idle for long)
//	                                 to "bridge/NS/NAME/P"; metadata
//	                                 gefyra.fallback_cluster = "fallback-P",
//	                                 where carrier sends a connection whose
//	                                 bridge cannot be reached
//	Cluster               "fallback-P"  EDS, as above, without HTTP options
//	ClusterLoadAssignment "fallback-P"
//	Cluster  "bridge/NS/NAME/P"      as above, without HTTP options
//
// A TCP port carries whole connections, which no rule can select: one
// bridge has it (model.ClaimPorts decides, bridges by namespace/name). A
// bridge that would share a TCP port, carry a port another way than the
// bridge that took it first, or has rules and a TCP port is left out,
// with a warning, on every node. kubelet's HTTP probes on a TCP port reach
// the bridge (carrier cannot tell them from other connections); TCP probes
// only need the port to accept.
//
// kubelet's HTTP probes of an HTTP port are answered by carrier itself:
// sent to a bridge, they would fail whenever the developer's side is down
// or stopped at a breakpoint, and kubelet would take the Pod out of its
// Services and restart carrier.
//
// A route for a rule matches its path (Exact: path; Prefix: whole path
// segments, Gateway API style, as path_separated_prefix; RegularExpression:
// safe_regex, the whole path) and all its headers (names lower-cased; Exact,
// Prefix or safe_regex on the value). A rule without a path matches every
// path. A port no bridge maps as TCP is HTTP: a mounted port that speaks
// something else reaches the fallback only once a bridge maps it as TCP.
//
// # Stowaway (node ID Options.StowawayNodeID, default "gefyra/stowaway")
//
// Runtime resources whose layer is a piece of stowaway's JSON config:
//
//	"credential-keys"   {"credentialKeys": [the signer's PEM key, Options.CredentialKeys...]}
//	"client/NAME"       {"peers": [{name, publicKey, address}],
//	                     "bridges": [{name: "NS/NAME", peer: NAME,
//	                                  ports: [{target: remote, peerPort: local}]}]}
//
// one per client, carrying its peer and its bridges.
//
// Inputs stowaway or carrier would refuse (a client whose key is not a
// WireGuard key or that shares a key or address with another, a bridge name
// the wire format cannot carry) are left out with a warning instead of
// failing everyone's configuration.
package translate

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpupv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/internal/bridge"
	"gefyra.dev/gefyra/internal/credential"
	"gefyra.dev/gefyra/internal/wire"
)

// Defaults.
const (
	DefaultStowawayNodeID = "gefyra/stowaway"
	DefaultCredentialTTL  = 10 * time.Minute
	DefaultConnectTimeout = 5 * time.Second
	// MetadataKey is the filter_metadata key carrier reads.
	MetadataKey = "gefyra"
)

// Node kinds.
const (
	KindCarrier  = "carrier"
	KindStowaway = "stowaway"
)

// Options are the inputs that are not in the model.
type Options struct {
	// RelayAddress is stowaway's relay as carriers dial it, host:port (the
	// relay Service's ClusterIP and port: the cluster may have no DNS).
	RelayAddress string
	// Signer issues the bridge credentials; its clock is the
	// translation's clock.
	Signer *credential.Signer
	// Credentials, if set, hands out the bridge credentials instead,
	// reusing each while it is fresh, so a node's resources and version
	// stay the same until a credential it holds is renewed. It must issue
	// with Signer.
	Credentials *credential.Cache
	// CredentialTTL is each credential's lifetime (default 10 minutes).
	CredentialTTL time.Duration
	// CredentialKeys are more PEM public keys stowaway accepts besides the
	// signer's, for a key rotation.
	CredentialKeys []string
	// StowawayNodeID is stowaway's xDS node ID (default "gefyra/stowaway").
	StowawayNodeID string
	// ConnectTimeout of every cluster (default 5s).
	ConnectTimeout time.Duration
}

// Snapshot is the translation of one model: every node's resources.
type Snapshot struct {
	// Nodes are sorted by ID; stowaway's is always there.
	Nodes []*Node
	// Expires is when the first credential in it expires (zero if it has
	// none): publish a new translation well before.
	Expires time.Time
	// Warnings name what was left out and why, sorted.
	Warnings []string
}

// Node returns the node with id, or nil.
func (s *Snapshot) Node(id string) *Node {
	i, ok := slices.BinarySearchFunc(s.Nodes, id, func(n *Node, id string) int { return cmp.Compare(n.ID, id) })
	if !ok {
		return nil
	}
	return s.Nodes[i]
}

// Node is one node's resources, each slice sorted by name. The nodes of
// one mount share their resources and Bridges: treat them as read-only.
type Node struct {
	ID   string
	Kind string // KindCarrier or KindStowaway

	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Runtimes  []*runtimev3.Runtime

	// Bridges are the bridges (namespace/name) configured on this node,
	// each with the fingerprint of its model (BridgeFingerprint).
	Bridges map[string]string
	// Version is a digest of the resources and of Bridges: equal
	// resources and bridges, equal version.
	Version string
}

// Types are the type URLs a node of the kind subscribes to.
func Types(kind string) []string {
	if kind == KindStowaway {
		return []string{resource.RuntimeType}
	}
	return []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}
}

// Resources returns the node's resources by type URL; every type the node
// subscribes to is present, empty or not, so the node hears about each.
func (n *Node) Resources() map[resource.Type][]types.Resource {
	out := map[resource.Type][]types.Resource{}
	for _, t := range Types(n.Kind) {
		out[t] = []types.Resource{}
	}
	add := func(t string, m proto.Message) { out[t] = append(out[t], m) }
	for _, r := range n.Listeners {
		add(resource.ListenerType, r)
	}
	for _, r := range n.Routes {
		add(resource.RouteType, r)
	}
	for _, r := range n.Clusters {
		add(resource.ClusterType, r)
	}
	for _, r := range n.Endpoints {
		add(resource.EndpointType, r)
	}
	for _, r := range n.Runtimes {
		add(resource.RuntimeType, r)
	}
	return out
}

// Messages returns every resource in a fixed order: listeners, routes,
// clusters, endpoints, runtimes, each by name.
func (n *Node) Messages() []proto.Message {
	var out []proto.Message
	for _, r := range n.Listeners {
		out = append(out, r)
	}
	for _, r := range n.Routes {
		out = append(out, r)
	}
	for _, r := range n.Clusters {
		out = append(out, r)
	}
	for _, r := range n.Endpoints {
		out = append(out, r)
	}
	for _, r := range n.Runtimes {
		out = append(out, r)
	}
	return out
}

// Names used in carrier resources.
func listenerName(port uint16) string { return "port-" + strconv.Itoa(int(port)) }
func fallbackName(port uint16) string { return "fallback-" + strconv.Itoa(int(port)) }

// BridgeClusterName is the cluster of one bridge's port mapping.
func BridgeClusterName(bridgeKey string, port uint16) string {
	return "bridge/" + bridgeKey + "/" + strconv.Itoa(int(port))
}

// BridgeFingerprint is a digest of everything the model says about a
// bridge: a node that acknowledged a configuration holding the same
// fingerprint has the bridge as it is now.
func BridgeFingerprint(b *model.Bridge) string {
	j, _ := json.Marshal(b) // plain data: cannot fail
	sum := sha256.Sum256(j)
	return hex.EncodeToString(sum[:8])
}

// mountBridges returns the bridges of m on mount mt that a carrier can
// serve, in the order model.ClaimPorts decides their ports in (by key);
// invalid(b, err) hears of each left out because its key cannot travel
// in the relay's wire format.
func mountBridges(m *model.Model, mt *model.Mount, invalid func(*model.Bridge, error)) []*model.Bridge {
	var bridges []*model.Bridge
	for j := range m.Bridges {
		b := &m.Bridges[j]
		if b.Namespace == mt.Namespace && b.Mount == mt.Name {
			if err := wire.ValidateBridge(b.Key()); err != nil {
				if invalid != nil {
					invalid(b, err)
				}
				continue
			}
			bridges = append(bridges, b)
		}
	}
	slices.SortFunc(bridges, func(a, b *model.Bridge) int { return cmp.Compare(a.Key(), b.Key()) })
	return bridges
}

// Refused returns, by bridge key, the bridges of m that Translate leaves
// out because of how their mount's ports are shared (model.ClaimPorts),
// with the reason: e.g. a TCP port another bridge has already.
func Refused(m *model.Model) map[string]string {
	out := map[string]string{}
	if m == nil {
		return out
	}
	for i := range m.Mounts {
		for k, v := range model.ClaimPorts(mountBridges(m, &m.Mounts[i], nil)).Refused {
			out[k] = v
		}
	}
	return out
}

// Translate builds every node's resources from m.
func Translate(m *model.Model, o Options) (*Snapshot, error) {
	if m == nil {
		return nil, errors.New("translate: no model")
	}
	if err := o.defaults(); err != nil {
		return nil, err
	}
	t := &translation{m: m, o: o, creds: map[string]string{}, leftOut: map[string]bool{}}
	// Only bridges need the relay: without one, stowaway and carriers get
	// their configuration even while the relay's address is unknown.
	t.relay, t.relayErr = relayEndpoint(o.RelayAddress)
	snap := &Snapshot{}
	var err error
	byNode := map[string]*Node{}
	owner := map[string]string{}
	for i := range m.Mounts {
		mt := &m.Mounts[i]
		bridges := mountBridges(m, mt, func(b *model.Bridge, err error) {
			t.warn("bridge %s left out: %v", b.Key(), err)
		})
		claims := model.ClaimPorts(bridges)
		bridges = slices.DeleteFunc(bridges, func(b *model.Bridge) bool {
			reason, refused := claims.Refused[b.Key()]
			if refused {
				t.warn("bridge %s left out: %s", b.Key(), reason)
				t.leftOut[b.Key()] = true
			}
			return refused
		})
		// Every Pod of a mount gets the same resources: translated once,
		// the messages shared by the mount's nodes.
		var shared *Node
		for _, p := range mt.Pods {
			id := p.NodeID()
			if other, dup := owner[id]; dup {
				t.warn("Pod %s is in mounts %s and %s: carrier serves only %s", id, other, mt.Key(), other)
				continue
			}
			owner[id] = mt.Key()
			if shared == nil {
				if shared, err = t.carrier(id, mt, bridges, claims.TCP); err == nil {
					shared.Version, err = version(shared)
				}
				if err != nil {
					return nil, fmt.Errorf("translate: node %s: %w", id, err)
				}
			}
			n := *shared
			n.ID = id
			byNode[id] = &n
		}
	}
	st, err := t.stowaway()
	if err != nil {
		return nil, fmt.Errorf("translate: stowaway: %w", err)
	}
	if byNode[st.ID] != nil {
		return nil, fmt.Errorf("translate: stowaway's node ID %s is also a carrier's", st.ID)
	}
	if st.Version, err = version(st); err != nil {
		return nil, fmt.Errorf("translate: stowaway: %w", err)
	}
	byNode[st.ID] = st
	for _, n := range byNode {
		snap.Nodes = append(snap.Nodes, n)
	}
	slices.SortFunc(snap.Nodes, func(a, b *Node) int { return cmp.Compare(a.ID, b.ID) })
	if len(t.creds) > 0 {
		snap.Expires = o.Signer.Now().Add(o.CredentialTTL)
		if o.Credentials != nil {
			snap.Expires = t.expires
		}
	}
	slices.Sort(t.warnings)
	snap.Warnings = slices.Compact(t.warnings)
	return snap, nil
}

func (o *Options) defaults() error {
	if o.Signer == nil {
		return errors.New("translate: no credential signer")
	}
	if o.Credentials != nil && o.Credentials.Signer() != o.Signer {
		return errors.New("translate: the credential cache issues with another signer")
	}
	if o.CredentialTTL <= 0 {
		o.CredentialTTL = DefaultCredentialTTL
	}
	if o.StowawayNodeID == "" {
		o.StowawayNodeID = DefaultStowawayNodeID
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	return nil
}

type relayAddr struct {
	host string
	port uint32
	dns  bool
}

func relayEndpoint(addr string) (relayAddr, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return relayAddr{}, fmt.Errorf("translate: relay address %q: want host:port", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || host == "" {
		return relayAddr{}, fmt.Errorf("translate: relay address %q: want host:port with a port 1-65535", addr)
	}
	r := relayAddr{host: host, port: uint32(p)}
	if ip, err := netip.ParseAddr(host); err == nil {
		r.host = ip.Unmap().String()
	} else {
		r.dns = true
	}
	return r, nil
}

type translation struct {
	m        *model.Model
	o        Options
	relay    relayAddr
	relayErr error
	creds    map[string]string // bridge key -> credential
	expires  time.Time         // of the first credential to expire, with Options.Credentials
	leftOut  map[string]bool   // bridge keys left out on every node
	warnings []string
}

func (t *translation) warn(format string, args ...any) {
	t.warnings = append(t.warnings, fmt.Sprintf(format, args...))
}

func (t *translation) credential(b *model.Bridge) (string, error) {
	if c, ok := t.creds[b.Key()]; ok {
		return c, nil
	}
	var c string
	var err error
	if t.o.Credentials != nil {
		var cr credential.Credential
		cr, err = t.o.Credentials.Issue(b.Key(), t.o.CredentialTTL)
		if err == nil && (t.expires.IsZero() || cr.Expires.Before(t.expires)) {
			t.expires = cr.Expires
		}
		c = cr.Token
	} else {
		c, err = t.o.Signer.Issue(b.Key(), t.o.CredentialTTL)
	}
	if err != nil {
		return "", err
	}
	if len(c) > wire.MaxCredentialLen {
		return "", fmt.Errorf("credential of %d bytes is longer than the wire format's %d", len(c), wire.MaxCredentialLen)
	}
	t.creds[b.Key()] = c
	return c, nil
}

func (t *translation) carrier(id string, mt *model.Mount, bridges []*model.Bridge, tcp map[uint16]*model.Bridge) (*Node, error) {
	n := &Node{ID: id, Kind: KindCarrier, Bridges: map[string]string{}}
	for _, b := range bridges {
		n.Bridges[b.Key()] = BridgeFingerprint(b)
	}
	seen := map[uint16]bool{}
	for _, p := range mt.Ports {
		if p.Protocol != "TCP" || p.Port == 0 || seen[p.Port] {
			continue
		}
		seen[p.Port] = true
		fb := fallbackName(p.Port)
		if owner := tcp[p.Port]; owner != nil {
			if err := t.tcpPort(n, p.Port, owner); err != nil {
				return nil, err
			}
		} else if err := t.httpPort(n, p.Port, bridges); err != nil {
			return nil, err
		}
		fc, err := t.fallbackCluster(fb, tcp[p.Port] == nil)
		if err != nil {
			return nil, err
		}
		n.Clusters = append(n.Clusters, fc)
		cla := &endpointv3.ClusterLoadAssignment{ClusterName: fb}
		if eps := lbEndpoints(mt.Fallback, p.Port); len(eps) > 0 {
			cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}
		}
		n.Endpoints = append(n.Endpoints, cla)
	}
	slices.SortFunc(n.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(n.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(n.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(n.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int {
		return cmp.Compare(a.ClusterName, b.ClusterName)
	})
	return n, nil
}

// httpPort adds the listener, routes and bridge clusters of HTTP port port.
func (t *translation) httpPort(n *Node, port uint16, bridges []*model.Bridge) error {
	fb := fallbackName(port)
	l, err := httpListener(port, fb)
	if err != nil {
		return err
	}
	n.Listeners = append(n.Listeners, l)
	rc := &routev3.RouteConfiguration{Name: listenerName(port)}
	vh := &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{probeRoute()}}
	for _, b := range bridges {
		i := slices.IndexFunc(b.Ports, func(pm bridge.PortMapping) bool { return pm.Remote == port })
		if i < 0 {
			continue
		}
		cl := BridgeClusterName(b.Key(), port)
		routes, err := bridgeRoutes(b, cl)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", b.Key(), err)
		}
		vh.Routes = append(vh.Routes, routes...)
		c, err := t.bridgeCluster(cl, b, port, true)
		if err != nil {
			return err
		}
		n.Clusters = append(n.Clusters, c)
	}
	vh.Routes = append(vh.Routes, &routev3.Route{
		Name:   "fallback",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: routeTo(fb),
	})
	rc.VirtualHosts = []*routev3.VirtualHost{vh}
	n.Routes = append(n.Routes, rc)
	return nil
}

// tcpPort adds the listener and bridge cluster of port port, which bridge
// owner carries as raw TCP.
func (t *translation) tcpPort(n *Node, port uint16, owner *model.Bridge) error {
	cl := BridgeClusterName(owner.Key(), port)
	l, err := tcpListener(port, cl, fallbackName(port))
	if err != nil {
		return err
	}
	n.Listeners = append(n.Listeners, l)
	c, err := t.bridgeCluster(cl, owner, port, false)
	if err != nil {
		return err
	}
	n.Clusters = append(n.Clusters, c)
	return nil
}

func lbEndpoints(ips []netip.Addr, port uint16) []*endpointv3.LbEndpoint {
	out := []*endpointv3.LbEndpoint{}
	for _, ip := range ips {
		if !ip.IsValid() {
			continue
		}
		out = append(out, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: socketAddress(ip.Unmap().String(), uint32(port))},
		}})
	}
	return out
}

// anyOf packs m deterministically, so equal configurations are equal bytes.
func anyOf(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol: corev3.SocketAddress_TCP, Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func gefyraMetadata(fields map[string]any) (*corev3.Metadata, error) {
	s, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, err
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataKey: s}}, nil
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func httpListener(port uint16, fallback string) (*listenerv3.Listener, error) {
	router, err := anyOf(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	name := listenerName(port)
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
		UpgradeConfigs:    []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		StreamIdleTimeout: durationpb.New(0),
	}
	return listener(port, "envoy.filters.network.http_connection_manager", hcm, fallback)
}

func tcpListener(port uint16, cluster, fallback string) (*listenerv3.Listener, error) {
	return listener(port, "envoy.filters.network.tcp_proxy", &tcpv3.TcpProxy{
		StatPrefix:       listenerName(port),
		ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster},
		IdleTimeout:      durationpb.New(0),
	}, fallback)
}

// listener is port's listener on every address with the one network
// filter filter configured by config, and the fallback cluster in its
// gefyra metadata.
func listener(port uint16, filter string, config proto.Message, fallback string) (*listenerv3.Listener, error) {
	tc, err := anyOf(config)
	if err != nil {
		return nil, err
	}
	md, err := gefyraMetadata(map[string]any{"fallback_cluster": fallback})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:     listenerName(port),
		Address:  socketAddress("0.0.0.0", uint32(port)),
		Metadata: md,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       filter,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc},
		}}}},
	}, nil
}

func routeTo(cluster string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
		Timeout:          durationpb.New(0),
	}}
}

// probeRoute answers kubelet's HTTP probes (user agent "kube-probe/<version>")
// with 200.
func probeRoute() *routev3.Route {
	return &routev3.Route{
		Name: "kube-probe",
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{
				Name: "user-agent",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "kube-probe/"},
				}},
			}},
		},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 200,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok\n"}},
		}},
	}
}

// bridgeRoutes are a bridge's routes to cluster: one per rule, or one for
// everything.
func bridgeRoutes(b *model.Bridge, cluster string) ([]*routev3.Route, error) {
	if len(b.Rules) == 0 {
		return []*routev3.Route{{
			Name:   b.Key() + "/all",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: routeTo(cluster),
		}}, nil
	}
	out := make([]*routev3.Route, 0, len(b.Rules))
	for i, r := range b.Rules {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
		m, err := routeMatch(r)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
		out = append(out, &routev3.Route{
			Name:   b.Key() + "/rule-" + strconv.Itoa(i+1),
			Match:  m,
			Action: routeTo(cluster),
		})
	}
	return out, nil
}

func routeMatch(r bridge.Rule) (*routev3.RouteMatch, error) {
	m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if p := r.Path; p != nil {
		switch p.Type {
		case bridge.Exact:
			m.PathSpecifier = &routev3.RouteMatch_Path{Path: p.Value}
		case bridge.Prefix:
			// Gateway API prefixes match whole segments: "/items"
			// matches "/items" and "/items/1", not "/itemsx".
			v := strings.TrimRight(p.Value, "/")
			switch {
			case v == "":
				// "/" matches everything.
			case strings.ContainsAny(v, "?#"):
				m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: p.Value}
			default:
				m.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: v}
			}
		case bridge.RegularExpression:
			m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: p.Value}}
		default:
			return nil, fmt.Errorf("path match type %q", p.Type)
		}
	}
	for _, h := range r.Headers {
		sm := &matcherv3.StringMatcher{}
		switch h.Type {
		case bridge.Exact:
			sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: h.Value}
		case bridge.Prefix:
			sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: h.Value}
		case bridge.RegularExpression:
			sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Value}}
		default:
			return nil, fmt.Errorf("header match type %q", h.Type)
		}
		m.Headers = append(m.Headers, &routev3.HeaderMatcher{
			Name:                 strings.ToLower(h.Name),
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm},
		})
	}
	return m, nil
}

// downstreamProtocol makes a cluster speak upstream what the client spoke.
func downstreamProtocol() (map[string]*anypb.Any, error) {
	a, err := anyOf(&httpupv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpupv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &httpupv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": a}, nil
}

// fallbackCluster is the fallback of a port; http says whether the port
// carries HTTP (and so the cluster speaks the client's HTTP version).
func (t *translation) fallbackCluster(name string, http bool) (*clusterv3.Cluster, error) {
	var po map[string]*anypb.Any
	if http {
		var err error
		if po, err = downstreamProtocol(); err != nil {
			return nil, err
		}
	}
	return &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:              &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name},
		ConnectTimeout:                durationpb.New(t.o.ConnectTimeout),
		TypedExtensionProtocolOptions: po,
	}, nil
}

// bridgeCluster is the cluster of port port of bridge b; http as for
// fallbackCluster.
func (t *translation) bridgeCluster(name string, b *model.Bridge, port uint16, http bool) (*clusterv3.Cluster, error) {
	if t.relayErr != nil {
		return nil, t.relayErr
	}
	cred, err := t.credential(b)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: credential: %w", b.Key(), err)
	}
	var po map[string]*anypb.Any
	if http {
		if po, err = downstreamProtocol(); err != nil {
			return nil, err
		}
	}
	md, err := gefyraMetadata(map[string]any{"bridge": b.Key(), "port": float64(port), "credential": cred})
	if err != nil {
		return nil, err
	}
	typ := clusterv3.Cluster_STATIC
	if t.relay.dns {
		typ = clusterv3.Cluster_STRICT_DNS
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       durationpb.New(t.o.ConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress(t.relay.host, t.relay.port),
				}},
			}}}},
		},
		Metadata:                      md,
		TypedExtensionProtocolOptions: po,
	}, nil
}

// The JSON form of stowaway's configuration (stowaway/internal/config).
type (
	stowawayConfig struct {
		Peers          []stowawayPeer   `json:"peers,omitempty"`
		Bridges        []stowawayBridge `json:"bridges,omitempty"`
		CredentialKeys []string         `json:"credentialKeys,omitempty"`
	}
	stowawayPeer struct {
		Name      string `json:"name"`
		PublicKey string `json:"publicKey"`
		Address   string `json:"address"`
	}
	stowawayBridge struct {
		Name  string         `json:"name"`
		Peer  string         `json:"peer"`
		Ports []stowawayPort `json:"ports"`
	}
	stowawayPort struct {
		Target   uint16 `json:"target"`
		PeerPort uint16 `json:"peerPort"`
	}
)

func (t *translation) stowaway() (*Node, error) {
	n := &Node{ID: t.o.StowawayNodeID, Kind: KindStowaway, Bridges: map[string]string{}}
	signer, err := t.o.Signer.PublicKeyPEM()
	if err != nil {
		return nil, err
	}
	keys := []string{signer}
	extra := slices.Clone(t.o.CredentialKeys)
	slices.Sort(extra)
	for _, k := range extra {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	rt, err := runtime("credential-keys", stowawayConfig{CredentialKeys: keys})
	if err != nil {
		return nil, err
	}
	n.Runtimes = append(n.Runtimes, rt)

	perClient := map[string]*stowawayConfig{}
	get := func(name string) *stowawayConfig {
		c := perClient[name]
		if c == nil {
			c = &stowawayConfig{}
			perClient[name] = c
		}
		return c
	}
	keyOwner, addrOwner := map[string]string{}, map[netip.Addr]string{}
	clients := slices.Clone(t.m.Clients)
	slices.SortFunc(clients, func(a, b model.Client) int { return cmp.Compare(a.Name, b.Name) })
	for _, c := range clients {
		k, err := base64.StdEncoding.DecodeString(c.PublicKey)
		addr := c.Address.Unmap()
		switch {
		case c.Name == "":
			t.warn("a client without a name left out")
			continue
		case err != nil || len(k) != 32:
			t.warn("client %s left out: its public key is not a WireGuard key", c.Name)
			continue
		case keyOwner[c.PublicKey] != "":
			t.warn("client %s left out: it has the public key of client %s", c.Name, keyOwner[c.PublicKey])
			continue
		case !addr.IsValid() || addr.IsUnspecified() || addr.Zone() != "":
			t.warn("client %s left out: no valid tunnel address", c.Name)
			continue
		case addrOwner[addr] != "":
			t.warn("client %s left out: it has the tunnel address of client %s", c.Name, addrOwner[addr])
			continue
		}
		keyOwner[c.PublicKey], addrOwner[addr] = c.Name, c.Name
		get(c.Name).Peers = []stowawayPeer{{Name: c.Name, PublicKey: c.PublicKey, Address: addr.String()}}
	}
	bridges := make([]*model.Bridge, 0, len(t.m.Bridges))
	for i := range t.m.Bridges {
		bridges = append(bridges, &t.m.Bridges[i])
	}
	slices.SortFunc(bridges, func(a, b *model.Bridge) int { return cmp.Compare(a.Key(), b.Key()) })
	for _, b := range bridges {
		if err := wire.ValidateBridge(b.Key()); err != nil || b.Client == "" || t.leftOut[b.Key()] {
			continue // warned about with the carriers, or names no client
		}
		sb := stowawayBridge{Name: b.Key(), Peer: b.Client}
		seen := map[uint16]bool{}
		for _, p := range b.Ports {
			if p.Remote == 0 || seen[p.Remote] {
				continue
			}
			seen[p.Remote] = true
			local := p.Local
			if local == 0 {
				local = p.Remote
			}
			sb.Ports = append(sb.Ports, stowawayPort{Target: p.Remote, PeerPort: local})
		}
		c := get(b.Client)
		c.Bridges = append(c.Bridges, sb)
		n.Bridges[b.Key()] = BridgeFingerprint(b)
	}
	names := make([]string, 0, len(perClient))
	for name := range perClient {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		rt, err := runtime("client/"+name, *perClient[name])
		if err != nil {
			return nil, err
		}
		n.Runtimes = append(n.Runtimes, rt)
	}
	slices.SortFunc(n.Runtimes, func(a, b *runtimev3.Runtime) int { return cmp.Compare(a.Name, b.Name) })
	return n, nil
}

func runtime(name string, c stowawayConfig) (*runtimev3.Runtime, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var layer structpb.Struct
	if err := protojson.Unmarshal(b, &layer); err != nil {
		return nil, err
	}
	return &runtimev3.Runtime{Name: name, Layer: &layer}, nil
}

// version digests the node's resources, marshalled deterministically, and
// the fingerprints of the bridges they configure: a bridge change that
// leaves a node's resources as they were (a rule, for stowaway) still gives
// the node a new version to acknowledge, and so the bridge's readiness an
// acknowledgement of the bridge as it is now.
func version(n *Node) (string, error) {
	h := sha256.New()
	write := func(b []byte) {
		var l [8]byte
		for i := range l {
			l[i] = byte(len(b) >> (8 * i))
		}
		h.Write(l[:])
		h.Write(b)
	}
	opts := proto.MarshalOptions{Deterministic: true}
	for _, m := range n.Messages() {
		b, err := opts.Marshal(m)
		if err != nil {
			return "", err
		}
		write(b)
	}
	for _, key := range slices.Sorted(maps.Keys(n.Bridges)) {
		write([]byte(key + "=" + n.Bridges[key]))
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), nil
}

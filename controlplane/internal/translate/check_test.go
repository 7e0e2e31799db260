package translate

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpupv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"gefyra.dev/gefyra/internal/wire"
)

// bridgeCluster is what carrier reads from a bridge cluster.
type bridgeCluster struct {
	name, bridge, credential string
	port                     uint16
}

// checkCarrier decodes a carrier node's resources the way carrier does
// (carrier/internal/config) and checks what carrier would refuse or
// silently route elsewhere: every reference resolves, metadata has the
// types carrier expects, listeners do not share an address, and no route
// times out.
func checkCarrier(t *testing.T, n *Node) []bridgeCluster {
	t.Helper()
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range n.Clusters {
		if clusters[c.Name] != nil {
			t.Errorf("node %s: cluster %s twice", n.ID, c.Name)
		}
		clusters[c.Name] = c
	}
	cla := map[string]bool{}
	for _, e := range n.Endpoints {
		cla[e.ClusterName] = true
		for _, l := range e.Endpoints {
			for _, ep := range l.LbEndpoints {
				sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
				if _, err := netip.ParseAddr(sa.GetAddress()); err != nil || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
					t.Errorf("node %s: endpoint of %s is %s:%d", n.ID, e.ClusterName, sa.GetAddress(), sa.GetPortValue())
				}
			}
		}
	}
	routes := map[string]bool{}
	for _, rc := range n.Routes {
		routes[rc.Name] = true
		for _, vh := range rc.VirtualHosts {
			if len(vh.Domains) == 0 {
				t.Errorf("node %s: route configuration %s: virtual host without domains", n.ID, rc.Name)
			}
			if len(vh.Routes) == 0 || vh.Routes[len(vh.Routes)-1].Name != "fallback" {
				t.Errorf("node %s: route configuration %s does not end with the fallback route", n.ID, rc.Name)
			}
			if len(vh.Routes) == 0 || vh.Routes[0].Name != "kube-probe" || vh.Routes[0].GetDirectResponse().GetStatus() != 200 ||
				len(vh.Routes[0].GetMatch().GetHeaders()) != 1 || vh.Routes[0].GetMatch().GetHeaders()[0].GetName() != "user-agent" ||
				vh.Routes[0].GetMatch().GetHeaders()[0].GetStringMatch().GetPrefix() != "kube-probe/" {
				t.Errorf("node %s: route configuration %s does not start with the route that answers kubelet's probes", n.ID, rc.Name)
			}
			for i, r := range vh.Routes {
				if i == 0 && r.GetDirectResponse() != nil {
					continue // the probes' route, checked above
				}
				ra := r.GetRoute()
				if ra == nil || clusters[ra.GetCluster()] == nil {
					t.Errorf("node %s: route %s goes to %q, which is not a cluster", n.ID, r.Name, ra.GetCluster())
				}
				if ra.GetTimeout() == nil || ra.GetTimeout().AsDuration() != 0 {
					t.Errorf("node %s: route %s has a timeout %v", n.ID, r.Name, ra.GetTimeout())
				}
				if r.GetMatch().GetPathSpecifier() == nil {
					t.Errorf("node %s: route %s matches no path", n.ID, r.Name)
				}
			}
		}
	}
	addrs := map[string]bool{}
	tcpClusters, httpClusters := map[string]bool{}, map[string]bool{}
	for _, l := range n.Listeners {
		sa := l.GetAddress().GetSocketAddress()
		key := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
		if addrs[key] {
			t.Errorf("node %s: two listeners on %s:%d", n.ID, sa.GetAddress(), sa.GetPortValue())
		}
		addrs[key] = true
		fb, _ := l.GetMetadata().GetFilterMetadata()[MetadataKey].AsMap()["fallback_cluster"].(string)
		if clusters[fb] == nil {
			t.Errorf("node %s: listener %s falls back to %q, which is not a cluster", n.ID, l.Name, fb)
		}
		if len(l.FilterChains) != 1 || len(l.FilterChains[0].Filters) != 1 {
			t.Fatalf("node %s: listener %s: want one chain with one filter", n.ID, l.Name)
		}
		f := l.FilterChains[0].Filters[0]
		switch f.GetTypedConfig().MessageName() {
		case "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":
			var tp tcpv3.TcpProxy
			if err := f.GetTypedConfig().UnmarshalTo(&tp); err != nil {
				t.Fatalf("node %s: listener %s: %v", n.ID, l.Name, err)
			}
			c := clusters[tp.GetCluster()]
			if c == nil || c.GetMetadata().GetFilterMetadata()[MetadataKey] == nil {
				t.Errorf("node %s: TCP listener %s goes to %q, which is not a bridge cluster", n.ID, l.Name, tp.GetCluster())
			}
			if tp.GetIdleTimeout() == nil || tp.GetIdleTimeout().AsDuration() != 0 {
				t.Errorf("node %s: TCP listener %s has an idle timeout %v", n.ID, l.Name, tp.GetIdleTimeout())
			}
			if f.GetName() != "envoy.filters.network.tcp_proxy" {
				t.Errorf("node %s: TCP listener %s: filter name %q", n.ID, l.Name, f.GetName())
			}
			tcpClusters[tp.GetCluster()], tcpClusters[fb] = true, true
		default:
			var hcm hcmv3.HttpConnectionManager
			if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatalf("node %s: listener %s: %v", n.ID, l.Name, err)
			}
			if !routes[hcm.GetRds().GetRouteConfigName()] {
				t.Errorf("node %s: listener %s routes by %q, which is not sent", n.ID, l.Name, hcm.GetRds().GetRouteConfigName())
			}
			for _, rc := range n.Routes {
				if rc.Name != hcm.GetRds().GetRouteConfigName() {
					continue
				}
				for _, vh := range rc.VirtualHosts {
					for _, r := range vh.Routes {
						if c := r.GetRoute().GetCluster(); c != "" {
							httpClusters[c] = true
						}
					}
				}
			}
		}
	}
	for c := range tcpClusters {
		if httpClusters[c] {
			t.Errorf("node %s: cluster %s serves both an HTTP and a TCP listener", n.ID, c)
		}
	}
	var out []bridgeCluster
	for _, c := range n.Clusters {
		var po httpupv3.HttpProtocolOptions
		switch {
		case tcpClusters[c.Name]:
			if len(c.GetTypedExtensionProtocolOptions()) > 0 {
				t.Errorf("node %s: cluster %s of a TCP port has HTTP options", n.ID, c.Name)
			}
		case !httpClusters[c.Name]:
			t.Errorf("node %s: cluster %s is used by no listener", n.ID, c.Name)
		default:
			err := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&po)
			if err != nil || po.GetUseDownstreamProtocolConfig() == nil {
				t.Errorf("node %s: cluster %s does not speak the client's protocol upstream: %v", n.ID, c.Name, err)
			}
		}
		md := c.GetMetadata().GetFilterMetadata()[MetadataKey]
		if c.GetType() == clusterv3.Cluster_EDS {
			if md != nil || !cla[c.GetEdsClusterConfig().GetServiceName()] {
				t.Errorf("node %s: EDS cluster %s: metadata %v, assignment sent %v", n.ID, c.Name, md, cla[c.GetEdsClusterConfig().GetServiceName()])
			}
			continue
		}
		fields := md.AsMap()
		b := bridgeCluster{name: c.Name}
		b.bridge, _ = fields["bridge"].(string)
		b.credential, _ = fields["credential"].(string)
		port, _ := fields["port"].(float64)
		if err := wire.ValidateBridge(b.bridge); err != nil {
			t.Errorf("node %s: cluster %s: %v", n.ID, c.Name, err)
		}
		if port < 1 || port > 65535 || port != float64(int(port)) {
			t.Errorf("node %s: cluster %s: port %v", n.ID, c.Name, fields["port"])
		}
		b.port = uint16(port)
		if b.credential == "" || len(b.credential) > wire.MaxCredentialLen {
			t.Errorf("node %s: cluster %s: credential of %d bytes", n.ID, c.Name, len(b.credential))
		}
		if n.Bridges[b.bridge] == "" {
			t.Errorf("node %s: cluster %s is for bridge %s, which the node does not list", n.ID, c.Name, b.bridge)
		}
		eps := c.GetLoadAssignment().GetEndpoints()
		if len(eps) != 1 || len(eps[0].LbEndpoints) != 1 {
			t.Errorf("node %s: cluster %s: want exactly the relay as endpoint", n.ID, c.Name)
		}
		out = append(out, b)
	}
	return out
}

// stowawayConfigView is stowaway's configuration as its own parser reads
// it (stowaway/internal/config): unknown fields are refused.
type stowawayConfigView struct {
	Peers []struct {
		Name      string     `json:"name"`
		PublicKey string     `json:"publicKey"`
		Address   netip.Addr `json:"address"`
	} `json:"peers"`
	Bridges []struct {
		Name  string `json:"name"`
		Peer  string `json:"peer"`
		Ports []struct {
			Target   uint16 `json:"target"`
			PeerPort uint16 `json:"peerPort,omitempty"`
		} `json:"ports"`
	} `json:"bridges"`
	CredentialKeys []string `json:"credentialKeys"`
}

func (c *stowawayConfigView) bridge(name string, port uint16) (peer string, ok bool) {
	for _, b := range c.Bridges {
		if b.Name != name {
			continue
		}
		for _, p := range b.Ports {
			if p.Target == port {
				return b.Peer, true
			}
		}
	}
	return "", false
}

// stowawayView merges stowaway's Runtime resources as stowaway does and
// checks what its Compile refuses.
func stowawayView(t *testing.T, n *Node) *stowawayConfigView {
	t.Helper()
	var all stowawayConfigView
	for _, rt := range n.Runtimes {
		b, err := protojson.Marshal(rt.GetLayer())
		if err != nil {
			t.Fatal(err)
		}
		var c stowawayConfigView
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("runtime %s: stowaway would not parse it: %v", rt.Name, err)
		}
		all.Peers = append(all.Peers, c.Peers...)
		all.Bridges = append(all.Bridges, c.Bridges...)
		all.CredentialKeys = append(all.CredentialKeys, c.CredentialKeys...)
	}
	names, keys, addrs := map[string]bool{}, map[string]bool{}, map[netip.Addr]bool{}
	for _, p := range all.Peers {
		k, err := base64.StdEncoding.DecodeString(p.PublicKey)
		switch {
		case p.Name == "" || names[p.Name]:
			t.Errorf("stowaway: peer name %q empty or twice", p.Name)
		case err != nil || len(k) != 32:
			t.Errorf("stowaway: peer %s: public key %q", p.Name, p.PublicKey)
		case keys[p.PublicKey]:
			t.Errorf("stowaway: peer %s shares a public key", p.Name)
		case !p.Address.IsValid() || addrs[p.Address]:
			t.Errorf("stowaway: peer %s: address %v invalid or shared", p.Name, p.Address)
		}
		names[p.Name], keys[p.PublicKey], addrs[p.Address] = true, true, true
	}
	bridges := map[string]bool{}
	for _, b := range all.Bridges {
		if err := wire.ValidateBridge(b.Name); err != nil || bridges[b.Name] || b.Peer == "" {
			t.Errorf("stowaway: bridge %q invalid, twice or without a peer: %v", b.Name, err)
		}
		bridges[b.Name] = true
		ports := map[uint16]bool{}
		for _, p := range b.Ports {
			if p.Target == 0 || ports[p.Target] {
				t.Errorf("stowaway: bridge %s: target port %d zero or twice", b.Name, p.Target)
			}
			ports[p.Target] = true
		}
	}
	if len(all.CredentialKeys) == 0 {
		t.Error("stowaway: no credential keys")
	}
	return &all
}

func parsePEMPublicKey(s string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(s))
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM PUBLIC KEY block")
	}
	return x509.ParsePKIXPublicKey(block.Bytes)
}

package wgnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Egress announcement. A forwarding stowaway answers GET EgressInfoPath on
// port EgressInfoPort of its tunnel address with its EgressInfo as JSON,
// for its peers only (nobody else reaches its tunnel address), e.g.
//
//	{"networks":["10.96.0.0/12","10.244.0.0/16"],"dns":"10.96.0.10","clusterDomain":"cluster.local"}
//
// An agent routes exactly those networks into the tunnel, so what it sends
// is what stowaway carries on, and points its containers' resolvers at dns.
const (
	EgressInfoPort = 80
	EgressInfoPath = "/v1/egress"
)

// EgressInfo is where a forwarding stowaway carries its peers' traffic.
type EgressInfo struct {
	// Networks are the destinations stowaway forwards TCP and UDP to: the
	// cluster's Service and Pod networks.
	Networks []netip.Prefix `json:"networks"`
	// DNS is the cluster DNS server (an address within Networks); zero if
	// stowaway knows none.
	DNS netip.Addr `json:"dns,omitzero"`
	// ClusterDomain is the cluster's DNS domain (e.g. cluster.local): a
	// Service is NAME.NAMESPACE.svc.ClusterDomain.
	ClusterDomain string `json:"clusterDomain,omitempty"`
}

// Validate reports the first problem of e.
func (e EgressInfo) Validate() error {
	if len(e.Networks) == 0 {
		return errors.New("egress: no networks")
	}
	for _, p := range e.Networks {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("egress: network %s is not a network address with its prefix length", p)
		}
		if p.Bits() == 0 {
			return fmt.Errorf("egress: network %s would take every address", p)
		}
	}
	if e.DNS.IsValid() && !e.Contains(e.DNS) {
		return fmt.Errorf("egress: DNS server %s is outside the networks %v", e.DNS, e.Networks)
	}
	if e.DNS.IsValid() && e.DNS.Zone() != "" {
		return fmt.Errorf("egress: DNS server %s has a zone", e.DNS)
	}
	if d := e.ClusterDomain; d != "" && !validDomain(d) {
		return fmt.Errorf("egress: cluster domain %q is not a DNS name", d)
	}
	return nil
}

// Contains says whether ip is within one of the networks.
func (e EgressInfo) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range e.Networks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// SearchDomains are the DNS search list of a container that lives in
// namespace, as kubelet writes it for a Pod there: so "svc" finds the
// namespace's Service, "svc.ns" another namespace's. Empty without a
// cluster domain.
func (e EgressInfo) SearchDomains(namespace string) []string {
	if e.ClusterDomain == "" {
		return nil
	}
	d := e.ClusterDomain
	if namespace == "" {
		return []string{"svc." + d, d}
	}
	return []string{namespace + ".svc." + d, "svc." + d, d}
}

// ParseEgressInfo reads the JSON form of an EgressInfo and validates it.
func ParseEgressInfo(b []byte) (EgressInfo, error) {
	var e EgressInfo
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return EgressInfo{}, fmt.Errorf("egress: %w", err)
	}
	if dec.More() {
		return EgressInfo{}, errors.New("egress: trailing data after the JSON object")
	}
	if err := e.Validate(); err != nil {
		return EgressInfo{}, err
	}
	return e, nil
}

// validDomain accepts a DNS name of letters, digits, '-' and '.', without
// a trailing dot.
func validDomain(d string) bool {
	if len(d) > 253 || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Package model is the control plane's picture of what the data plane must
// do, built by the operator from the custom resources and the Pods, and
// handed to a Publisher (the xDS server) after each burst of changes: which
// Pods run carrier for which mount and on which ports, where the fallback
// clone answers, which bridges claim which requests for which client, and
// which clients may use the tunnel. It holds no Kubernetes types, so
// translating it to xDS is a pure function of it.
package model

import (
	"context"
	"net/netip"

	"gefyra.dev/gefyra/internal/bridge"
)

// Model is one consistent view. Every slice is sorted (see Sort) so two
// builds of the same state compare equal.
type Model struct {
	Mounts   []Mount
	Bridges  []Bridge
	Clients  []Client
	Stowaway Stowaway
}

// Publisher receives each new model. Publish must not keep a reference to
// slices it does not own beyond the call unless it copies them; the caller
// never changes a model after handing it over.
type Publisher interface {
	Publish(ctx context.Context, m *Model) error
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(ctx context.Context, m *Model) error

// Publish calls f.
func (f PublisherFunc) Publish(ctx context.Context, m *Model) error { return f(ctx, m) }

// Mount is one workload container whose Pods run carrier.
type Mount struct {
	Namespace string
	Name      string
	// Kind, Workload and Container name the target.
	Kind      string
	Workload  string
	Container string
	// Ports are the container's declared ports: carrier listens on each.
	Ports []Port
	// Pods run carrier in place of the container.
	Pods []Pod
	// Fallback are the fallback clone's ready Pod IPs; they serve the same
	// Ports.
	Fallback []netip.Addr
}

// Key is namespace/name.
func (m Mount) Key() string { return m.Namespace + "/" + m.Name }

// Port is a container port.
type Port struct {
	Name     string
	Port     uint16
	Protocol string // TCP, UDP or SCTP as Kubernetes spells it
}

// Pod is a Pod running carrier.
type Pod struct {
	Namespace string
	Name      string
	IP        netip.Addr // invalid while the Pod has none
}

// NodeID is the xDS node ID the carrier of this Pod presents.
func (p Pod) NodeID() string { return p.Namespace + "/" + p.Name }

// Bridge is one developer's claim on a mount's traffic.
type Bridge struct {
	Namespace string
	Name      string
	// Mount is the name of the mount (same namespace) whose carriers route
	// to this bridge.
	Mount string
	// Client is the GefyraClient receiving the traffic, ClientAddress its
	// tunnel address (stowaway forwards there).
	Client        string
	ClientAddress netip.Addr
	// Ports map the mount's ports to the client's, each carried as its
	// protocol says (HTTP requests by the rules, or whole TCP
	// connections).
	Ports []bridge.PortMapping
	// Rules select the requests; none means all.
	Rules []bridge.Rule
	// Local is the developer's own name for the local side, passed through.
	Local string
}

// Key is namespace/name.
func (b Bridge) Key() string { return b.Namespace + "/" + b.Name }

// Client is a developer allowed into the tunnel.
type Client struct {
	Name      string
	User      string
	PublicKey string // base64 WireGuard public key
	Address   netip.Addr
}

// Stowaway is the cluster's end of the tunnel.
type Stowaway struct {
	PublicKey string
	Address   netip.Addr
	CIDR      netip.Prefix
}

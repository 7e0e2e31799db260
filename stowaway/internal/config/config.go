// Package config is stowaway's model of what it serves: the developers'
// WireGuard peers, the bridges that name them, and the keys that verify
// carrier credentials. The control plane sends it over xDS (Runtime
// resources whose layer is the JSON form, see TypeURL); a file holds it for
// a standalone stowaway.
// Compile validates a Config and indexes it for the relay's hot path.
package config

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/internal/wire"
)

// Config is everything stowaway serves. Its JSON form is what the control
// plane sends.
type Config struct {
	// Peers are the developers' WireGuard endpoints.
	Peers []Peer `json:"peers"`
	// Bridges say which peer gets a carrier's connection for which port.
	Bridges []Bridge `json:"bridges"`
	// CredentialKeys are the PEM-encoded public keys (RSA for RS256,
	// Ed25519 for EdDSA) that verify carrier credentials. Several keys allow
	// a rotation: a credential verifying with any of them is good.
	CredentialKeys []string `json:"credentialKeys"`
}

// Peer is one developer's end of the tunnel.
type Peer struct {
	// Name identifies the peer in bridges and metrics (the GefyraClient's
	// name).
	Name string `json:"name"`
	// PublicKey is the peer's WireGuard public key (base64).
	PublicKey wgnet.Key `json:"publicKey"`
	// Address is the peer's tunnel address; stowaway dials it.
	Address netip.Addr `json:"address"`
}

// Bridge lets carrier connections for some ports through to one peer.
type Bridge struct {
	// Name is the GefyraBridge as "namespace/name", as carrier sends it.
	Name string `json:"name"`
	// Peer names the Peer that receives the bridge's connections.
	Peer string `json:"peer"`
	// Ports are the target ports carrier may ask for.
	Ports []Port `json:"ports"`
}

// Port is one port mapping of a bridge.
type Port struct {
	// Target is the port carrier names in its preamble (the workload
	// container's port).
	Target uint16 `json:"target"`
	// PeerPort is the port dialed on the peer's tunnel address; 0 means the
	// same as Target. It lets two bridges of one developer carry the same
	// container port to different local targets.
	PeerPort uint16 `json:"peerPort,omitempty"`
}

// Parse reads the JSON form of a Config. Unknown fields are an error, so a
// misspelt field is not silently ignored.
func Parse(b []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if dec.More() {
		return Config{}, errors.New("config: trailing data after the JSON object")
	}
	return c, nil
}

// Compiled is a validated Config, indexed for lookups. It is immutable.
type Compiled struct {
	Config Config
	// Keys verify carrier credentials.
	Keys []crypto.PublicKey

	peers   map[string]*Peer
	bridges map[string]*compiledBridge
}

type compiledBridge struct {
	Bridge
	ports map[uint16]uint16 // target -> peer port
}

// Route is where a bridge's connection for one port goes.
type Route struct {
	Bridge string
	Peer   *Peer // nil if the bridge names a peer stowaway does not have
	Port   uint16
}

// Compile validates c and indexes it. A bridge whose peer is missing is
// kept (its connections are refused as the peer being down) so that one
// dangling reference does not block everyone else's update.
func (c Config) Compile() (*Compiled, error) {
	out := &Compiled{
		Config:  c,
		peers:   make(map[string]*Peer, len(c.Peers)),
		bridges: make(map[string]*compiledBridge, len(c.Bridges)),
	}
	keys := map[wgnet.Key]string{}
	addrs := map[netip.Addr]string{}
	for i := range c.Peers {
		p := &c.Peers[i]
		switch {
		case p.Name == "":
			return nil, fmt.Errorf("config: peer %d has no name", i)
		case out.peers[p.Name] != nil:
			return nil, fmt.Errorf("config: peer %q listed twice", p.Name)
		case p.PublicKey.IsZero():
			return nil, fmt.Errorf("config: peer %q has no public key", p.Name)
		case keys[p.PublicKey] != "":
			return nil, fmt.Errorf("config: peers %q and %q share a public key", keys[p.PublicKey], p.Name)
		case !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.Zone() != "":
			return nil, fmt.Errorf("config: peer %q has no valid tunnel address", p.Name)
		case addrs[p.Address.Unmap()] != "":
			return nil, fmt.Errorf("config: peers %q and %q share tunnel address %s", addrs[p.Address.Unmap()], p.Name, p.Address)
		}
		p.Address = p.Address.Unmap()
		keys[p.PublicKey] = p.Name
		addrs[p.Address] = p.Name
		out.peers[p.Name] = p
	}
	for i, b := range c.Bridges {
		if err := wire.ValidateBridge(b.Name); err != nil {
			return nil, fmt.Errorf("config: bridge %d: %w", i, err)
		}
		if out.bridges[b.Name] != nil {
			return nil, fmt.Errorf("config: bridge %q listed twice", b.Name)
		}
		if b.Peer == "" {
			return nil, fmt.Errorf("config: bridge %q names no peer", b.Name)
		}
		cb := &compiledBridge{Bridge: b, ports: make(map[uint16]uint16, len(b.Ports))}
		for _, p := range b.Ports {
			if p.Target == 0 {
				return nil, fmt.Errorf("config: bridge %q: target port 0", b.Name)
			}
			if _, dup := cb.ports[p.Target]; dup {
				return nil, fmt.Errorf("config: bridge %q: target port %d listed twice", b.Name, p.Target)
			}
			pp := p.PeerPort
			if pp == 0 {
				pp = p.Target
			}
			cb.ports[p.Target] = pp
		}
		out.bridges[b.Name] = cb
	}
	for i, s := range c.CredentialKeys {
		k, err := ParsePublicKey([]byte(s))
		if err != nil {
			return nil, fmt.Errorf("config: credential key %d: %w", i, err)
		}
		out.Keys = append(out.Keys, k)
	}
	return out, nil
}

// Lookup finds where a connection for bridge and target port goes. ok is
// false if there is no such bridge or the bridge does not allow port
// (bridgeFound tells which).
func (c *Compiled) Lookup(bridge string, port uint16) (r Route, bridgeFound, ok bool) {
	b := c.bridges[bridge]
	if b == nil {
		return Route{}, false, false
	}
	pp, ok := b.ports[port]
	if !ok {
		return Route{}, true, false
	}
	return Route{Bridge: b.Name, Peer: c.peers[b.Peer], Port: pp}, true, true
}

// Peer returns the named peer, or nil.
func (c *Compiled) Peer(name string) *Peer { return c.peers[name] }

// HasBridge reports whether the bridge exists.
func (c *Compiled) HasBridge(name string) bool { return c.bridges[name] != nil }

// ParsePublicKey reads a PEM "PUBLIC KEY" (PKIX) block holding an RSA
// (at least 2048 bits) or Ed25519 key, or a PEM "RSA PUBLIC KEY" (PKCS #1).
func ParsePublicKey(b []byte) (crypto.PublicKey, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("data after the PEM block")
	}
	var k any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		k, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q, want PUBLIC KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits, want at least 2048", k.N.BitLen())
		}
		return k, nil
	case ed25519.PublicKey:
		return k, nil
	default:
		return nil, fmt.Errorf("key type %T, want RSA or Ed25519", k)
	}
}

// ReadFile reads a Config in its JSON form from path.
func ReadFile(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

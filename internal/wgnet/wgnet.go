// Package wgnet is a userspace WireGuard endpoint with its own TCP/IP stack:
// wireguard-go's device on top of a gVisor netstack. It needs no kernel
// module, no TUN device and no capabilities, so it runs as an unprivileged
// process. Both ends of a gefyra tunnel use it: stowaway in the cluster and
// the agent on the developer's machine.
//
// Connections are made with DialContext, DialUDP and Listen (or HandleTCP,
// which decides about each incoming connection before its handshake
// completes, and HandleUDP for new UDP flows), inside the tunnel only;
// nothing here touches the host's routing. Peers can be added and removed
// at runtime with SetPeers without disturbing the others.
//
// A forwarding endpoint (Config.Forwarding) also terminates TCP connections
// and UDP flows its peers address to other hosts, and hands them to its
// handlers with the address they were meant for: that is how stowaway
// carries a developer's traffic on into the cluster (its egress). Host
// does the same for a kernel TUN device on the developer's side, and
// EgressInfo is what stowaway announces about it.
//
// The stack sits behind a TUN device of this package's own that moves
// packets between gVisor and WireGuard in batches, with GSO on the way out
// and gVisor's GRO on the way in (see fastStack); wireguard-go's stock
// netstack TUN, one packet at a time, remains for comparison in the
// benchmarks.
package wgnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// DefaultMTU is the tunnel MTU when Config.MTU is 0: 1500 minus the IPv6,
// UDP and WireGuard overhead, as wg-quick uses.
const DefaultMTU = 1420

// MinMTU and MaxMTU bound Config.MTU. 1280 is the least IPv6 allows; the
// most is what fits a UDP datagram after WireGuard's own header and tag.
const (
	MinMTU = 1280
	MaxMTU = 65535 - 80
)

// Config describes an endpoint.
type Config struct {
	// PrivateKey is this endpoint's WireGuard private key (required).
	PrivateKey Key
	// ListenPort is the UDP port to listen on; 0 picks a free one (see
	// Net.ListenPort).
	ListenPort int
	// Address is this endpoint's address inside the tunnel (required).
	Address netip.Addr
	// MTU of the tunnel; 0 means DefaultMTU.
	MTU int
	// Peers are the initial peers.
	Peers []Peer
	// Log receives WireGuard's messages (debug and warnings); nil discards.
	Log *slog.Logger
	// Forwarding makes the stack take TCP connections and UDP datagrams
	// for any address, not only its own, and answer from that address:
	// HandleTCP and HandleUDP then see every flow a peer sends into the
	// tunnel, with the address it was meant for (e.g. a cluster Service).
	// Which peers may reach which addresses is up to the handlers.
	Forwarding bool

	// bind replaces the UDP socket layer (tests wrap it to observe packets).
	bind conn.Bind
	// stockTUN selects wireguard-go's own netstack TUN instead of the
	// batched one (benchmarks compare the two).
	stockTUN bool
}

// Peer is a remote WireGuard endpoint.
type Peer struct {
	// PublicKey identifies the peer (required, unique).
	PublicKey Key
	// AllowedIPs are the tunnel addresses routed to this peer and accepted
	// as source addresses from it.
	AllowedIPs []netip.Prefix
	// Endpoint is the peer's UDP address; the zero value leaves it unknown
	// until the peer makes contact (it then roams with the peer).
	Endpoint netip.AddrPort
	// PersistentKeepalive sends a keepalive this often to hold NAT and
	// firewall mappings open; 0 disables it. Whole seconds, at most 65535.
	PersistentKeepalive time.Duration
}

// PeerStats are the counters of one peer.
type PeerStats struct {
	PublicKey Key
	// Endpoint is the peer's current UDP address (zero if unknown).
	Endpoint netip.AddrPort
	// LastHandshake is the time of the last completed handshake (zero if
	// none yet).
	LastHandshake time.Time
	// RxBytes and TxBytes count WireGuard bytes received from and sent to
	// the peer.
	RxBytes, TxBytes uint64
}

// Net is a running WireGuard endpoint with its own TCP/IP stack.
type Net struct {
	dev   *device.Device
	stack netStack
	addr  netip.Addr
	mtu   int
	pub   Key
	port  int

	mu     sync.Mutex // guards the fields below
	peers  map[Key]Peer
	closed bool
}

// New starts an endpoint.
func New(cfg Config) (*Net, error) {
	if cfg.PrivateKey.IsZero() {
		return nil, errors.New("wgnet: private key is required")
	}
	if !cfg.Address.IsValid() {
		return nil, errors.New("wgnet: tunnel address is required")
	}
	if cfg.Address.Zone() != "" || cfg.Address.IsUnspecified() || cfg.Address.IsMulticast() {
		return nil, fmt.Errorf("wgnet: tunnel address %s cannot be a host address", cfg.Address)
	}
	addr := cfg.Address.Unmap()
	if cfg.ListenPort < 0 || cfg.ListenPort > 65535 {
		return nil, fmt.Errorf("wgnet: listen port %d out of range", cfg.ListenPort)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < MinMTU || mtu > MaxMTU {
		return nil, fmt.Errorf("wgnet: MTU %d out of range [%d, %d]", mtu, MinMTU, MaxMTU)
	}
	if _, err := peersConfig(nil, cfg.Peers); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var st netStack
	var err error
	if cfg.stockTUN {
		if cfg.Forwarding {
			return nil, errors.New("wgnet: forwarding needs the batched stack")
		}
		st, err = newStockStack(addr, mtu)
	} else {
		st, err = newFastStack(addr, mtu, cfg.Forwarding)
	}
	if err != nil {
		return nil, fmt.Errorf("wgnet: %w", err)
	}
	bind := cfg.bind
	if bind == nil {
		bind = newBind()
	}
	dev := device.NewDevice(st.tunDevice(), bind, wgLogger(log))
	n := &Net{
		dev:   dev,
		stack: st,
		addr:  addr,
		mtu:   mtu,
		pub:   cfg.PrivateKey.PublicKey(),
		peers: map[Key]Peer{},
	}
	uapi := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", cfg.PrivateKey.hex(), cfg.ListenPort)
	if err := dev.IpcSet(uapi); err != nil {
		dev.Close()
		return nil, fmt.Errorf("wgnet: configure device: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("wgnet: bring device up: %w", err)
	}
	port, err := n.readListenPort()
	if err != nil {
		dev.Close()
		return nil, err
	}
	n.port = port
	if err := n.SetPeers(cfg.Peers); err != nil {
		dev.Close()
		return nil, err
	}
	return n, nil
}

// PublicKey is this endpoint's public key.
func (n *Net) PublicKey() Key { return n.pub }

// Address is this endpoint's tunnel address.
func (n *Net) Address() netip.Addr { return n.addr }

// MTU is the tunnel MTU.
func (n *Net) MTU() int { return n.mtu }

// ListenPort is the UDP port the endpoint listens on.
func (n *Net) ListenPort() int { return n.port }

// SetPeers makes peers the complete set of peers. Peers that are not in it
// any more are removed; new ones are added; a peer that stays keeps its
// session, and its endpoint is only touched if the configured endpoint
// changed (so a roaming peer is not pulled back to a stale address).
func (n *Net) SetPeers(peers []Peer) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return net.ErrClosed
	}
	uapi, err := peersConfig(n.peers, peers)
	if err != nil {
		return err
	}
	if uapi != "" {
		if err := n.dev.IpcSet(uapi); err != nil {
			return fmt.Errorf("wgnet: set peers: %w", err)
		}
	}
	next := make(map[Key]Peer, len(peers))
	for _, p := range peers {
		p.AllowedIPs = append([]netip.Prefix(nil), p.AllowedIPs...)
		next[p.PublicKey] = p
	}
	n.peers = next
	return nil
}

// Reconnect drops the session with the peer and starts a new handshake at
// once. Use it when the peer has evidently lost the session (it restarted,
// or moved): WireGuard would otherwise only notice after its own timeouts.
// TCP connections through the peer survive; their packets are retransmitted.
// A roamed endpoint is forgotten: the peer's configured Endpoint is used.
func (n *Net) Reconnect(pub Key) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return net.ErrClosed
	}
	p, ok := n.peers[pub]
	if !ok {
		return fmt.Errorf("wgnet: no peer %s", pub)
	}
	// Removing and adding the peer discards its keys; the re-added peer
	// initiates a handshake with its first keepalive or packet.
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\nremove=true\n", pub.hex())
	writePeer(&b, p, nil)
	if err := n.dev.IpcSet(b.String()); err != nil {
		return fmt.Errorf("wgnet: reconnect: %w", err)
	}
	return nil
}

// Peers returns the configured peers.
func (n *Net) Peers() []Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Peer, 0, len(n.peers))
	for _, p := range n.peers {
		p.AllowedIPs = append([]netip.Prefix(nil), p.AllowedIPs...)
		out = append(out, p)
	}
	return out
}

// Stats returns the counters of every peer.
func (n *Net) Stats() ([]PeerStats, error) {
	s, err := n.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("wgnet: read device state: %w", err)
	}
	_, peers, err := parseIpcGet(s)
	return peers, err
}

// PeerStats returns the counters of one peer; ok is false if there is no
// such peer.
func (n *Net) PeerStats(pub Key) (PeerStats, bool, error) {
	all, err := n.Stats()
	if err != nil {
		return PeerStats{}, false, err
	}
	for _, p := range all {
		if p.PublicKey == pub {
			return p, true, nil
		}
	}
	return PeerStats{}, false, nil
}

// DialContext connects to address (an IP literal and port) inside the
// tunnel. network is "tcp", "tcp4" or "tcp6".
func (n *Net) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := parseAddrPort(network, address, false)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return n.stack.dialTCP(ctx, ap)
}

// DialUDP opens a UDP flow to address (an IP literal and port) inside the
// tunnel, from this endpoint's address and a free port. network is "udp",
// "udp4" or "udp6". Each Write is one datagram; Read returns the datagrams
// address answers with.
func (n *Net) DialUDP(network, address string) (net.Conn, error) {
	ap, err := parseUDPAddrPort(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return n.stack.dialUDP(ap)
}

// Listen listens for TCP connections inside the tunnel. address is
// "ip:port" or ":port" (this endpoint's tunnel address); network is "tcp",
// "tcp4" or "tcp6".
func (n *Net) Listen(network, address string) (net.Listener, error) {
	ap, err := parseAddrPort(network, address, true)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	switch {
	case !ap.Addr().IsValid() || ap.Addr().IsUnspecified():
		ap = netip.AddrPortFrom(n.addr, ap.Port())
	case ap.Addr() != n.addr:
		return nil, &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("%s is not this endpoint's tunnel address %s", ap.Addr(), n.addr)}
	}
	return n.stack.listenTCP(ap)
}

// Close stops the endpoint: the UDP socket, the device and the stack. Open
// connections and listeners fail from then on. What connections have
// written but the stack has not sent yet is discarded: unlike the kernel's,
// this stack does not keep sending after it is closed, so a last reply
// must be known to have arrived (e.g. the peer's FIN after it) before
// Close.
func (n *Net) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.dev.Close() // closes the tun device and with it the stack
	return nil
}

func (n *Net) readListenPort() (int, error) {
	s, err := n.dev.IpcGet()
	if err != nil {
		return 0, fmt.Errorf("wgnet: read device state: %w", err)
	}
	port, _, err := parseIpcGet(s)
	if err != nil {
		return 0, err
	}
	if port == 0 {
		return 0, errors.New("wgnet: device reports no listen port")
	}
	return port, nil
}

func parseUDPAddrPort(network, address string) (netip.AddrPort, error) {
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return netip.AddrPort{}, net.UnknownNetworkError(network)
	}
	ap, err := parseHostPort(network, address, false)
	if err == nil && ap.Port() == 0 {
		err = errors.New("port 0")
	}
	return ap, err
}

func parseAddrPort(network, address string, allowEmptyHost bool) (netip.AddrPort, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return netip.AddrPort{}, net.UnknownNetworkError(network)
	}
	return parseHostPort(network, address, allowEmptyHost)
}

// parseHostPort reads "ip:port" for network ("tcp", "udp6" etc.).
func parseHostPort(network, address string, allowEmptyHost bool) (netip.AddrPort, error) {
	host, sport, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(sport, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", sport)
	}
	if host == "" && allowEmptyHost {
		return netip.AddrPortFrom(netip.Addr{}, uint16(port)), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("host %q is not an IP address (there are no names inside the tunnel)", host)
	}
	ip = ip.Unmap()
	if (strings.HasSuffix(network, "4") && !ip.Is4()) || (strings.HasSuffix(network, "6") && !ip.Is6()) {
		return netip.AddrPort{}, fmt.Errorf("address %s does not match network %s", ip, network)
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

func wgLogger(log *slog.Logger) *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug(fmt.Sprintf(format, args...), "component", "wireguard")
			}
		},
		Errorf: func(format string, args ...any) {
			log.Warn(fmt.Sprintf(format, args...), "component", "wireguard")
		},
	}
}

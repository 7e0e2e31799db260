// Package agent is the developer's end of the gefyra tunnel: a userspace
// WireGuard peer of stowaway that accepts the connections stowaway relays
// from the cluster on its tunnel address and hands each to a local target
// (a port on this machine or a local container's IP and port), chosen by
// the tunnel port it arrived on.
//
// The agent keeps the tunnel up by itself: a persistent keepalive holds NAT
// mappings open and makes stowaway learn a new source address after the
// network changes, and stowaway's host name is resolved again now and then
// so a moved endpoint is followed.
//
// With an egress device configured the agent also carries the local
// containers' own traffic for the cluster's Services and Pods into the
// cluster (see egress.go).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gefyra.dev/gefyra/cli/internal/agent/route"
	"gefyra.dev/gefyra/internal/pipe"
	"gefyra.dev/gefyra/internal/wgnet"
)

// Defaults.
const (
	DefaultKeepalive       = 25 * time.Second
	DefaultResolveInterval = 30 * time.Second
	// DefaultDialTimeout bounds dialing a local target. It is shorter
	// than stowaway's own dial timeout, so a target that does not answer
	// is refused in time for carrier to fall back.
	DefaultDialTimeout   = 3 * time.Second
	DefaultProbeInterval = 10 * time.Second
)

// DefaultStowawayAddress is stowaway's tunnel address when
// Stowaway.Address is unset.
var DefaultStowawayAddress = netip.MustParseAddr("10.122.0.1")

// DefaultStowawayAllowedIPs is routed to stowaway when Stowaway.AllowedIPs
// is empty: the tunnel network.
var DefaultStowawayAllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.122.0.0/16")}

// Config describes an agent. Its JSON form is the agent's config file.
type Config struct {
	// PrivateKey is the developer's WireGuard private key; it never leaves
	// this machine.
	PrivateKey wgnet.Key `json:"privateKey"`
	// Address is the agent's tunnel address (allocated by the control
	// plane).
	Address netip.Addr `json:"address"`
	// Stowaway is the cluster's end of the tunnel.
	Stowaway Stowaway `json:"stowaway"`
	// ListenPort is the local UDP port; 0 picks one.
	ListenPort int `json:"listenPort,omitempty"`
	// MTU of the tunnel; 0 means wgnet.DefaultMTU.
	MTU int `json:"mtu,omitempty"`
	// Keepalive is the persistent keepalive interval; 0 means
	// DefaultKeepalive, negative disables it.
	Keepalive Duration `json:"keepalive,omitempty"`
	// ResolveInterval is how often stowaway's host name is resolved again;
	// 0 means DefaultResolveInterval.
	ResolveInterval Duration `json:"resolveInterval,omitempty"`
	// ProbeInterval is how often the agent checks that stowaway still
	// answers through the tunnel; when it does not (stowaway restarted and
	// lost the session) the agent shakes hands anew at once instead of
	// waiting for WireGuard's own timeouts. 0 means DefaultProbeInterval,
	// negative disables probing.
	ProbeInterval Duration `json:"probeInterval,omitempty"`
	// Targets maps a tunnel port to the local "host:port" its connections
	// are handed to.
	Targets map[uint16]string `json:"targets"`
	// EgressDevice, if set, is the name of the TUN device the agent makes
	// to carry traffic for the cluster's networks (as stowaway announces
	// them) through the tunnel. It needs CAP_NET_ADMIN and /dev/net/tun:
	// the agent container has them; an agent running on the developer's
	// machine itself leaves it empty, so the machine's routes stay as
	// they are.
	EgressDevice string `json:"egressDevice,omitempty"`
}

// Stowaway is the agent's only WireGuard peer.
type Stowaway struct {
	// Endpoint is stowaway's UDP address, "host:port"; the host may be a
	// name.
	Endpoint string `json:"endpoint"`
	// PublicKey is stowaway's WireGuard public key.
	PublicKey wgnet.Key `json:"publicKey"`
	// AllowedIPs are the tunnel addresses routed to stowaway (default
	// DefaultStowawayAllowedIPs).
	AllowedIPs []netip.Prefix `json:"allowedIPs,omitempty"`
	// Address is stowaway's own tunnel address, which the probe dials
	// (default DefaultStowawayAddress).
	Address netip.Addr `json:"address,omitzero"`
}

// Duration is a time.Duration that reads and writes as "25s" in JSON.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Validate reports the first problem of c.
func (c *Config) Validate() error {
	if c.PrivateKey.IsZero() {
		return errors.New("agent: private key is required")
	}
	if !c.Address.IsValid() {
		return errors.New("agent: tunnel address is required")
	}
	if c.Stowaway.PublicKey.IsZero() {
		return errors.New("agent: stowaway's public key is required")
	}
	if _, _, err := splitEndpoint(c.Stowaway.Endpoint); err != nil {
		return err
	}
	if d := c.EgressDevice; d != "" && (len(d) > 15 || strings.ContainsAny(d, "/ \t\n\x00:") || d == "." || d == "..") {
		return fmt.Errorf("agent: egress device %q is not a network device name (at most 15 characters, no '/', ':' or spaces)", d)
	}
	return validateTargets(c.Targets)
}

func validateTargets(t map[uint16]string) error {
	for port, target := range t {
		if port == 0 {
			return errors.New("agent: target for tunnel port 0")
		}
		host, p, err := net.SplitHostPort(target)
		if err != nil {
			return fmt.Errorf("agent: target %q of port %d: %w", target, port, err)
		}
		if host == "" {
			return fmt.Errorf("agent: target %q of port %d has no host", target, port)
		}
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("agent: target %q of port %d: bad port", target, port)
		}
	}
	return nil
}

func splitEndpoint(ep string) (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(ep)
	if err != nil {
		return "", 0, fmt.Errorf("agent: stowaway endpoint %q: %w", ep, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || h == "" {
		return "", 0, fmt.Errorf("agent: stowaway endpoint %q: want host:port", ep)
	}
	return h, uint16(n), nil
}

// Agent is the developer's tunnel endpoint.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	dialer net.Dialer

	lastProbe atomic.Pointer[probeResult]
	egress    atomic.Pointer[egress]

	active, total, failed atomic.Int64

	mu       sync.Mutex // guards the fields below
	net      *wgnet.Net
	endpoint netip.AddrPort // stowaway's resolved endpoint
	// egressNets are routed to stowaway besides its AllowedIPs: the
	// cluster's networks, once the egress is set up.
	egressNets []netip.Prefix
	targets    map[uint16]string
	conns      map[net.Conn]struct{}
	closing    bool
	wg         sync.WaitGroup // connection handlers; Add only while !closing
	bg         sync.WaitGroup // the egress's loop
}

// New returns an agent for cfg; Run starts it.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Stowaway.AllowedIPs) == 0 {
		cfg.Stowaway.AllowedIPs = DefaultStowawayAllowedIPs
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = Duration(DefaultKeepalive)
	}
	if cfg.ResolveInterval <= 0 {
		cfg.ResolveInterval = Duration(DefaultResolveInterval)
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = Duration(DefaultProbeInterval)
	}
	if !cfg.Stowaway.Address.IsValid() {
		cfg.Stowaway.Address = DefaultStowawayAddress
	}
	return &Agent{
		cfg: cfg,
		log: log,
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
		dialer:  net.Dialer{Timeout: DefaultDialTimeout},
		targets: maps.Clone(cfg.Targets),
		conns:   map[net.Conn]struct{}{},
	}, nil
}

// Run brings the tunnel up, serves the targets and keeps stowaway's
// endpoint resolved until ctx is done; then it closes every listener and
// connection and the tunnel.
func (a *Agent) Run(ctx context.Context) error {
	ep, err := a.resolve(ctx)
	if err != nil {
		return err
	}
	n, err := wgnet.New(wgnet.Config{
		PrivateKey: a.cfg.PrivateKey,
		ListenPort: a.cfg.ListenPort,
		Address:    a.cfg.Address,
		MTU:        a.cfg.MTU,
		Peers:      []wgnet.Peer{a.stowawayPeer(ep)},
		Log:        a.log,
	})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.mu.Lock()
	a.net, a.endpoint = n, ep
	a.mu.Unlock()
	if err := n.HandleTCP(a.handleTCP); err != nil {
		a.shutdown()
		return fmt.Errorf("agent: %w", err)
	}
	a.log.Info("agent tunnel up", "public_key", a.cfg.PrivateKey.PublicKey().String(), "address", a.cfg.Address.String(),
		"stowaway", ep.String(), "listen_port", n.ListenPort(), "mtu", n.MTU())
	if a.cfg.EgressDevice != "" {
		eg := &egress{a: a, net: n, status: EgressStatus{State: EgressWaiting}}
		a.egress.Store(eg)
		ectx, cancel := context.WithCancel(ctx)
		defer cancel()
		a.bg.Go(func() { eg.run(ectx) })
	}

	resolve := time.NewTicker(time.Duration(a.cfg.ResolveInterval))
	defer resolve.Stop()
	var probe <-chan time.Time
	if a.cfg.ProbeInterval > 0 {
		t := time.NewTicker(time.Duration(a.cfg.ProbeInterval))
		defer t.Stop()
		probe = t.C
	}
	for {
		select {
		case <-ctx.Done():
			a.shutdown()
			return nil
		case <-resolve.C:
			a.refreshEndpoint(ctx)
		case <-probe:
			a.probe(ctx)
		}
	}
}

type probeResult struct {
	at time.Time
	ok bool
}

// probe opens a TCP connection to stowaway's tunnel address on a port
// nothing listens on. A reset (or an accept) is an answer: the session is
// good. No answer means stowaway lost the session (it restarted) or
// cannot be reached; a new handshake is started at once.
func (a *Agent) probe(ctx context.Context) {
	a.mu.Lock()
	n := a.net
	a.mu.Unlock()
	if n == nil {
		return
	}
	timeout := min(time.Duration(a.cfg.ProbeInterval), 3*time.Second)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := n.DialContext(pctx, "tcp", netip.AddrPortFrom(a.cfg.Stowaway.Address, 1).String())
	if err == nil {
		c.Close()
	}
	ok := err == nil || pctx.Err() == nil
	a.lastProbe.Store(&probeResult{at: time.Now(), ok: ok})
	if ok || ctx.Err() != nil {
		return
	}
	a.log.Info("agent: stowaway does not answer through the tunnel; shaking hands anew")
	if err := n.Reconnect(a.cfg.Stowaway.PublicKey); err != nil {
		a.log.Warn("agent: reconnect", "err", err)
	}
}

func (a *Agent) shutdown() {
	a.mu.Lock()
	a.closing = true
	for c := range a.conns {
		c.Close()
	}
	n := a.net
	a.mu.Unlock()
	a.wg.Wait()
	a.bg.Wait() // its ctx is done: it removes the egress device
	if n != nil {
		n.HandleTCP(nil)
		n.Close()
	}
}

func (a *Agent) stowawayPeer(ep netip.AddrPort) wgnet.Peer {
	ka := time.Duration(a.cfg.Keepalive)
	if ka < 0 {
		ka = 0
	}
	return wgnet.Peer{
		PublicKey:           a.cfg.Stowaway.PublicKey,
		AllowedIPs:          append(slices.Clone(a.cfg.Stowaway.AllowedIPs), a.egressNets...),
		Endpoint:            ep,
		PersistentKeepalive: ka,
	}
}

// resolve looks up stowaway's endpoint, preferring IPv4.
func (a *Agent) resolve(ctx context.Context) (netip.AddrPort, error) {
	host, port, err := splitEndpoint(a.cfg.Stowaway.Endpoint)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), port), nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ips, err := a.lookup(rctx, host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("agent: resolve stowaway %q: %w", host, err)
	}
	slices.SortStableFunc(ips, func(x, y netip.Addr) int {
		switch {
		case x.Unmap().Is4() == y.Unmap().Is4():
			return 0
		case x.Unmap().Is4():
			return -1
		}
		return 1
	})
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("agent: stowaway %q has no address", host)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), port), nil
}

// refreshEndpoint follows a changed DNS answer for stowaway's host.
func (a *Agent) refreshEndpoint(ctx context.Context) {
	ep, err := a.resolve(ctx)
	if err != nil {
		a.log.Warn("agent: cannot resolve stowaway; keeping the last address", "err", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ep == a.endpoint || a.net == nil {
		return
	}
	// The tunnel's own packets to stowaway must not be routed into it.
	if slices.ContainsFunc(a.egressNets, func(p netip.Prefix) bool { return p.Contains(ep.Addr()) }) {
		if err := route.Pin(ep.Addr()); err != nil {
			a.log.Warn("agent: cannot keep stowaway's new endpoint out of the cluster's routes", "err", err)
		}
	}
	if err := a.net.SetPeers([]wgnet.Peer{a.stowawayPeer(ep)}); err != nil {
		a.log.Warn("agent: cannot update stowaway's endpoint", "err", err)
		return
	}
	// A moved stowaway may be a new process that lost the session.
	if err := a.net.Reconnect(a.cfg.Stowaway.PublicKey); err != nil {
		a.log.Warn("agent: reconnect", "err", err)
	}
	a.log.Info("agent: stowaway moved", "from", a.endpoint.String(), "to", ep.String())
	a.endpoint = ep
}

// SetTargets replaces the port → target table. New connections follow it
// at once; open ones go on.
func (a *Agent) SetTargets(t map[uint16]string) error {
	if err := validateTargets(t); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.targets = maps.Clone(t)
	return nil
}

// begin registers a connection handler unless the agent is closing.
func (a *Agent) begin() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return false
	}
	a.wg.Add(1)
	return true
}

// setEgressNets routes nets to stowaway inside the tunnel, besides its
// AllowedIPs.
func (a *Agent) setEgressNets(nets []netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if slices.Equal(a.egressNets, nets) || a.net == nil {
		return nil
	}
	prev := a.egressNets
	a.egressNets = slices.Clone(nets)
	if err := a.net.SetPeers([]wgnet.Peer{a.stowawayPeer(a.endpoint)}); err != nil {
		a.egressNets = prev
		return fmt.Errorf("agent: route the cluster's networks to stowaway: %w", err)
	}
	return nil
}

// stowawayEndpoint is stowaway's resolved UDP endpoint.
func (a *Agent) stowawayEndpoint() netip.AddrPort {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.endpoint
}

// handleTCP decides about a connection stowaway opens through the tunnel:
// it dials the port's local target first and completes the tunnel
// handshake only if that worked. Otherwise the SYN is answered with a
// reset, which stowaway reports to carrier as "dial failed" before any
// request byte was sent, so carrier can still fall back.
func (a *Agent) handleTCP(r *wgnet.TCPRequest) {
	port := r.Local.Port()
	a.mu.Lock()
	target, ok := a.targets[port]
	if ok && !a.closing {
		a.wg.Add(1)
	} else {
		ok = false
	}
	a.mu.Unlock()
	if !ok {
		r.Reject()
		return
	}
	defer a.wg.Done()
	a.total.Add(1)
	up, err := a.dialer.Dial("tcp", target)
	if err != nil {
		a.failed.Add(1)
		a.log.Warn("agent: local target does not answer", "port", port, "target", target, "err", err)
		r.Reject()
		return
	}
	defer up.Close()
	c, err := r.Accept()
	if err != nil {
		a.log.Warn("agent: accepting a tunnel connection", "port", port, "err", err)
		return
	}
	defer c.Close()
	if !a.track(c, up) {
		return
	}
	defer a.untrack(c, up)
	a.active.Add(1)
	defer a.active.Add(-1)
	// Shutdown closes both connections; Join needs no ctx of its own.
	if _, _, err := pipe.Join(context.Background(), c, up); err != nil {
		a.log.Debug("agent: connection ended with an error", "port", port, "target", target, "err", err)
	}
}

func (a *Agent) track(cs ...net.Conn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return false
	}
	for _, c := range cs {
		a.conns[c] = struct{}{}
	}
	return true
}

func (a *Agent) untrack(cs ...net.Conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range cs {
		delete(a.conns, c)
	}
}

// Status is what the agent reports to the CLI.
type Status struct {
	PublicKey wgnet.Key  `json:"publicKey"`
	Address   netip.Addr `json:"address"`
	// Stowaway is stowaway's current UDP address.
	Stowaway netip.AddrPort `json:"stowaway"`
	// LastHandshake is zero until the tunnel has come up once.
	LastHandshake time.Time `json:"lastHandshake"`
	// HandshakeAgeSeconds is the time since LastHandshake; -1 before the
	// first. WireGuard shakes hands at least every two minutes while the
	// keepalive runs, so a much older one means the tunnel is down.
	HandshakeAgeSeconds float64           `json:"handshakeAgeSeconds"`
	RxBytes             uint64            `json:"rxBytes"`
	TxBytes             uint64            `json:"txBytes"`
	Targets             map[uint16]string `json:"targets"`
	ActiveConnections   int64             `json:"activeConnections"`
	TotalConnections    int64             `json:"totalConnections"`
	// FailedConnections are those whose local target did not answer.
	FailedConnections int64 `json:"failedConnections"`
	// Up: a handshake within the last 180 s, and the last probe (if any)
	// was answered.
	Up bool `json:"up"`
	// LastProbe is when stowaway was last probed through the tunnel, and
	// ProbeOK whether it answered.
	LastProbe time.Time `json:"lastProbe,omitzero"`
	ProbeOK   bool      `json:"probeOK"`
	// Egress is the way into the cluster for the local containers.
	Egress EgressStatus `json:"egress"`
}

// Status reports the tunnel's state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	n, ep, targets := a.net, a.endpoint, maps.Clone(a.targets)
	a.mu.Unlock()
	s := Status{
		PublicKey:           a.cfg.PrivateKey.PublicKey(),
		Address:             a.cfg.Address,
		Stowaway:            ep,
		HandshakeAgeSeconds: -1,
		Targets:             targets,
		ActiveConnections:   a.active.Load(),
		TotalConnections:    a.total.Load(),
		FailedConnections:   a.failed.Load(),
		Egress:              EgressStatus{State: EgressOff},
	}
	if eg := a.egress.Load(); eg != nil {
		s.Egress = eg.snapshot()
	} else if a.cfg.EgressDevice != "" {
		s.Egress.State = EgressWaiting
	}
	if n == nil {
		return s
	}
	ps, ok, err := n.PeerStats(a.cfg.Stowaway.PublicKey)
	if err != nil || !ok {
		return s
	}
	s.RxBytes, s.TxBytes = ps.RxBytes, ps.TxBytes
	if !ps.LastHandshake.IsZero() {
		s.LastHandshake = ps.LastHandshake
		s.HandshakeAgeSeconds = time.Since(ps.LastHandshake).Seconds()
		// A session lives at most 180 s (REJECT_AFTER_TIME) past the
		// handshake that made it.
		s.Up = s.HandshakeAgeSeconds < 180
	}
	if p := a.lastProbe.Load(); p != nil {
		s.LastProbe, s.ProbeOK = p.at, p.ok
		s.Up = s.Up && p.ok
	}
	return s
}

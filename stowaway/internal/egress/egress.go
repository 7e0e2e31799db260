// Package egress is stowaway's way out into the cluster for its peers. A
// developer's agent routes the cluster's Service and Pod networks into the
// tunnel (so a local container reaches a Service by its ClusterIP, and the
// cluster DNS by its); stowaway's netstack, forwarding, terminates each
// TCP connection and UDP flow and hands it here. Egress lets through only
// flows from a configured peer's tunnel address to an address within the
// configured networks, dials the destination from stowaway's Pod (so the
// cluster sees stowaway's Pod as the client, subject to its
// NetworkPolicies) and relays both ways, counted per peer. Anything else
// is refused: a reset for TCP, silence for UDP.
//
// Egress also answers GET wgnet.EgressInfoPath on stowaway's tunnel
// address with the networks and the cluster DNS, which is how an agent
// learns what to route.
package egress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gefyra.dev/gefyra/internal/pipe"
	"gefyra.dev/gefyra/internal/wgnet"
)

// DefaultDialTimeout bounds dialing a cluster address.
const DefaultDialTimeout = 5 * time.Second

// Dialer opens connections from stowaway's Pod (a *net.Dialer).
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Egress relays peers' flows into the cluster.
type Egress struct {
	// DialTimeout bounds dialing a destination (DefaultDialTimeout if 0).
	DialTimeout time.Duration

	info   wgnet.EgressInfo
	dialer Dialer
	log    *slog.Logger
	m      *metrics
	peers  atomic.Pointer[map[netip.Addr]string] // tunnel address -> peer name
	ctx    context.Context                       // ends every flow when cancelled
	cancel context.CancelFunc

	mu      sync.Mutex // guards the fields below
	stopped bool
	wg      sync.WaitGroup // flows; Add only while !stopped
	flows   map[string]map[io.Closer]struct{}
}

// New returns an Egress to info's networks that dials with dialer; its
// metrics are registered with reg.
func New(info wgnet.EgressInfo, dialer Dialer, reg prometheus.Registerer, log *slog.Logger) (*Egress, error) {
	if err := info.Validate(); err != nil {
		return nil, err
	}
	if dialer == nil {
		return nil, errors.New("egress: no dialer")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("egress: register metrics: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Egress{info: info, dialer: dialer, log: log, m: m, ctx: ctx, cancel: cancel, flows: map[string]map[io.Closer]struct{}{}}
	e.peers.Store(&map[netip.Addr]string{})
	return e, nil
}

// Info is what Egress announces.
func (e *Egress) Info() wgnet.EgressInfo { return e.info }

// SetPeers makes peers (tunnel address to peer name) the peers whose
// flows are let through. The open flows of a peer that is gone are
// closed, and its metrics dropped.
func (e *Egress) SetPeers(peers map[netip.Addr]string) {
	next := make(map[netip.Addr]string, len(peers))
	names := map[string]bool{}
	for a, n := range peers {
		next[a.Unmap()] = n
		names[n] = true
	}
	e.peers.Store(&next)
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, fs := range e.flows {
		if names[name] {
			continue
		}
		for c := range fs {
			c.Close()
		}
		delete(e.flows, name)
		e.m.forget(name)
	}
}

// check finds the peer of a flow from src to dst; reason says why there
// is none.
func (e *Egress) check(src, dst netip.Addr) (peer, reason string) {
	peer, ok := (*e.peers.Load())[src.Unmap()]
	switch {
	case !ok:
		return "", ReasonUnknownPeer
	case !e.info.Contains(dst):
		return "", ReasonNotAllowed
	}
	return peer, ""
}

// begin registers a flow unless Egress stopped.
func (e *Egress) begin(peer string, cs ...io.Closer) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return false
	}
	e.wg.Add(1)
	if len(cs) > 0 {
		e.trackLocked(peer, cs...)
	}
	return true
}

func (e *Egress) trackLocked(peer string, cs ...io.Closer) {
	fs := e.flows[peer]
	if fs == nil {
		fs = map[io.Closer]struct{}{}
		e.flows[peer] = fs
	}
	for _, c := range cs {
		fs[c] = struct{}{}
	}
}

// track adds open connections of peer's flow; false if peer is gone or
// Egress stopped (the caller then closes them).
func (e *Egress) track(peer string, cs ...io.Closer) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped || !e.known(peer) {
		return false
	}
	e.trackLocked(peer, cs...)
	return true
}

func (e *Egress) known(peer string) bool {
	for _, n := range *e.peers.Load() {
		if n == peer {
			return true
		}
	}
	return false
}

func (e *Egress) untrack(peer string, cs ...io.Closer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range cs {
		delete(e.flows[peer], c)
	}
}

func (e *Egress) dialTimeout() time.Duration {
	if e.DialTimeout > 0 {
		return e.DialTimeout
	}
	return DefaultDialTimeout
}

// HandleTCP is the tunnel's wgnet.TCPHandler: it dials the destination
// first and completes the peer's handshake only if that worked, so a
// destination that refuses is refused to the peer too.
func (e *Egress) HandleTCP(r *wgnet.TCPRequest) {
	peer, reason := e.check(r.Remote.Addr(), r.Local.Addr())
	if reason != "" {
		e.refuse(ProtoTCP, reason, r.Remote, r.Local, nil)
		r.Reject()
		return
	}
	if !e.begin(peer) {
		r.Reject()
		return
	}
	defer e.wg.Done()
	dctx, cancel := context.WithTimeout(e.ctx, e.dialTimeout())
	up, err := e.dialer.DialContext(dctx, "tcp", r.Local.String())
	cancel()
	if err != nil {
		e.refuse(ProtoTCP, ReasonDialFailed, r.Remote, r.Local, err)
		r.Reject()
		return
	}
	c, err := r.Accept()
	if err != nil {
		up.Close()
		e.log.Debug("egress: accepting a tunnel connection", "peer", peer, "to", r.Local.String(), "err", err)
		return
	}
	if !e.track(peer, c, up) {
		c.Close()
		up.Close()
		return
	}
	defer e.untrack(peer, c, up)
	e.m.connections.WithLabelValues(peer, ProtoTCP).Inc()
	active := e.m.active.WithLabelValues(peer, ProtoTCP)
	active.Inc()
	defer active.Dec()
	relay := pipe.Options{AToB: e.m.bytes.WithLabelValues(peer, ProtoTCP, ToCluster), BToA: e.m.bytes.WithLabelValues(peer, ProtoTCP, FromCluster)}
	if _, _, err := relay.Join(e.ctx, c, up); err != nil {
		e.log.Debug("egress: connection ended with an error", "peer", peer, "to", r.Local.String(), "err", err)
	}
}

// HandleUDP is the tunnel's wgnet.UDPHandler. It runs on the packet path:
// the check and the flow's endpoint are made at once, the dial and the
// relay in a goroutine of the flow's own.
func (e *Egress) HandleUDP(r *wgnet.UDPRequest) {
	peer, reason := e.check(r.Remote.Addr(), r.Local.Addr())
	if reason != "" {
		e.refuse(ProtoUDP, reason, r.Remote, r.Local, nil)
		return
	}
	if !e.begin(peer) {
		return
	}
	c, err := r.Accept()
	if err != nil {
		e.wg.Done()
		e.log.Debug("egress: accepting a UDP flow", "peer", peer, "to", r.Local.String(), "err", err)
		return
	}
	go func() {
		defer e.wg.Done()
		defer c.Close()
		dctx, cancel := context.WithTimeout(e.ctx, e.dialTimeout())
		up, err := e.dialer.DialContext(dctx, "udp", r.Local.String())
		cancel()
		if err != nil {
			e.refuse(ProtoUDP, ReasonDialFailed, r.Remote, r.Local, err)
			return
		}
		defer up.Close()
		if !e.track(peer, c, up) {
			return
		}
		defer e.untrack(peer, c, up)
		e.m.connections.WithLabelValues(peer, ProtoUDP).Inc()
		active := e.m.active.WithLabelValues(peer, ProtoUDP)
		active.Inc()
		defer active.Dec()
		err = wgnet.JoinUDP(e.ctx, c, up, wgnet.UDPIdle(r.Local.Port()),
			e.m.bytes.WithLabelValues(peer, ProtoUDP, ToCluster), e.m.bytes.WithLabelValues(peer, ProtoUDP, FromCluster))
		if err != nil {
			e.log.Debug("egress: UDP flow ended with an error", "peer", peer, "to", r.Local.String(), "err", err)
		}
	}()
}

func (e *Egress) refuse(proto, reason string, from, to netip.AddrPort, err error) {
	e.m.refused.WithLabelValues(proto, reason).Inc()
	args := []any{"protocol", proto, "from", from.String(), "to", to.String(), "reason", reason}
	if err != nil {
		args = append(args, "err", err)
	}
	if reason == ReasonDialFailed {
		// The developer asked for something that does not answer: worth
		// seeing, but not a problem of stowaway's.
		e.log.Info("egress: refused", args...)
		return
	}
	e.log.Debug("egress: refused", args...)
}

// Handler answers GET wgnet.EgressInfoPath with the EgressInfo.
func (e *Egress) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wgnet.EgressInfoPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(e.info)
	})
	return mux
}

// Serve answers the info requests on ln (a listener on stowaway's tunnel
// address) until ctx is done; then it closes ln and every relayed flow,
// and returns once all are gone. New flows are refused from then on.
func (e *Egress) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("egress: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	hs.Shutdown(sctx)
	cancel()
	e.stop()
	return err
}

// stop refuses new flows, ends the open ones and waits for them.
func (e *Egress) stop() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.cancel()
	e.wg.Wait()
}

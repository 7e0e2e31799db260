// Package relay is stowaway's TCP relay for carriers. Each carrier
// connection starts with an internal/wire preamble naming a bridge, a
// target port and a credential. The relay checks the credential, finds the
// bridge and its peer in the current config, dials the peer's tunnel
// address through the WireGuard tunnel and, once that connection stands,
// answers "accepted" and copies bytes both ways. Anything else is answered
// with a refusal code, counted by reason, and closed.
//
// A peer is reachable only through the bridges that name it: the carrier
// chooses a bridge, never an address.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gefyra.dev/gefyra/internal/credential"
	"gefyra.dev/gefyra/internal/pipe"
	"gefyra.dev/gefyra/internal/wire"
	"gefyra.dev/gefyra/stowaway/internal/config"
)

// Dialer opens connections inside the tunnel (a *wgnet.Net).
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Defaults of the Server's timeouts.
const (
	DefaultHeaderTimeout = 10 * time.Second
	DefaultDialTimeout   = 5 * time.Second
)

// Server relays carrier connections to peers.
type Server struct {
	// Addr is the TCP address Run listens on.
	Addr string
	// HeaderTimeout bounds how long a carrier may take to send its preamble.
	HeaderTimeout time.Duration
	// DialTimeout bounds opening the connection to the peer; a peer that
	// does not answer in time is reported as down.
	DialTimeout time.Duration
	// ProbeInterval is the pause between two liveness probes of a peer
	// (see liveness.go); 0 means DefaultProbeInterval, negative disables
	// probing.
	ProbeInterval time.Duration
	// ProbeMisses unanswered probes in a row make a peer down; 0 means
	// DefaultProbeMisses.
	ProbeMisses int

	tunnel Dialer
	log    *slog.Logger
	m      *metrics
	state  atomic.Pointer[state]
	ln     atomic.Pointer[net.Listener]

	changed chan struct{} // a new config, for watchPeers

	mu        sync.Mutex // guards the fields below
	conns     map[net.Conn]struct{}
	known     map[string]bool                   // bridges that have metric series
	watches   map[string]*peerWatch             // by peer name
	peerConns map[string]map[io.Closer]struct{} // connections relayed to each peer, dials to it
}

// state is one config generation, swapped atomically by Update.
type state struct {
	cfg      *config.Compiled
	verifier *credential.Verifier
}

// New returns a relay that dials peers through tunnel. Its metrics are
// registered with reg.
func New(tunnel Dialer, reg prometheus.Registerer, log *slog.Logger) (*Server, error) {
	if tunnel == nil {
		return nil, errors.New("relay: no tunnel dialer")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("relay: register metrics: %w", err)
	}
	return &Server{
		HeaderTimeout: DefaultHeaderTimeout,
		DialTimeout:   DefaultDialTimeout,
		tunnel:        tunnel,
		log:           log,
		m:             m,
		changed:       make(chan struct{}, 1),
		conns:         map[net.Conn]struct{}{},
		known:         map[string]bool{},
		watches:       map[string]*peerWatch{},
		peerConns:     map[string]map[io.Closer]struct{}{},
	}, nil
}

// Update switches to cfg for new connections; connections already relayed
// keep going. It fails (and keeps the old config) if the credential keys
// are unusable.
func (s *Server) Update(cfg *config.Compiled) error {
	v, err := credential.NewVerifier(cfg.Keys)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	s.state.Store(&state{cfg: cfg, verifier: v})
	select {
	case s.changed <- struct{}{}:
	default:
	}
	s.mu.Lock()
	for b := range s.known {
		if !cfg.HasBridge(b) {
			s.m.forget(b)
			delete(s.known, b)
		}
	}
	s.mu.Unlock()
	return nil
}

// ListenAddr is the address Run listens on, once it does; "" before.
func (s *Server) ListenAddr() string {
	if l := s.ln.Load(); l != nil {
		return (*l).Addr().String()
	}
	return ""
}

// Run listens on Addr and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve relays connections accepted on ln until ctx is done; then it closes
// ln and every open connection and returns once all handlers are gone.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.ln.Store(&ln)
	s.log.Info("relay listening", "addr", ln.Addr().String())
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	wctx, cancelWatch := context.WithCancel(ctx)
	wg.Go(func() { s.watchPeers(wctx) })
	var err error
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("relay: accept: %w", aerr)
			}
			break
		}
		s.track(c, true)
		wg.Go(func() {
			defer s.track(c, false)
			defer c.Close()
			s.handle(ctx, c)
		})
	}
	cancelWatch()
	ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	wg.Wait()
	return err
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

// refusal is why a connection was refused.
type refusal struct {
	code   wire.Code
	reason string
	err    error
}

func (s *Server) handle(ctx context.Context, c net.Conn) {
	c.SetReadDeadline(time.Now().Add(s.HeaderTimeout))
	h, err := wire.Decode(c)
	if err != nil {
		reason := ReasonMalformed
		if errors.Is(err, wire.ErrUnsupportedVersion) {
			reason = ReasonVersion
		}
		s.refuse(c, wire.Header{}, refusal{code: wire.CodeFor(err), reason: reason, err: err})
		return
	}
	c.SetReadDeadline(time.Time{})

	route, ref := s.route(&h)
	if ref != nil {
		s.refuse(c, h, *ref)
		return
	}
	upstream, ref := s.dial(ctx, route)
	if ref != nil {
		s.refuse(c, h, *ref)
		return
	}
	defer upstream.Close()
	s.track(upstream, true)
	defer s.track(upstream, false)
	s.trackPeer(route.Peer.Name, upstream, true)
	defer s.trackPeer(route.Peer.Name, upstream, false)

	if err := wire.WriteReply(c, wire.CodeAccepted); err != nil {
		s.log.Debug("relay: carrier gone before reply", "bridge", h.Bridge, "err", err)
		return
	}
	s.mu.Lock()
	s.known[route.Bridge] = true
	s.mu.Unlock()
	s.m.connections.WithLabelValues(route.Bridge).Inc()
	active := s.m.active.WithLabelValues(route.Bridge)
	active.Inc()
	defer active.Dec()

	relay := pipe.Options{AToB: s.m.bytes.WithLabelValues(route.Bridge, ToPeer), BToA: s.m.bytes.WithLabelValues(route.Bridge, FromPeer)}
	if _, _, err := relay.Join(ctx, c, upstream); err != nil {
		s.log.Debug("relay: connection ended with an error", "bridge", h.Bridge, "err", err)
	}
}

// route checks the credential and finds where h goes.
func (s *Server) route(h *wire.Header) (config.Route, *refusal) {
	st := s.state.Load()
	if st == nil {
		return config.Route{}, &refusal{code: wire.CodeUnknownBridge, reason: ReasonNotConfigured, err: errors.New("no config yet")}
	}
	// The credential first, so an unauthenticated caller learns nothing
	// about which bridges exist.
	if err := st.verifier.Verify(h.Credential, h.Bridge); err != nil {
		if errors.Is(err, credential.ErrForbidden) {
			return config.Route{}, &refusal{code: wire.CodeForbidden, reason: ReasonForbidden, err: err}
		}
		return config.Route{}, &refusal{code: wire.CodeUnauthenticated, reason: ReasonUnauthenticated, err: err}
	}
	r, bridgeFound, ok := st.cfg.Lookup(h.Bridge, h.Port)
	switch {
	case !bridgeFound:
		return r, &refusal{code: wire.CodeUnknownBridge, reason: ReasonUnknownBridge, err: errors.New("no such bridge")}
	case !ok:
		return r, &refusal{code: wire.CodeUnknownBridge, reason: ReasonPortNotAllowed, err: fmt.Errorf("port %d not mapped by the bridge", h.Port)}
	case r.Peer == nil:
		return r, &refusal{code: wire.CodePeerDown, reason: ReasonUnknownPeer, err: errors.New("the bridge's peer is not configured")}
	}
	return r, nil
}

func (s *Server) dial(ctx context.Context, r config.Route) (net.Conn, *refusal) {
	if s.peerDown(r.Peer.Name) {
		return nil, &refusal{code: wire.CodePeerDown, reason: ReasonPeerDown, err: fmt.Errorf("peer %s does not answer its liveness probes", r.Peer.Name)}
	}
	dctx, cancel := context.WithTimeout(ctx, s.DialTimeout)
	defer cancel()
	// A peer found gone meanwhile ends the dial at once.
	cc := &cancelCloser{cancel: cancel}
	s.trackPeer(r.Peer.Name, cc, true)
	defer s.trackPeer(r.Peer.Name, cc, false)
	if s.peerDown(r.Peer.Name) {
		cancel() // found gone between the check above and now
	}
	start := time.Now()
	addr := netip.AddrPortFrom(r.Peer.Address, r.Port).String()
	up, err := s.tunnel.DialContext(dctx, "tcp", addr)
	if err != nil {
		if dctx.Err() != nil {
			// No answer at all: the peer's tunnel is not up.
			return nil, &refusal{code: wire.CodePeerDown, reason: ReasonPeerDown, err: fmt.Errorf("dial %s (peer %s): %w", addr, r.Peer.Name, err)}
		}
		// An answer, but a refusal: the tunnel is up, the port is not served.
		return nil, &refusal{code: wire.CodeDialFailed, reason: ReasonDialFailed, err: fmt.Errorf("dial %s (peer %s): %w", addr, r.Peer.Name, err)}
	}
	s.m.dial.WithLabelValues(r.Bridge).Observe(time.Since(start).Seconds())
	return up, nil
}

func (s *Server) refuse(c net.Conn, h wire.Header, r refusal) {
	s.m.refused.WithLabelValues(r.reason).Inc()
	s.log.Info("relay: refused carrier connection", "remote", c.RemoteAddr().String(), "bridge", h.Bridge, "port", h.Port, "reason", r.reason, "err", r.err)
	c.SetWriteDeadline(time.Now().Add(time.Second))
	wire.WriteReply(c, r.code)
}

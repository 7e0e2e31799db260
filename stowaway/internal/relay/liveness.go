package relay

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/stowaway/internal/config"
)

// Peer liveness
//
// A developer's agent can vanish without a word (killed, or the laptop
// shut): nothing answers and nothing resets, so its relayed connections
// stall instead of closing, a carrier's pooled connection to it takes a
// request and never answers, and a new connection waits DialTimeout for a
// handshake that never comes. So the relay probes every peer that carries
// a bridge, all the time: a TCP connection attempt to ProbePort of its
// tunnel address, which the agent answers with a reset (an accept counts
// too). The probe's timeout follows the peer's round-trip time as TCP's
// retransmission timeout does: four times the smoothed probe RTT, at least
// MinProbeTimeout, at most DialTimeout (DialTimeout until a first answer).
// After ProbeMisses unanswered probes in a row the peer is down: its
// relayed connections are closed, so the carriers' next requests go to
// the fallback, and new connections for it are refused at once with
// CodePeerDown, until a probe is answered again.
//
// A tunnel full of a bulk transfer can hold a probe back longer than its
// timeout while the peer is plainly there. So an unanswered probe is
// excused when the tunnel says the peer sent something since the previous
// miss (its WireGuard receive counter grew): only a peer that is both
// silent on the probe port and silent on the wire is missed.

// Defaults of the liveness probes.
const (
	DefaultProbeInterval = 250 * time.Millisecond
	DefaultProbeMisses   = 2
	// MinProbeTimeout is the shortest probe timeout, however near the
	// peer is.
	MinProbeTimeout = 100 * time.Millisecond
	// ProbePort is the port probes connect to; agents serve nothing there.
	ProbePort = 1
)

// peerWatch is the liveness of one peer.
type peerWatch struct {
	addr   netip.Addr
	key    wgnet.Key
	cancel context.CancelFunc
	down   atomic.Bool
}

// peerCounter is what a tunnel may tell about a peer's traffic (a
// *wgnet.Net does).
type peerCounter interface {
	PeerStats(pub wgnet.Key) (wgnet.PeerStats, bool, error)
}

// watchPeers runs a prober per peer that carries a bridge, following
// config changes, until ctx is done.
func (s *Server) watchPeers(ctx context.Context) {
	if s.ProbeInterval < 0 {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s.syncWatches(ctx, &wg)
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for name, w := range s.watches {
				w.cancel()
				delete(s.watches, name)
			}
			s.mu.Unlock()
			return
		case <-s.changed:
		}
	}
}

// syncWatches starts probers for the peers of the current config that
// carry a bridge and stops those of the others.
func (s *Server) syncWatches(ctx context.Context, wg *sync.WaitGroup) {
	want := map[string]config.Peer{}
	if st := s.state.Load(); st != nil {
		want = bridgedPeers(st.cfg)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, w := range s.watches {
		if p, ok := want[name]; !ok || p.Address != w.addr || p.PublicKey != w.key {
			w.cancel()
			delete(s.watches, name)
		}
	}
	for name, p := range want {
		if s.watches[name] != nil {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		w := &peerWatch{addr: p.Address, key: p.PublicKey, cancel: cancel}
		s.watches[name] = w
		wg.Go(func() { s.probe(pctx, name, w) })
	}
}

// bridgedPeers are the configured peers that some bridge names.
func bridgedPeers(c *config.Compiled) map[string]config.Peer {
	out := map[string]config.Peer{}
	for _, b := range c.Config.Bridges {
		if p := c.Peer(b.Peer); p != nil {
			out[p.Name] = *p
		}
	}
	return out
}

// probe checks one peer until ctx is done.
func (s *Server) probe(ctx context.Context, name string, w *peerWatch) {
	interval := s.ProbeInterval
	if interval == 0 {
		interval = DefaultProbeInterval
	}
	misses := s.ProbeMisses
	if misses <= 0 {
		misses = DefaultProbeMisses
	}
	target := netip.AddrPortFrom(w.addr, ProbePort).String()
	var srtt time.Duration
	missed := 0
	counter, _ := s.tunnel.(peerCounter)
	var lastRx uint64 // the peer's receive counter at the previous miss
	rxKnown := false
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		timeout := s.DialTimeout
		if srtt > 0 {
			timeout = min(max(4*srtt, MinProbeTimeout), s.DialTimeout)
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, timeout)
		c, err := s.tunnel.DialContext(pctx, "tcp", target)
		// A reset is an answer as good as an accept; only silence is not.
		timedOut := err != nil && pctx.Err() != nil
		answered := !timedOut
		cancel()
		if c != nil {
			c.Close()
		}
		if ctx.Err() != nil {
			return
		}
		if !answered && counter != nil {
			if st, ok, err := counter.PeerStats(w.key); err == nil && ok {
				if rxKnown && st.RxBytes > lastRx {
					answered = true // busy, not gone
				}
				lastRx, rxKnown = st.RxBytes, true
			}
		}
		if answered {
			if !timedOut { // a real answer: its time is an RTT sample
				rtt := time.Since(start)
				if srtt == 0 {
					srtt = rtt
				} else {
					srtt = (7*srtt + rtt) / 8
				}
			}
			missed = 0
			if w.down.Swap(false) {
				s.log.Info("relay: peer answers again", "peer", name)
			}
		} else if missed++; missed >= misses && !w.down.Swap(true) {
			n := s.closePeer(name)
			s.log.Info("relay: peer does not answer; refusing its connections and closing the open ones",
				"peer", name, "probes_missed", missed, "probe_timeout", timeout.String(), "closed", n)
		}
		t.Reset(interval)
	}
}

// peerDown reports whether the named peer's probes say it is gone.
func (s *Server) peerDown(name string) bool {
	s.mu.Lock()
	w := s.watches[name]
	s.mu.Unlock()
	return w != nil && w.down.Load()
}

// trackPeer adds or removes what closePeer closes for a peer: a connection
// relayed to it, or a dial's cancel.
func (s *Server) trackPeer(name string, c io.Closer, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := s.peerConns[name]
	if add {
		if conns == nil {
			conns = map[io.Closer]struct{}{}
			s.peerConns[name] = conns
		}
		conns[c] = struct{}{}
		return
	}
	delete(conns, c)
	if len(conns) == 0 {
		delete(s.peerConns, name)
	}
}

// cancelCloser makes a dial's cancel an io.Closer for trackPeer.
type cancelCloser struct{ cancel context.CancelFunc }

func (c *cancelCloser) Close() error { c.cancel(); return nil }

// closePeer closes every connection relayed to a peer and cancels every
// dial to it, and says how many.
func (s *Server) closePeer(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.peerConns[name] {
		c.Close()
		n++
	}
	return n
}

package relay

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/stowaway/internal/config"
)

// silentTunnel never answers a probe (every dial waits for its deadline,
// as a tunnel whose queue is full or whose peer is gone does) and counts
// what the peer sent: it grows while busy is set.
type silentTunnel struct {
	busy atomic.Bool
	rx   atomic.Uint64
}

func (s *silentTunnel) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *silentTunnel) PeerStats(pub wgnet.Key) (wgnet.PeerStats, bool, error) {
	if s.busy.Load() {
		s.rx.Add(1500)
	}
	return wgnet.PeerStats{PublicKey: pub, RxBytes: s.rx.Load()}, true, nil
}

// TestBusyPeerIsNotDown checks that probes held back in a tunnel full of
// the peer's own traffic do not make it down, and that a peer silent on
// the wire too is down after the usual misses.
func TestBusyPeerIsNotDown(t *testing.T) {
	tun := &silentTunnel{}
	tun.busy.Store(true)
	s, err := New(tun, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.ProbeInterval = 10 * time.Millisecond
	s.DialTimeout = 20 * time.Millisecond
	key, err := wgnet.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Config{
		Peers:   []config.Peer{{Name: "dev1", PublicKey: key.PublicKey(), Address: netip.MustParseAddr("10.122.0.2")}},
		Bridges: []config.Bridge{{Name: "ns/b1", Peer: "dev1", Ports: []config.Port{{Target: 8155}}}},
	}.Compile()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.watchPeers(ctx) })
	defer func() { cancel(); wg.Wait() }()

	// Many probe rounds, every probe unanswered, the peer sending all along.
	for range 30 {
		time.Sleep(10 * time.Millisecond)
		if s.peerDown("dev1") {
			t.Fatal("a peer that keeps sending is down because its probes were held back")
		}
	}
	if !watched(s, "dev1") {
		t.Fatal("the peer is not probed")
	}
	tun.busy.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for !s.peerDown("dev1") {
		if time.Now().After(deadline) {
			t.Fatal("a peer silent on the probe port and on the wire is not down")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func watched(s *Server, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watches[name] != nil
}

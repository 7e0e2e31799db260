package server

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"gefyra.dev/gefyra/internal/wire"
	"gefyra.dev/gefyra/stowaway/internal/config"
	"gefyra.dev/gefyra/stowaway/internal/relay"
)

// TestVanishedPeer stops a developer's WireGuard endpoint without a word,
// as a killed agent does. Stowaway's probes notice: the open relayed
// connection is closed instead of stalling, a new one is refused as peer
// down without waiting for the (here very long) dial timeout, and once the
// developer is back the bridge carries connections again.
func TestVanishedPeer(t *testing.T) {
	w := newWorldWith(t, func(r *relay.Server) { r.DialTimeout = time.Minute })
	dev1 := newDeveloper("dev1", "10.122.0.2")
	cfg := config.Config{
		Peers:          []config.Peer{dev1.peer()},
		Bridges:        []config.Bridge{{Name: "ns/b1", Peer: "dev1", Ports: []config.Port{{Target: 8155}}}},
		CredentialKeys: []string{pemPublic(t, w.ed.Public())},
	}
	if err := w.srv.Update(cfg); err != nil {
		t.Fatal(err)
	}
	w.run(dev1, "10.122.0.1/32", 8155)
	h := wire.Header{Bridge: "ns/b1", Port: 8155, Credential: w.token(w.ed, "ns/b1", time.Minute)}
	c, err := w.carrier(h)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := get(t, c, "/before"); got != "dev1:8155 /before payload" {
		t.Fatalf("body %q", got)
	}

	// Gone without a FIN or a reset, as a killed agent: it forgets
	// stowaway first, so not even its closing stack's resets go out.
	if err := dev1.net.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	dev1.net.Close()
	before := testutil.ToFloat64(w.srv.Relay.RefusedCounter(relay.ReasonPeerDown))
	// A carrier connection that arrives at once, before stowaway can know.
	early := make(chan error, 1)
	go func() {
		c, err := w.carrier(h)
		if c != nil {
			c.Close()
		}
		early <- err
	}()

	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var ne net.Error
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a vanished peer's connection", n)
	} else if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the relayed connection of a vanished peer stalled: %v", err)
	}
	for i, ch := range []chan error{early, make(chan error, 1)} {
		if i == 1 {
			go func() {
				c, err := w.carrier(h)
				if c != nil {
					c.Close()
				}
				ch <- err
			}()
		}
		select {
		case err := <-ch:
			if refusedCode(err) != wire.CodePeerDown {
				t.Fatalf("connection %d for a vanished peer: %v, want refused as peer down", i+1, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("connection %d for a vanished peer waits for the dial timeout instead of being refused", i+1)
		}
	}
	if got := testutil.ToFloat64(w.srv.Relay.RefusedCounter(relay.ReasonPeerDown)) - before; got != 2 {
		t.Fatalf("peer_down refusals went up by %v, want 2", got)
	}

	w.run(dev1, "10.122.0.1/32", 8155) // back, same key, new endpoint
	waitFor(t, func() bool {
		c, err := w.carrier(h)
		if err != nil {
			return false
		}
		defer c.Close()
		return get(t, c, "/after") == "dev1:8155 /after payload"
	})
}

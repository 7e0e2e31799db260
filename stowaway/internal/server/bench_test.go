package server

import (
	"io"
	"net"
	"testing"
	"time"

	"gefyra.dev/gefyra/internal/wire"
	"gefyra.dev/gefyra/stowaway/internal/config"
)

func benchWorld(b *testing.B) (*world, []byte) {
	w := newWorld(b)
	dev := newDeveloper("dev1", "10.122.0.2")
	cfg := config.Config{
		Peers:          []config.Peer{dev.peer()},
		Bridges:        []config.Bridge{{Name: "ns/b1", Peer: "dev1", Ports: []config.Port{{Target: 7}}}},
		CredentialKeys: []string{pemPublic(b, w.ed.Public()), pemPublic(b, &w.rsa.PublicKey)},
	}
	if err := w.srv.Update(cfg); err != nil {
		b.Fatal(err)
	}
	w.run(dev, "10.122.0.1/32")
	l, err := dev.net.Listen("tcp", ":7")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return w, w.token(w.rsa, "ns/b1", time.Hour)
}

// BenchmarkRelayRoundTrip: 64 bytes to the developer's echo server and
// back over one relayed connection (carrier → relay → tunnel → peer).
func BenchmarkRelayRoundTrip(b *testing.B) {
	w, tok := benchWorld(b)
	c, err := w.carrier(wire.Header{Bridge: "ns/b1", Port: 7, Credential: tok})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayConnect: a new carrier connection, the preamble with an
// RS256 credential, the tunnel dial, the reply, one round trip, close.
func BenchmarkRelayConnect(b *testing.B) {
	w, tok := benchWorld(b)
	h := wire.Header{Bridge: "ns/b1", Port: 7, Credential: tok}
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", w.relayURL)
		if err != nil {
			b.Fatal(err)
		}
		if err := wire.Encode(c, &h); err != nil {
			b.Fatal(err)
		}
		if err := wire.ReadReply(c); err != nil {
			b.Fatal(err)
		}
		c.Write(buf)
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

package wgnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// newForwardingPair is a forwarding endpoint (as stowaway) and a peer of
// it (as an agent) that routes cluster into the tunnel besides the
// forwarder's own address.
func newForwardingPair(t *testing.T, cluster netip.Prefix, forwarding bool) (fwd, peer *endpoint) {
	t.Helper()
	key, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	bind := &recordingBind{Bind: newBind()}
	n, err := New(Config{PrivateKey: key, Address: netip.MustParseAddr("10.99.0.1"), bind: bind, Forwarding: forwarding})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	fwd = &endpoint{Net: n, key: key, bind: bind}
	peer = newEndpoint(t, "10.99.0.2", 0)
	if err := fwd.SetPeers([]Peer{peer.asPeer()}); err != nil {
		t.Fatal(err)
	}
	p := fwd.asPeer()
	p.AllowedIPs = append(p.AllowedIPs, cluster)
	if err := peer.SetPeers([]Peer{p}); err != nil {
		t.Fatal(err)
	}
	return fwd, peer
}

func TestForwardingTCPAndUDP(t *testing.T) {
	cluster := netip.MustParsePrefix("10.96.0.0/16")
	fwd, peer := newForwardingPair(t, cluster, true)
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	var seen []string
	note := func(s string) {
		mu.Lock()
		seen = append(seen, s)
		mu.Unlock()
	}
	if err := fwd.HandleTCP(func(r *TCPRequest) {
		note(fmt.Sprintf("tcp %s -> %s", r.Remote.Addr(), r.Local))
		if r.Local.Port() == 81 {
			r.Reject()
			return
		}
		c, err := r.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		wg.Go(func() {
			defer c.Close()
			fmt.Fprintf(c, "tcp to %s", r.Local)
		})
	}); err != nil {
		t.Fatal(err)
	}
	if err := fwd.HandleUDP(func(r *UDPRequest) {
		note(fmt.Sprintf("udp %s -> %s", r.Remote.Addr(), r.Local))
		c, err := r.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		wg.Go(func() {
			defer c.Close()
			buf := make([]byte, 1500)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for i := 0; i < 2; i++ {
				n, err := c.Read(buf)
				if err != nil {
					t.Error(err)
					return
				}
				fmt.Fprintf(c, "udp to %s: %s", r.Local, buf[:n])
			}
		})
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("TCP to a cluster address arrives with that address", func(t *testing.T) {
		c := dialT(t, peer, netip.MustParseAddr("10.96.0.10"), 80)
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "tcp to 10.96.0.10:80" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("a rejected TCP connection is refused at once", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := peer.DialContext(ctx, "tcp", "10.96.3.4:81")
		if err == nil {
			c.Close()
			t.Fatal("connection accepted")
		}
		if ctx.Err() != nil {
			t.Fatal("dial timed out instead of being refused")
		}
	})
	t.Run("a UDP flow keeps its endpoint both ways", func(t *testing.T) {
		c, err := peer.DialUDP("udp", "10.96.0.10:53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 1500)
		for _, q := range []string{"one", "two"} {
			if _, err := c.Write([]byte(q)); err != nil {
				t.Fatal(err)
			}
			n, err := c.Read(buf)
			if want := "udp to 10.96.0.10:53: " + q; err != nil || string(buf[:n]) != want {
				t.Fatalf("got %q, %v; want %q", buf[:n], err, want)
			}
		}
	})
	mu.Lock()
	defer mu.Unlock()
	want := []string{"tcp 10.99.0.2 -> 10.96.0.10:80", "tcp 10.99.0.2 -> 10.96.3.4:81", "udp 10.99.0.2 -> 10.96.0.10:53"}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("handlers saw %q, want %q (one UDP request per flow)", seen, want)
	}
}

func TestNoForwardingWithoutTheOption(t *testing.T) {
	fwd, peer := newForwardingPair(t, netip.MustParsePrefix("10.96.0.0/16"), false)
	called := make(chan string, 2)
	fwd.HandleTCP(func(r *TCPRequest) { called <- "tcp"; r.Reject() })
	fwd.HandleUDP(func(r *UDPRequest) { called <- "udp" })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if c, err := peer.DialContext(ctx, "tcp", "10.96.0.10:80"); err == nil {
		c.Close()
		t.Fatal("a connection to another address was accepted")
	}
	u, err := peer.DialUDP("udp", "10.96.0.10:53")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.Write([]byte("q"))
	// The tunnel itself works: the forwarder's own address answers.
	if c, err := peer.DialContext(context.Background(), "tcp", "10.99.0.1:80"); err == nil {
		c.Close()
		t.Fatal("accepted")
	}
	select {
	case h := <-called:
		if h == "udp" {
			t.Fatal("the UDP handler saw a datagram for another address")
		}
		// The TCP handler saw the dial to the forwarder's own address.
		select {
		case h := <-called:
			t.Fatalf("the %s handler saw a flow for another address", h)
		case <-time.After(100 * time.Millisecond):
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the forwarder's own address was not handled")
	}
}

func TestForwardingNeedsBatchedStack(t *testing.T) {
	key, _ := GeneratePrivateKey()
	_, err := New(Config{PrivateKey: key, Address: netip.MustParseAddr("10.99.0.1"), Forwarding: true, stockTUN: true})
	if err == nil {
		t.Fatal("forwarding on the stock stack accepted")
	}
}

func TestDialUDPBadAddress(t *testing.T) {
	e := newEndpoint(t, "10.99.0.1", 0)
	tests := []struct {
		name, network, address string
	}{
		{name: "tcp network", network: "tcp", address: "10.0.0.1:53"},
		{name: "a name", network: "udp", address: "kube-dns:53"},
		{name: "port 0", network: "udp", address: "10.0.0.1:0"},
		{name: "family mismatch", network: "udp6", address: "10.0.0.1:53"},
		{name: "no port", network: "udp", address: "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := e.DialUDP(tt.network, tt.address)
			if err == nil {
				c.Close()
				t.Fatalf("DialUDP(%q, %q) succeeded", tt.network, tt.address)
			}
		})
	}
}

// udpEcho answers every datagram on a loopback socket with "echo:" and
// the datagram.
func udpEcho(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			pc.WriteToUDP(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return pc
}

type countTo struct {
	mu sync.Mutex
	n  float64
}

func (c *countTo) Add(v float64) { c.mu.Lock(); c.n += v; c.mu.Unlock() }
func (c *countTo) get() float64  { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func TestJoinUDP(t *testing.T) {
	srv := udpEcho(t)
	// a is the client's side of a relay: the test writes into client and
	// JoinUDP reads it from a.
	dialPair := func(t *testing.T) (client, a *net.UDPConn) {
		t.Helper()
		l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		client, err = net.DialUDP("udp", nil, l.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		a, err = net.DialUDP("udp", l.LocalAddr().(*net.UDPAddr), client.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(); a.Close() })
		return client, a
	}

	t.Run("datagrams go both ways, counted, until the flow is quiet", func(t *testing.T) {
		client, a := dialPair(t)
		b, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		var up, down countTo
		done := make(chan error, 1)
		go func() { done <- JoinUDP(context.Background(), a, b, 300*time.Millisecond, &up, &down) }()
		buf := make([]byte, 100)
		client.SetDeadline(time.Now().Add(10 * time.Second))
		for _, q := range []string{"a", "bc"} {
			client.Write([]byte(q))
			n, err := client.Read(buf)
			if err != nil || string(buf[:n]) != "echo:"+q {
				t.Fatalf("got %q, %v", buf[:n], err)
			}
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("JoinUDP: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("JoinUDP did not end on a quiet flow")
		}
		if up.get() != 3 || down.get() != 13 {
			t.Errorf("counted %v up, %v down; want 3 and 13", up.get(), down.get())
		}
		if _, err := b.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("the dialed flow is still open: %v", err)
		}
	})
	t.Run("ctx ends it", func(t *testing.T) {
		_, a := dialPair(t)
		b, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- JoinUDP(ctx, a, b, time.Hour, nil, nil) }()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("JoinUDP: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("JoinUDP did not end with ctx")
		}
	})
}

func TestUDPIdle(t *testing.T) {
	if UDPIdle(53) != DNSIdleTimeout || UDPIdle(5353) != UDPIdleTimeout {
		t.Fatalf("UDPIdle(53) = %s, UDPIdle(5353) = %s", UDPIdle(53), UDPIdle(5353))
	}
}

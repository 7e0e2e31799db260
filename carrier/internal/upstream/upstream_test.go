package upstream_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/carrier/internal/upstream"
	"gefyra.dev/gefyra/internal/wire"
)

// listen runs handle for every connection to a fresh loopback port.
func listen(t *testing.T, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}

func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func bridgeCluster(addr string) *config.Cluster {
	return &config.Cluster{
		Name: "bridge", Endpoints: []string{addr}, ConnectTimeout: time.Second,
		Bridge: &config.Bridge{Name: "demo/b", Port: 8155, Credential: []byte("jwt")},
	}
}

func TestDialKinds(t *testing.T) {
	refuser := listen(t, func(c net.Conn) {
		defer c.Close()
		if _, err := wire.Decode(c); err == nil {
			wire.WriteReply(c, wire.CodePeerDown)
		}
	})
	silent := listen(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(io.Discard, c)
	})
	hangup := listen(t, func(c net.Conn) {
		wire.Decode(c)
		c.Close()
	})
	seen := make(chan wire.Header, 1)
	accepter := listen(t, func(c net.Conn) {
		defer c.Close()
		h, err := wire.Decode(c)
		if err != nil {
			return
		}
		seen <- h
		wire.WriteReply(c, wire.CodeAccepted)
		io.WriteString(c, "payload")
	})
	tests := []struct {
		name string
		c    *config.Cluster
		kind string
	}{
		{name: "no endpoints", c: &config.Cluster{Name: "x", ConnectTimeout: time.Second}, kind: upstream.KindNoEndpoints},
		{name: "nothing listening", c: bridgeCluster(deadAddr(t)), kind: upstream.KindConnect},
		{name: "stowaway refuses", c: bridgeCluster(refuser), kind: upstream.KindRefused},
		{name: "stowaway says nothing", c: func() *config.Cluster {
			c := bridgeCluster(silent)
			c.ConnectTimeout = 100 * time.Millisecond
			return c
		}(), kind: upstream.KindTimeout},
		{name: "stowaway hangs up", c: bridgeCluster(hangup), kind: upstream.KindProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := upstream.Dial(context.Background(), tt.c, netip.AddrPort{})
			var de *upstream.DialError
			if !errors.As(err, &de) || de.Kind != tt.kind {
				t.Fatalf("got %v, want a DialError of kind %s", err, tt.kind)
			}
		})
	}
	client := netip.MustParseAddrPort("10.0.0.5:3333")
	c, err := upstream.Dial(context.Background(), bridgeCluster(accepter), client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := <-seen
	if h.Bridge != "demo/b" || h.Port != 8155 || string(h.Credential) != "jwt" || h.ClientAddr != client {
		t.Fatalf("preamble %+v", h)
	}
	b := make([]byte, 7)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "payload" {
		t.Fatalf("payload after acceptance: %q %v", b, err)
	}
}

func TestPoolReuseAndStale(t *testing.T) {
	accepted := make(chan net.Conn, 10)
	addr := listen(t, func(c net.Conn) { accepted <- c })
	cl := &config.Cluster{Name: "plain", Endpoints: []string{addr}, ConnectTimeout: time.Second}
	p := &upstream.Pools{}
	ctx := context.Background()

	a, err := p.Get(ctx, cl, netip.AddrPort{}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	serverSide := <-accepted
	if a.Reused {
		t.Fatal("a fresh connection says it is reused")
	}
	p.Put(a)
	b, err := p.Get(ctx, cl, netip.AddrPort{}, false, true)
	if err != nil {
		t.Fatal(err)
	}
	if b.TCPConn != a.TCPConn || !b.Reused {
		t.Fatal("idle connection not reused")
	}
	p.Put(b)

	// The server closes the idle connection: Get must not hand it out.
	serverSide.Close()
	time.Sleep(50 * time.Millisecond)
	c, err := p.Get(ctx, cl, netip.AddrPort{}, false, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.TCPConn == a.TCPConn || c.Reused {
		t.Fatal("closed idle connection handed out")
	}
	<-accepted

	// Unread bytes make a connection unfit for reuse.
	p.Put(c)
	d, _ := p.Get(ctx, cl, netip.AddrPort{}, false, false)
	if d.TCPConn != c.TCPConn {
		t.Fatal("not reused")
	}
	d.W.WriteString("half a request")
	p.Put(d)
	e, _ := p.Get(ctx, cl, netip.AddrPort{}, false, false)
	if e.TCPConn == d.TCPConn {
		t.Fatal("a connection with buffered bytes was pooled")
	}
	<-accepted

	// Prune drops the pools of endpoints no longer configured.
	p.Put(e)
	p.Prune(&config.Config{Clusters: map[string]*config.Cluster{}})
	f, _ := p.Get(ctx, cl, netip.AddrPort{}, false, false)
	if f.TCPConn == e.TCPConn {
		t.Fatal("pruned connection reused")
	}
	if _, err := e.TCPConn.Write([]byte("x")); err == nil {
		t.Fatal("pruned idle connection still open")
	}
	p.Discard(f)
}

package egress

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"

	"gefyra.dev/gefyra/internal/wgnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testInfo = wgnet.EgressInfo{
	Networks:      []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
	DNS:           netip.MustParseAddr("10.96.0.10"),
	ClusterDomain: "cluster.local",
}

// clusterDialer dials the "cluster" addresses the test serves on
// loopback: the address a peer asked for is translated, everything else
// is dialed as it is (and refused by nothing listening on a loopback
// port).
type clusterDialer struct {
	mu    sync.Mutex
	addrs map[string]string
	seen  []string
}

func (d *clusterDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.seen = append(d.seen, network+" "+address)
	to, ok := d.addrs[network+" "+address]
	d.mu.Unlock()
	if !ok {
		to = "127.0.0.1:1"
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, to)
}

// env is a forwarding stowaway endpoint with an Egress, and its peers.
type env struct {
	t      *testing.T
	fwd    *wgnet.Net
	eg     *Egress
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	dialer *clusterDialer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	key, _ := wgnet.GeneratePrivateKey()
	fwd, err := wgnet.New(wgnet.Config{PrivateKey: key, Address: netip.MustParseAddr("10.122.0.1"), Forwarding: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Close() })
	reg := prometheus.NewRegistry()
	d := &clusterDialer{addrs: map[string]string{}}
	eg, err := New(testInfo, d, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	eg.DialTimeout = 2 * time.Second
	fwd.HandleTCP(eg.HandleTCP)
	fwd.HandleUDP(eg.HandleUDP)
	ln, err := fwd.Listen("tcp", fmt.Sprintf(":%d", wgnet.EgressInfoPort))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, fwd: fwd, eg: eg, reg: reg, cancel: cancel, done: make(chan error, 1), dialer: d}
	go func() { e.done <- eg.Serve(ctx, ln) }()
	t.Cleanup(e.stop)
	return e
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	if err := <-e.done; err != nil {
		e.t.Errorf("Serve: %v", err)
	}
}

// peer adds a developer's endpoint at addr, a WireGuard peer of the
// forwarder that routes the cluster's network into the tunnel.
func (e *env) peer(addr string) *wgnet.Net {
	e.t.Helper()
	key, _ := wgnet.GeneratePrivateKey()
	n, err := wgnet.New(wgnet.Config{PrivateKey: key, Address: netip.MustParseAddr(addr), Peers: []wgnet.Peer{{
		PublicKey: e.fwd.PublicKey(),
		// More than egress serves, to see it refuse.
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.122.0.0/16"), netip.MustParsePrefix("10.96.0.0/15")},
		Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(e.fwd.ListenPort())),
	}}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { n.Close() })
	peers := e.fwd.Peers()
	peers = append(peers, wgnet.Peer{PublicKey: n.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(n.Address(), 32)},
		Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n.ListenPort()))})
	if err := e.fwd.SetPeers(peers); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// serveHTTP is a "cluster" web server at addr that answers who called.
func (e *env) serveHTTP(addr string, h http.HandlerFunc) {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	e.t.Cleanup(func() { hs.Close() })
	e.dialer.mu.Lock()
	e.dialer.addrs["tcp "+addr] = ln.Addr().String()
	e.dialer.mu.Unlock()
}

// serveDNS is a "cluster" DNS server at addr (UDP) that knows names.
func (e *env) serveDNS(addr string, names map[string]netip.Addr) {
	e.t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	e.t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if ip, ok := names[q.Name.String()]; ok && q.Type == dnsmessage.TypeA {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: ip.As4()})
			}
			out, _ := b.Finish()
			pc.WriteTo(out, from)
		}
	}()
	e.dialer.mu.Lock()
	e.dialer.addrs["udp "+addr] = pc.LocalAddr().String()
	e.dialer.mu.Unlock()
}

// ask sends an A query for name over a UDP flow through the tunnel.
func ask(t *testing.T, n *wgnet.Net, server, name string) ([]netip.Addr, error) {
	return askWithin(t, n, server, name, 5*time.Second)
}

func askWithin(t *testing.T, n *wgnet.Net, server, name string, timeout time.Duration) ([]netip.Addr, error) {
	t.Helper()
	c, err := n.DialUDP("udp", server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, _ := b.Finish()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	m, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	var msg dnsmessage.Message
	if err := msg.Unpack(buf[:m]); err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range msg.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			out = append(out, netip.AddrFrom4(r.A))
		}
	}
	return out, nil
}

func httpVia(n *wgnet.Net) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}}
}

func TestEgress(t *testing.T) {
	e := newEnv(t)
	alice := e.peer("10.122.0.2")
	bob := e.peer("10.122.0.3")
	e.eg.SetPeers(map[netip.Addr]string{netip.MustParseAddr("10.122.0.2"): "alice"})
	e.serveDNS("10.96.0.10:53", map[string]netip.Addr{"web.shop.svc.cluster.local.": netip.MustParseAddr("10.96.5.5")})
	e.serveHTTP("10.96.5.5:80", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello %s", r.URL.Path) })

	t.Run("the info endpoint announces the networks", func(t *testing.T) {
		resp, err := httpVia(alice).Get("http://10.122.0.1" + wgnet.EgressInfoPath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got, err := wgnet.ParseEgressInfo(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(testInfo) {
			t.Fatalf("got %+v, want %+v", got, testInfo)
		}
	})
	t.Run("a DNS question reaches the cluster DNS over UDP", func(t *testing.T) {
		got, err := ask(t, alice, "10.96.0.10:53", "web.shop.svc.cluster.local.")
		if err != nil || len(got) != 1 || got[0] != netip.MustParseAddr("10.96.5.5") {
			t.Fatalf("got %v, %v", got, err)
		}
	})
	t.Run("HTTP reaches the Service", func(t *testing.T) {
		resp, err := httpVia(alice).Get("http://10.96.5.5/items")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello /items" {
			t.Fatalf("got %q", b)
		}
	})

	refusals := []struct {
		name   string
		from   *wgnet.Net
		to     string
		proto  string
		reason string
	}{
		{name: "an address outside the networks", from: alice, to: "10.97.0.1:80", proto: ProtoTCP, reason: ReasonNotAllowed},
		{name: "a cluster address that does not answer", from: alice, to: "10.96.9.9:80", proto: ProtoTCP, reason: ReasonDialFailed},
		{name: "a peer egress does not know", from: bob, to: "10.96.5.5:80", proto: ProtoTCP, reason: ReasonUnknownPeer},
		{name: "a peer egress does not know, UDP", from: bob, to: "10.96.0.10:53", proto: ProtoUDP, reason: ReasonUnknownPeer},
		{name: "UDP outside the networks", from: alice, to: "10.97.0.10:53", proto: ProtoUDP, reason: ReasonNotAllowed},
	}
	for _, tt := range refusals {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(e.eg.RefusedCounter(tt.proto, tt.reason))
			if tt.proto == ProtoTCP {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c, err := tt.from.DialContext(ctx, "tcp", tt.to)
				if err == nil {
					c.Close()
					t.Fatal("connection accepted")
				}
				if ctx.Err() != nil {
					t.Fatal("the dial timed out instead of being refused")
				}
			} else {
				if _, err := askWithin(t, tt.from, tt.to, "web.shop.svc.cluster.local.", 300*time.Millisecond); err == nil {
					t.Fatal("answered")
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for testutil.ToFloat64(e.eg.RefusedCounter(tt.proto, tt.reason)) != before+1 {
				if time.Now().After(deadline) {
					t.Fatalf("refusals %s/%s: %v, want %v", tt.proto, tt.reason, testutil.ToFloat64(e.eg.RefusedCounter(tt.proto, tt.reason)), before+1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}

	t.Run("counted per peer", func(t *testing.T) {
		if got := testutil.ToFloat64(e.eg.ConnectionsCounter("alice", ProtoTCP)); got != 1 {
			t.Errorf("alice's TCP connections: %v, want 1 (the info is stowaway's own)", got)
		}
		if got := testutil.ToFloat64(e.eg.ConnectionsCounter("alice", ProtoUDP)); got != 1 {
			t.Errorf("alice's UDP flows: %v, want 1", got)
		}
		for _, dir := range []string{ToCluster, FromCluster} {
			for _, p := range []string{ProtoTCP, ProtoUDP} {
				if got := testutil.ToFloat64(e.eg.BytesCounter("alice", p, dir)); got == 0 {
					t.Errorf("alice's %s bytes %s: 0", p, dir)
				}
			}
		}
		if n, err := testutil.GatherAndCount(e.reg, "gefyra_stowaway_egress_connections_total"); err != nil || n != 2 {
			t.Errorf("connection series: %d, %v; want alice's two only", n, err)
		}
	})
	e.dialer.mu.Lock()
	seen := fmt.Sprint(e.dialer.seen)
	e.dialer.mu.Unlock()
	if strings.Contains(seen, "10.97.") {
		t.Errorf("egress dialed outside its networks: %s", seen)
	}
}

// holdServer accepts connections at addr and keeps them open until the
// peer closes; opened reports each.
func (e *env) holdServer(addr string) <-chan net.Conn {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	opened := make(chan net.Conn, 4)
	var wg sync.WaitGroup
	e.t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			opened <- c
			wg.Go(func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			})
		}
	})
	e.dialer.mu.Lock()
	e.dialer.addrs["tcp "+addr] = ln.Addr().String()
	e.dialer.mu.Unlock()
	return opened
}

func TestFlowsEnd(t *testing.T) {
	tests := []struct {
		name string
		end  func(e *env)
	}{
		{name: "when the peer is removed", end: func(e *env) { e.eg.SetPeers(nil) }},
		{name: "when egress stops", end: func(e *env) { e.stop() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			alice := e.peer("10.122.0.2")
			e.eg.SetPeers(map[netip.Addr]string{netip.MustParseAddr("10.122.0.2"): "alice"})
			opened := e.holdServer("10.96.7.7:5432")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := alice.DialContext(ctx, "tcp", "10.96.7.7:5432")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			select {
			case <-opened:
			case <-ctx.Done():
				t.Fatal("the cluster side was not dialed")
			}
			// The peer's side is accepted after the cluster's was dialed.
			for testutil.ToFloat64(e.eg.m.active.WithLabelValues("alice", ProtoTCP)) != 1 {
				if ctx.Err() != nil {
					t.Fatal("the connection is not counted as active")
				}
				time.Sleep(time.Millisecond)
			}
			tt.end(e)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = bufio.NewReader(c).ReadByte()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the connection stayed open")
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(wgnet.EgressInfo{}, &net.Dialer{}, reg, nil); err == nil {
		t.Error("no networks accepted")
	}
	if _, err := New(testInfo, nil, reg, nil); err == nil {
		t.Error("no dialer accepted")
	}
}

func TestInfoJSON(t *testing.T) {
	b, _ := json.Marshal(testInfo)
	want := `{"networks":["10.96.0.0/16"],"dns":"10.96.0.10","clusterDomain":"cluster.local"}`
	if string(b) != want {
		t.Fatalf("%s, want %s", b, want)
	}
}

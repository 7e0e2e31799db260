package wgnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/conn"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// endpoint is one side of a test tunnel.
type endpoint struct {
	*Net
	key  Key
	bind *recordingBind
}

// recordingBind wraps the real UDP bind and records the largest datagram
// the device sent.
type recordingBind struct {
	conn.Bind
	maxSent atomic.Int64
	sent    atomic.Int64
}

func (b *recordingBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	for _, buf := range bufs {
		b.sent.Add(1)
		for {
			m := b.maxSent.Load()
			if int64(len(buf)) <= m || b.maxSent.CompareAndSwap(m, int64(len(buf))) {
				break
			}
		}
	}
	return b.Bind.Send(bufs, ep)
}

func newEndpoint(t testing.TB, addr string, mtu int) *endpoint {
	t.Helper()
	return newEndpointWith(t, addr, mtu, false)
}

func newEndpointWith(t testing.TB, addr string, mtu int, stock bool) *endpoint {
	t.Helper()
	key, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	bind := &recordingBind{Bind: newBind()}
	n, err := New(Config{PrivateKey: key, Address: netip.MustParseAddr(addr), MTU: mtu, bind: bind, stockTUN: stock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &endpoint{Net: n, key: key, bind: bind}
}

func (e *endpoint) asPeer() Peer {
	return Peer{
		PublicKey:  e.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(e.Address(), e.Address().BitLen())},
		Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(e.ListenPort())),
	}
}

// connect makes every endpoint a peer of every other.
func connect(t testing.TB, eps ...*endpoint) {
	t.Helper()
	for _, e := range eps {
		var peers []Peer
		for _, o := range eps {
			if o != e {
				peers = append(peers, o.asPeer())
			}
		}
		if err := e.SetPeers(peers); err != nil {
			t.Fatal(err)
		}
	}
}

func newPair(t testing.TB, mtu int) (a, b *endpoint) {
	t.Helper()
	return newPairWith(t, mtu, false)
}

func newPairWith(t testing.TB, mtu int, stock bool) (a, b *endpoint) {
	t.Helper()
	a = newEndpointWith(t, "10.99.0.1", mtu, stock)
	b = newEndpointWith(t, "10.99.0.2", mtu, stock)
	connect(t, a, b)
	return a, b
}

func dialT(t testing.TB, from *endpoint, to netip.Addr, port int) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", netip.AddrPortFrom(to, uint16(port)).String())
	if err != nil {
		t.Fatalf("dial %s:%d: %v", to, port, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo accepts connections on l and echoes each until EOF, then half-closes.
func echo(t testing.TB, l net.Listener) {
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}()
		}
	}()
}

func TestTCPBothWays(t *testing.T) {
	a, b := newPair(t, 0)
	tests := []struct {
		name     string
		from, to *endpoint
	}{
		{name: "a to b", from: a, to: b},
		{name: "b to a", from: b, to: a},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := 7000 + i
			l, err := tt.to.Listen("tcp", fmt.Sprintf(":%d", port))
			if err != nil {
				t.Fatal(err)
			}
			echo(t, l)
			c := dialT(t, tt.from, tt.to.Address(), port)
			msg := []byte("hello through the tunnel from " + tt.name)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo = %q, want %q", got, msg)
			}
			if ra := c.RemoteAddr().String(); ra != fmt.Sprintf("%s:%d", tt.to.Address(), port) {
				t.Errorf("remote address %s", ra)
			}
		})
	}
}

// transfer sends size random bytes from one endpoint to the other and
// checks that the receiver's sha256 matches.
func transfer(t testing.TB, from, to *endpoint, port, size int) {
	t.Helper()
	l, err := to.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		res <- r
	}()
	c := dialT(t, from, to.Address(), port)
	h := sha256.New()
	n, err := io.Copy(c, io.TeeReader(io.LimitReader(rand.Reader, int64(size)), h))
	if err != nil {
		t.Fatalf("send after %d bytes: %v", n, err)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != int64(size) {
		t.Fatalf("received %d bytes, want %d", r.n, size)
	}
	if want := h.Sum(nil); !bytes.Equal(r.sum[:], want) {
		t.Fatalf("sha256 mismatch: got %x want %x", r.sum, want)
	}
}

func TestBigTransferIntegrity(t *testing.T) {
	a, b := newPair(t, 0)
	const size = 8 << 20
	// Shake hands first. Two endpoints that both know the other's address
	// and start sending at the same instant both initiate, and each drops
	// the other's response (WireGuard keeps one handshake per peer); they
	// sort it out only on the jittered retry 5 s later. Stowaway never
	// initiates to an agent it has not heard from, so this does not happen
	// there.
	transfer(t, a, b, 8000, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	// Both directions at once: the two streams share one WireGuard session.
	go func() { defer wg.Done(); transfer(t, a, b, 8001, size) }()
	go func() { defer wg.Done(); transfer(t, b, a, 8002, size) }()
	wg.Wait()

	for _, e := range []*endpoint{a, b} {
		st, err := e.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != 1 {
			t.Fatalf("%d peers in stats, want 1", len(st))
		}
		s := st[0]
		if s.RxBytes < size || s.TxBytes < size {
			t.Errorf("peer stats rx=%d tx=%d, want both >= %d", s.RxBytes, s.TxBytes, size)
		}
		if s.LastHandshake.IsZero() || time.Since(s.LastHandshake) > time.Minute {
			t.Errorf("last handshake %v", s.LastHandshake)
		}
		if !s.Endpoint.IsValid() {
			t.Errorf("no endpoint in stats")
		}
	}
}

func TestMTUHonoured(t *testing.T) {
	tests := []struct {
		name string
		mtu  int
	}{
		{name: "default", mtu: 0},
		{name: "minimum", mtu: 1280},
		{name: "jumbo", mtu: 8000},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newPair(t, tt.mtu)
			wantMTU := tt.mtu
			if wantMTU == 0 {
				wantMTU = DefaultMTU
			}
			if a.MTU() != wantMTU {
				t.Fatalf("MTU() = %d, want %d", a.MTU(), wantMTU)
			}
			transfer(t, a, b, 9000+i, 1<<20)
			// A datagram is the IP packet padded to 16 bytes (but not past
			// the MTU), plus WireGuard's 16-byte header and 16-byte tag. TCP
			// fills segments up to its MSS, less options.
			hi := int64(wantMTU + 32)
			lo := hi - 64
			if got := a.bind.maxSent.Load(); got > hi || got <= lo {
				t.Errorf("largest datagram sent = %d bytes, want in (%d, %d]", got, lo, hi)
			}
		})
	}
}

func TestPeerRemovalCutsTrafficOnlyForThatPeer(t *testing.T) {
	hub := newEndpoint(t, "10.99.0.1", 0)
	b := newEndpoint(t, "10.99.0.2", 0)
	c := newEndpoint(t, "10.99.0.3", 0)
	connect(t, hub, b, c)

	lb, err := b.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, lb)
	lc, err := c.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, lc)
	cb := dialT(t, hub, b.Address(), 80)
	cc := dialT(t, hub, c.Address(), 80)
	roundTrip := func(conn net.Conn, msg string) error {
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		defer conn.SetDeadline(time.Time{})
		if _, err := io.WriteString(conn, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	for _, conn := range []net.Conn{cb, cc} {
		if err := roundTrip(conn, "before"); err != nil {
			t.Fatal(err)
		}
	}
	before, _, err := hub.PeerStats(c.PublicKey())
	if err != nil {
		t.Fatal(err)
	}

	// Remove b, keep c.
	if err := hub.SetPeers([]Peer{c.asPeer()}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := hub.PeerStats(b.PublicKey()); ok {
		t.Fatal("removed peer still in stats")
	}
	if err := roundTrip(cb, "after"); err == nil {
		t.Fatal("traffic to a removed peer still flows")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if conn, err := hub.DialContext(ctx, "tcp", netip.AddrPortFrom(b.Address(), 80).String()); err == nil {
		conn.Close()
		t.Fatal("dial to a removed peer succeeded")
	}
	if err := roundTrip(cc, "still there"); err != nil {
		t.Fatalf("remaining peer disturbed: %v", err)
	}
	after, _, err := hub.PeerStats(c.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !after.LastHandshake.Equal(before.LastHandshake) {
		t.Errorf("remaining peer re-handshook: %v -> %v", before.LastHandshake, after.LastHandshake)
	}

	// Adding b back restores it.
	connect(t, hub, b, c)
	cb2 := dialT(t, hub, b.Address(), 80)
	if err := roundTrip(cb2, "back again"); err != nil {
		t.Fatal(err)
	}
}

func TestPeerCannotUseOthersAddress(t *testing.T) {
	// b claims c's tunnel address as its own; hub routes c's address to c
	// only and drops b's packets with that source.
	hub := newEndpoint(t, "10.99.0.1", 0)
	b := newEndpoint(t, "10.99.0.3", 0)
	c := newEndpoint(t, "10.99.0.2", 0)
	bp := b.asPeer()
	bp.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")} // hub thinks b is .2 ...
	cp := c.asPeer()
	cp.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.99.0.4/32")}
	if err := hub.SetPeers([]Peer{bp, cp}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPeers([]Peer{hub.asPeer()}); err != nil {
		t.Fatal(err)
	}
	l, err := hub.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, l)
	// ... but b really is .3, which hub does not accept from it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if conn, err := b.DialContext(ctx, "tcp", "10.99.0.1:80"); err == nil {
		conn.Close()
		t.Fatal("hub accepted a connection from a source address outside the peer's allowed IPs")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	key, _ := GeneratePrivateKey()
	peerKey, _ := GeneratePrivateKey()
	addr := netip.MustParseAddr("10.99.0.1")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no key", cfg: Config{Address: addr}, want: "private key"},
		{name: "no address", cfg: Config{PrivateKey: key}, want: "tunnel address"},
		{name: "unspecified address", cfg: Config{PrivateKey: key, Address: netip.IPv4Unspecified()}, want: "tunnel address"},
		{name: "port", cfg: Config{PrivateKey: key, Address: addr, ListenPort: 70000}, want: "listen port"},
		{name: "mtu small", cfg: Config{PrivateKey: key, Address: addr, MTU: 500}, want: "MTU"},
		{name: "mtu big", cfg: Config{PrivateKey: key, Address: addr, MTU: 70000}, want: "MTU"},
		{name: "peer without key", cfg: Config{PrivateKey: key, Address: addr, Peers: []Peer{{}}}, want: "public key"},
		{name: "duplicate peer", cfg: Config{PrivateKey: key, Address: addr, Peers: []Peer{{PublicKey: peerKey}, {PublicKey: peerKey}}}, want: "twice"},
		{name: "keepalive", cfg: Config{PrivateKey: key, Address: addr, Peers: []Peer{{PublicKey: peerKey, PersistentKeepalive: 100000 * time.Second}}}, want: "keepalive"},
		{name: "endpoint without port", cfg: Config{PrivateKey: key, Address: addr, Peers: []Peer{{PublicKey: peerKey, Endpoint: netip.AddrPortFrom(addr, 0)}}}, want: "port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := New(tt.cfg)
			if err == nil {
				n.Close()
				t.Fatal("New accepted a bad config")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestDialListenBadAddress(t *testing.T) {
	a := newEndpoint(t, "10.99.0.1", 0)
	tests := []struct {
		name, network, addr string
		listen              bool
	}{
		{name: "udp", network: "udp", addr: "10.99.0.2:1"},
		{name: "name", network: "tcp", addr: "example.invalid:80"},
		{name: "no port", network: "tcp", addr: "10.99.0.2"},
		{name: "port range", network: "tcp", addr: "10.99.0.2:65536"},
		{name: "family", network: "tcp6", addr: "10.99.0.2:80"},
		{name: "dial empty host", network: "tcp", addr: ":80"},
		{name: "listen udp", network: "udp", addr: ":80", listen: true},
		{name: "listen foreign address", network: "tcp", addr: "10.99.0.9:80", listen: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.listen {
				var l net.Listener
				l, err = a.Listen(tt.network, tt.addr)
				if err == nil {
					l.Close()
				}
			} else {
				var c net.Conn
				c, err = a.DialContext(context.Background(), tt.network, tt.addr)
				if err == nil {
					c.Close()
				}
			}
			if err == nil {
				t.Fatal("accepted a bad address")
			}
		})
	}
}

func TestCloseStopsEverything(t *testing.T) {
	a, b := newPair(t, 0)
	l, err := b.Listen("tcp", ":81")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c := dialT(t, a, b.Address(), 81)
	sc := <-accepted
	readErr := make(chan error, 1)
	go func() {
		_, err := sc.Read(make([]byte, 1))
		readErr <- err
	}()
	acceptErr := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		acceptErr <- err
	}()
	b.Close()
	for name, ch := range map[string]chan error{"read": readErr, "accept": acceptErr} {
		select {
		case err := <-ch:
			if err == nil {
				t.Errorf("%s returned no error after Close", name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still blocked after Close", name)
		}
	}
	sc.Close()
	c.Close()
	if err := b.SetPeers(nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetPeers after Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	a.Close()
	goleak.VerifyNone(t, goleak.IgnoreCurrent())
}

func TestReconnectAfterPeerRestart(t *testing.T) {
	a, b := newPair(t, 0)
	l, err := b.Listen("tcp", ":82")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, l)
	c := dialT(t, a, b.Address(), 82)
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	c.Close()

	// b restarts with the same key and port: its sessions are gone, a's
	// are stale. After Reconnect, a reaches the new b at once.
	port := b.ListenPort()
	b.Close()
	bind := &recordingBind{Bind: newBind()}
	n, err := New(Config{PrivateKey: b.key, Address: b.Address(), ListenPort: port, bind: bind,
		Peers: []Peer{{PublicKey: a.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.99.0.1/32")}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	b2 := &endpoint{Net: n, key: b.key, bind: bind}
	l2, err := b2.Listen("tcp", ":82")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, l2)
	if err := a.Reconnect(b.PublicKey()); err != nil {
		t.Fatal(err)
	}
	c2 := dialT(t, a, b.Address(), 82)
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c2, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if err := a.Reconnect(Key{7}); err == nil {
		t.Error("Reconnect of an unknown peer succeeded")
	}
}

func TestHandleTCP(t *testing.T) {
	a, b := newPair(t, 0)
	var mu sync.Mutex
	var remotes []netip.AddrPort
	var wg sync.WaitGroup
	defer wg.Wait()
	err := b.HandleTCP(func(r *TCPRequest) {
		mu.Lock()
		remotes = append(remotes, r.Remote)
		mu.Unlock()
		if r.Local.Port() == 1 {
			r.Reject()
			return
		}
		if r.Local.Addr() != b.Address() {
			t.Errorf("local address %s", r.Local)
		}
		c, err := r.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := r.Accept(); err == nil {
			t.Error("second Accept succeeded")
		}
		wg.Go(func() {
			defer c.Close()
			fmt.Fprintf(c, "port %d", r.Local.Port())
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := b.Listen("tcp", ":3")
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		c, err := l.Accept()
		if err == nil {
			io.WriteString(c, "listener")
			c.Close()
		}
	})
	defer l.Close()

	read := func(port int) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := a.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", b.Address(), port))
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("dial port %d timed out instead of being refused", port)
			}
			return "", err
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		return string(got), err
	}
	tests := []struct {
		name    string
		port    int
		want    string
		refused bool
	}{
		{name: "accepted", port: 2, want: "port 2"},
		{name: "rejected", port: 1, refused: true},
		{name: "listener wins", port: 3, want: "listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := read(tt.port)
			if tt.refused {
				if err == nil {
					t.Fatal("connection accepted")
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	mu.Lock()
	if len(remotes) != 2 || remotes[0].Addr() != a.Address() {
		t.Errorf("handler saw remotes %v", remotes)
	}
	mu.Unlock()

	if err := b.HandleTCP(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := read(2); err == nil {
		t.Fatal("connection accepted without a handler")
	}
}

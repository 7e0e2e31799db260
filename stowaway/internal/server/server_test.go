package server

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"gefyra.dev/gefyra/internal/credential"
	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/internal/wire"
	"gefyra.dev/gefyra/stowaway/internal/config"
	"gefyra.dev/gefyra/stowaway/internal/relay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	rsaKeyOnce sync.Once
	rsaKey     *rsa.PrivateKey
)

// testRSAKey is generated once: 2048-bit generation is slow.
func testRSAKey(t testing.TB) *rsa.PrivateKey {
	rsaKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func pemPublic(t testing.TB, k crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// world is a running stowaway with developers' WireGuard endpoints.
type world struct {
	t        testing.TB
	srv      *Server
	reg      *prometheus.Registry
	relayURL string
	cancel   context.CancelFunc
	done     chan error
	rsa      *rsa.PrivateKey
	ed       ed25519.PrivateKey
}

func newWorld(t testing.TB) *world {
	t.Helper()
	return newWorldWith(t, nil)
}

// newWorldWith is newWorld with the relay's settings changed by tune
// before it runs.
func newWorldWith(t testing.TB, tune func(*relay.Server)) *world {
	t.Helper()
	key, err := wgnet.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(Options{PrivateKey: key, RelayAddr: "127.0.0.1:0", Registry: reg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	srv.Relay.DialTimeout = 500 * time.Millisecond
	if tune != nil {
		tune(srv.Relay)
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	w := &world{t: t, srv: srv, reg: reg, rsa: testRSAKey(t), ed: ed, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.done <- srv.Run(ctx) }()
	t.Cleanup(w.stop)
	for srv.Relay.ListenAddr() == "" {
		time.Sleep(time.Millisecond)
	}
	w.relayURL = srv.Relay.ListenAddr()
	return w
}

func (w *world) stop() {
	if w.cancel == nil {
		return
	}
	w.cancel()
	w.cancel = nil
	if err := <-w.done; err != nil {
		w.t.Errorf("Run: %v", err)
	}
}

// developer is a peer's side: a WireGuard endpoint with an HTTP server on
// its tunnel address.
type developer struct {
	name string
	key  wgnet.Key
	addr netip.Addr
	net  *wgnet.Net
}

func newDeveloper(name, addr string) *developer {
	key, _ := wgnet.GeneratePrivateKey()
	return &developer{name: name, key: key, addr: netip.MustParseAddr(addr)}
}

// run starts d's WireGuard endpoint (after stowaway knows the peer, as in
// the cluster, so the first handshake succeeds) with HTTP servers on ports.
func (w *world) run(d *developer, stowawayAllowed string, ports ...int) {
	t := w.t
	t.Helper()
	name := d.name
	n, err := wgnet.New(wgnet.Config{
		PrivateKey: d.key,
		Address:    d.addr,
		Peers: []wgnet.Peer{{
			PublicKey:           w.srv.Net.PublicKey(),
			AllowedIPs:          []netip.Prefix{netip.MustParsePrefix(stowawayAllowed)},
			Endpoint:            netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(w.srv.Net.ListenPort())),
			PersistentKeepalive: 25 * time.Second,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	d.net = n
	t.Cleanup(func() { n.Close() })
	for _, port := range ports {
		l, err := n.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(rw, "%s:%d %s %s", name, port, r.URL.Path, body)
		})}
		go hs.Serve(l)
		t.Cleanup(func() { hs.Close() })
	}
}

func (d *developer) peer() config.Peer {
	return config.Peer{Name: d.name, PublicKey: d.key.PublicKey(), Address: d.addr}
}

// carrier opens a relay connection with h and returns the connection and
// the reply error (nil if accepted).
func (w *world) carrier(h wire.Header) (net.Conn, error) {
	c, err := net.Dial("tcp", w.relayURL)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := wire.Encode(c, &h); err != nil {
		c.Close()
		w.t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	err = wire.ReadReply(c)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (w *world) token(signer crypto.Signer, bridge string, ttl time.Duration) []byte {
	tok, err := credential.Issue(signer, bridge, ttl)
	if err != nil {
		w.t.Fatal(err)
	}
	return []byte(tok)
}

// get sends one HTTP request over a relayed connection.
func get(t testing.TB, c net.Conn, path string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://bridge"+path, strings.NewReader("payload"))
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func refusedCode(err error) wire.Code {
	var r *wire.RefusedError
	if errors.As(err, &r) {
		return r.Code
	}
	return 255
}

func TestRelay(t *testing.T) {
	w := newWorld(t)
	dev1 := newDeveloper("dev1", "10.122.0.2")
	dev2 := newDeveloper("dev2", "10.122.0.3")
	// dev3 is configured but its WireGuard endpoint never runs.
	k3, _ := wgnet.GeneratePrivateKey()
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	cfg := config.Config{
		Peers: []config.Peer{dev1.peer(), dev2.peer(), {Name: "dev3", PublicKey: k3.PublicKey(), Address: netip.MustParseAddr("10.122.0.4")}},
		Bridges: []config.Bridge{
			{Name: "ns/b1", Peer: "dev1", Ports: []config.Port{{Target: 8155}, {Target: 7777}}},
			{Name: "ns/b2", Peer: "dev2", Ports: []config.Port{{Target: 8155}, {Target: 9000, PeerPort: 8155}}},
			{Name: "ns/ghost", Peer: "nobody", Ports: []config.Port{{Target: 8155}}},
			{Name: "ns/down", Peer: "dev3", Ports: []config.Port{{Target: 8155}}},
		},
		CredentialKeys: []string{pemPublic(t, &w.rsa.PublicKey), pemPublic(t, w.ed.Public())},
	}
	if err := w.srv.Update(cfg); err != nil {
		t.Fatal(err)
	}
	w.run(dev1, "10.122.0.1/32", 8155)
	w.run(dev2, "10.122.0.1/32", 8155)

	expired, err := jwt.NewWithClaims(jwt.SigningMethodRS256, credential.Claims{
		Bridge:           "ns/b1",
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute))},
	}).SignedString(w.rsa)
	if err != nil {
		t.Fatal(err)
	}
	noExpiry, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, credential.Claims{Bridge: "ns/b1"}).SignedString(w.ed)
	hs256, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, credential.Claims{
		Bridge:           "ns/b1",
		RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Minute))},
	}).SignedString([]byte(pemPublic(t, &w.rsa.PublicKey)))

	tests := []struct {
		name       string
		h          wire.Header
		wantBody   string // accepted: response body prefix
		wantCode   wire.Code
		wantReason string
	}{
		{name: "rs256 credential", h: wire.Header{Bridge: "ns/b1", Port: 8155, Credential: w.token(w.rsa, "ns/b1", time.Minute)}, wantBody: "dev1:8155 /x payload"},
		{name: "eddsa credential", h: wire.Header{Bridge: "ns/b2", Port: 8155, Credential: w.token(w.ed, "ns/b2", time.Minute)}, wantBody: "dev2:8155 /x payload"},
		{name: "mapped peer port", h: wire.Header{Bridge: "ns/b2", Port: 9000, Credential: w.token(w.ed, "ns/b2", time.Minute)}, wantBody: "dev2:8155 /x payload"},
		{name: "expired", h: wire.Header{Bridge: "ns/b1", Port: 8155, Credential: []byte(expired)}, wantCode: wire.CodeUnauthenticated, wantReason: relay.ReasonUnauthenticated},
		{name: "no expiry", h: wire.Header{Bridge: "ns/b1", Port: 8155, Credential: []byte(noExpiry)}, wantCode: wire.CodeUnauthenticated, wantReason: relay.ReasonUnauthenticated},
		{name: "unknown signer", h: wire.Header{Bridge: "ns/b1", Port: 8155, Credential: w.token(otherEd, "ns/b1", time.Minute)}, wantCode: wire.CodeUnauthenticated, wantReason: relay.ReasonUnauthenticated},
		{name: "hmac with public key", h: wire.Header{Bridge: "ns/b1", Port: 8155, Credential: []byte(hs256)}, wantCode: wire.CodeUnauthenticated, wantReason: relay.ReasonUnauthenticated},
		{name: "garbage credential", h: wire.Header{Bridge: "ns/b1", Port: 8155, Credential: []byte("not-a-jwt")}, wantCode: wire.CodeUnauthenticated, wantReason: relay.ReasonUnauthenticated},
		{name: "credential of another bridge", h: wire.Header{Bridge: "ns/b1", Port: 8155, Credential: w.token(w.rsa, "ns/b2", time.Minute)}, wantCode: wire.CodeForbidden, wantReason: relay.ReasonForbidden},
		{name: "unknown bridge", h: wire.Header{Bridge: "ns/nope", Port: 8155, Credential: w.token(w.rsa, "ns/nope", time.Minute)}, wantCode: wire.CodeUnknownBridge, wantReason: relay.ReasonUnknownBridge},
		{name: "port not allowed", h: wire.Header{Bridge: "ns/b1", Port: 9999, Credential: w.token(w.rsa, "ns/b1", time.Minute)}, wantCode: wire.CodeUnknownBridge, wantReason: relay.ReasonPortNotAllowed},
		{name: "peer not configured", h: wire.Header{Bridge: "ns/ghost", Port: 8155, Credential: w.token(w.rsa, "ns/ghost", time.Minute)}, wantCode: wire.CodePeerDown, wantReason: relay.ReasonUnknownPeer},
		{name: "peer down", h: wire.Header{Bridge: "ns/down", Port: 8155, Credential: w.token(w.rsa, "ns/down", time.Minute)}, wantCode: wire.CodePeerDown, wantReason: relay.ReasonPeerDown},
		{name: "nothing listens on peer port", h: wire.Header{Bridge: "ns/b1", Port: 7777, Credential: w.token(w.rsa, "ns/b1", time.Minute)}, wantCode: wire.CodeDialFailed, wantReason: relay.ReasonDialFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before float64
			if tt.wantReason != "" {
				before = testutil.ToFloat64(w.srv.Relay.RefusedCounter(tt.wantReason))
			}
			c, err := w.carrier(tt.h)
			if tt.wantBody == "" {
				if err == nil {
					c.Close()
					t.Fatal("accepted")
				}
				if got := refusedCode(err); got != tt.wantCode {
					t.Fatalf("refused with %v (%v), want %v", got, err, tt.wantCode)
				}
				if got := testutil.ToFloat64(w.srv.Relay.RefusedCounter(tt.wantReason)) - before; got != 1 {
					t.Fatalf("refusals for %s went up by %v, want 1", tt.wantReason, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := get(t, c, "/x"); got != tt.wantBody {
				t.Fatalf("body %q, want %q", got, tt.wantBody)
			}
			// The same connection carries a second request (keep-alive).
			if got := get(t, c, "/x"); got != tt.wantBody {
				t.Fatalf("second body %q, want %q", got, tt.wantBody)
			}
		})
	}

	t.Run("malformed preambles", func(t *testing.T) {
		cases := []struct {
			name   string
			raw    []byte
			code   wire.Code
			reason string
		}{
			{name: "http instead of preamble", raw: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), code: wire.CodeMalformed, reason: relay.ReasonMalformed},
			{name: "version 2", raw: []byte("GFYW\x02\x1f\xdb\x00\x05\x00\x01\x00ns/b1x"), code: wire.CodeUnsupportedVersion, reason: relay.ReasonVersion},
			{name: "missing credential", raw: []byte("GFYW\x01\x1f\xdb\x00\x05\x00\x00\x00ns/b1"), code: wire.CodeMalformed, reason: relay.ReasonMalformed},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := testutil.ToFloat64(w.srv.Relay.RefusedCounter(tc.reason))
				c, err := net.Dial("tcp", w.relayURL)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.Write(tc.raw)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if got := refusedCode(wire.ReadReply(c)); got != tc.code {
					t.Fatalf("code %v, want %v", got, tc.code)
				}
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Fatal("connection not closed after refusal")
				}
				if got := testutil.ToFloat64(w.srv.Relay.RefusedCounter(tc.reason)) - before; got != 1 {
					t.Fatalf("refusals went up by %v", got)
				}
			})
		}
	})

	t.Run("metrics", func(t *testing.T) {
		waitFor(t, func() bool {
			return testutil.ToFloat64(w.srv.Relay.ActiveGauge("ns/b1")) == 0 && testutil.ToFloat64(w.srv.Relay.ActiveGauge("ns/b2")) == 0
		})
		want := `
# HELP gefyra_stowaway_connections_total Carrier connections accepted and relayed, by bridge.
# TYPE gefyra_stowaway_connections_total counter
gefyra_stowaway_connections_total{bridge="ns/b1"} 1
gefyra_stowaway_connections_total{bridge="ns/b2"} 2
`
		if err := testutil.GatherAndCompare(w.reg, strings.NewReader(want), "gefyra_stowaway_connections_total"); err != nil {
			t.Fatal(err)
		}
		refusals := map[string]float64{
			relay.ReasonUnauthenticated: 5, relay.ReasonForbidden: 1, relay.ReasonUnknownBridge: 1, relay.ReasonPortNotAllowed: 1,
			relay.ReasonUnknownPeer: 1, relay.ReasonPeerDown: 1, relay.ReasonDialFailed: 1, relay.ReasonMalformed: 2, relay.ReasonVersion: 1,
			relay.ReasonNotConfigured: 0,
		}
		for reason, n := range refusals {
			if got := testutil.ToFloat64(w.srv.Relay.RefusedCounter(reason)); got != n {
				t.Errorf("refused{reason=%s} = %v, want %v", reason, got, n)
			}
		}
		// Two requests of ~120 bytes each way per connection.
		for _, b := range []string{"ns/b1", "ns/b2"} {
			for _, dir := range []string{relay.ToPeer, relay.FromPeer} {
				if got := testutil.ToFloat64(w.srv.Relay.BytesCounter(b, dir)); got < 100 {
					t.Errorf("bytes{bridge=%s,direction=%s} = %v, want >= 100", b, dir, got)
				}
			}
		}
		mfs, err := w.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				var peer string
				for _, l := range m.GetLabel() {
					if l.GetName() == "peer" {
						peer = l.GetValue()
					}
				}
				if peer == "" {
					continue
				}
				if got[mf.GetName()] == nil {
					got[mf.GetName()] = map[string]float64{}
				}
				v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
				got[mf.GetName()][peer] = v
			}
		}
		for _, p := range []string{"dev1", "dev2"} {
			if hs, ok := got["gefyra_stowaway_peer_last_handshake_seconds"][p]; !ok || hs < 0 || hs > 60 {
				t.Errorf("last handshake of %s: %v (present %v)", p, hs, ok)
			}
			if got["gefyra_stowaway_peer_received_bytes_total"][p] < 500 || got["gefyra_stowaway_peer_sent_bytes_total"][p] < 500 {
				t.Errorf("peer bytes of %s: rx %v tx %v", p, got["gefyra_stowaway_peer_received_bytes_total"][p], got["gefyra_stowaway_peer_sent_bytes_total"][p])
			}
		}
		if _, ok := got["gefyra_stowaway_peer_last_handshake_seconds"]["dev3"]; ok {
			t.Error("handshake age reported for a peer that never shook hands")
		}
	})
}

func TestUpdateKeepsInflightAndDropsRemoved(t *testing.T) {
	w := newWorld(t)
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
	tok := w.token(w.ed, "ns/b1", time.Minute)
	c, err := w.carrier(wire.Header{Bridge: "ns/b1", Port: 8155, Credential: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get(t, c, "/before")

	// A bad update changes nothing.
	bad := cfg
	bad.CredentialKeys = []string{"not pem"}
	if err := w.srv.Update(bad); err == nil {
		t.Fatal("bad config accepted")
	}
	c2, err := w.carrier(wire.Header{Bridge: "ns/b1", Port: 8155, Credential: tok})
	if err != nil {
		t.Fatalf("after a rejected update: %v", err)
	}
	c2.Close()

	// The bridge goes: new connections are refused, the open one goes on.
	next := cfg
	next.Bridges = nil
	if err := w.srv.Update(next); err != nil {
		t.Fatal(err)
	}
	if _, err := w.carrier(wire.Header{Bridge: "ns/b1", Port: 8155, Credential: tok}); refusedCode(err) != wire.CodeUnknownBridge {
		t.Fatalf("removed bridge: %v", err)
	}
	if got := get(t, c, "/after"); !strings.HasPrefix(got, "dev1:8155 /after") {
		t.Fatalf("in-flight connection: %q", got)
	}
	// The peer goes too: the open connection's packets have nowhere to go.
	next.Peers = nil
	if err := w.srv.Update(next); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Second))
	req, _ := http.NewRequest("GET", "http://bridge/gone", nil)
	req.Write(c)
	if _, err := http.ReadResponse(bufio.NewReader(c), req); err == nil {
		t.Fatal("traffic still flows to a removed peer")
	}
}

func TestPeersCannotReachEachOther(t *testing.T) {
	w := newWorld(t)
	// Both developers route the whole tunnel prefix to stowaway, so a
	// packet from one to the other does reach stowaway, which must not
	// forward it.
	dev1 := newDeveloper("dev1", "10.122.0.2")
	dev2 := newDeveloper("dev2", "10.122.0.3")
	cfg := config.Config{Peers: []config.Peer{dev1.peer(), dev2.peer()}}
	if err := w.srv.Update(cfg); err != nil {
		t.Fatal(err)
	}
	w.run(dev1, "10.122.0.0/24", 8155)
	w.run(dev2, "10.122.0.0/24", 8155)
	// Stowaway itself reaches dev1, so the tunnel is up ...
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := w.srv.Net.DialContext(ctx, "tcp", "10.122.0.2:8155")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// ... but dev2 does not.
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if c, err := dev2.net.DialContext(ctx2, "tcp", "10.122.0.2:8155"); err == nil {
		c.Close()
		t.Fatal("one developer reached another through stowaway")
	}
	// Nor does stowaway accept connections from peers on its own address.
	ctx3, cancel3 := context.WithTimeout(context.Background(), time.Second)
	defer cancel3()
	if c, err := dev2.net.DialContext(ctx3, "tcp", w.relayURL); err == nil {
		c.Close()
		t.Fatal("developer reached the relay through the tunnel")
	}
}

func TestNotConfigured(t *testing.T) {
	w := newWorld(t)
	_, err := w.carrier(wire.Header{Bridge: "ns/b1", Port: 8155, Credential: []byte("x")})
	if refusedCode(err) != wire.CodeUnknownBridge {
		t.Fatalf("got %v", err)
	}
	if got := testutil.ToFloat64(w.srv.Relay.RefusedCounter(relay.ReasonNotConfigured)); got != 1 {
		t.Fatalf("not_configured refusals %v", got)
	}
}

func TestRunStopsWithOpenConnections(t *testing.T) {
	w := newWorld(t)
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
	c, err := w.carrier(wire.Header{Bridge: "ns/b1", Port: 8155, Credential: w.token(w.ed, "ns/b1", time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A carrier that connects and never speaks.
	idle, err := net.Dial("tcp", w.relayURL)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(50 * time.Millisecond)
	stopped := make(chan struct{})
	go func() { w.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return with connections open")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("relayed connection still open after shutdown")
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

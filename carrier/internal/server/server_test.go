package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	ct "gefyra.dev/gefyra/carrier/internal/config/configtest"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/server"
	"gefyra.dev/gefyra/internal/pipe"
	"gefyra.dev/gefyra/internal/wire"
)

// backend is an HTTP server that says who it is and what it got.
func backend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Got-Token", r.Header.Get("X-Forwarded-Access-Token"))
		w.Header().Set("X-Got-XFF", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("X-Got-Proto", r.Proto)
		w.Header().Set("X-Got-Hop", r.Header.Get("X-Hop")+r.Header.Get("Keep-Alive"))
		fmt.Fprintf(w, "%s %s %s %d", name, r.Method, r.URL.RequestURI(), len(body))
	})
	mux.HandleFunc("/grpc", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		io.WriteString(w, name)
		w.Header().Set("Grpc-Status", "0")
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want websocket", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Backend: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]), name)
		brw.Flush()
		io.Copy(c, brw) // echo whatever comes
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// stowaway is a relay speaking internal/wire: it forwards each accepted
// connection to the backend registered for the bridge.
type stowaway struct {
	ln       net.Listener
	mu       sync.Mutex        // guards the fields below
	bridges  map[string]string // bridge → backend address
	headers  []wire.Header
	open     map[net.Conn]openConn // relayed connections
	accepted atomic.Int64
}

func newStowaway(t *testing.T) *stowaway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stowaway{ln: ln, bridges: map[string]string{}, open: map[net.Conn]openConn{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

// openConn is a relayed connection's bridge, and how to end its relay.
type openConn struct {
	bridge string
	cancel context.CancelFunc
}

func (s *stowaway) addr() string { return s.ln.Addr().String() }

func (s *stowaway) set(bridge, backend string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if backend == "" {
		delete(s.bridges, bridge)
	} else {
		s.bridges[bridge] = backend
	}
}

func (s *stowaway) serve(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := wire.Decode(c)
	if err != nil {
		wire.WriteReply(c, wire.CodeFor(err))
		c.Close()
		return
	}
	s.mu.Lock()
	s.headers = append(s.headers, h)
	be := s.bridges[h.Bridge]
	s.mu.Unlock()
	if be == "" {
		wire.WriteReply(c, wire.CodePeerDown)
		c.Close()
		return
	}
	up, err := net.Dial("tcp", be)
	if err != nil {
		wire.WriteReply(c, wire.CodeDialFailed)
		c.Close()
		return
	}
	wire.WriteReply(c, wire.CodeAccepted)
	s.accepted.Add(1)
	// Join owns c and up from here on: vanish ends it through ctx.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.mu.Lock()
	s.open[c] = openConn{h.Bridge, cancel}
	s.mu.Unlock()
	pipe.Join(ctx, c, up)
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
}

// vanish does what the real stowaway does when a bridge's developer stops
// answering: it refuses new connections for the bridge and closes the
// open ones.
func (s *stowaway) vanish(bridge string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.bridges, bridge)
	for _, o := range s.open {
		if o.bridge == bridge {
			o.cancel()
		}
	}
}

func (s *stowaway) seen() []wire.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wire.Header(nil), s.headers...)
}

type carrier struct {
	srv    *server.Server
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func startCarrier(t *testing.T, msgs ...proto.Message) *carrier {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv := server.New(nil, metrics.New(reg))
	ctx, cancel := context.WithCancel(context.Background())
	c := &carrier{srv: srv, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- srv.Run(ctx) }()
	t.Cleanup(c.stop)
	if err := srv.Apply(context.Background(), ct.Resources(msgs...)); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *carrier) stop() {
	c.cancel()
	<-c.done
	c.done <- nil
}

func (c *carrier) url(name string) string { return "http://" + c.srv.Addr(name) }

func do(t *testing.T, client *http.Client, method, url string, body io.Reader, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// world is two developers' bridges on one workload, and the fallback.
type world struct {
	stow                 *stowaway
	fallback, devA, devB *httptest.Server
	resources            []proto.Message
}

func newWorld(t *testing.T) *world {
	w := &world{stow: newStowaway(t), fallback: backend(t, "fallback"), devA: backend(t, "dev-a"), devB: backend(t, "dev-b")}
	w.stow.set("demo/bridge-a", w.devA.Listener.Addr().String())
	w.stow.set("demo/bridge-b", w.devB.Listener.Addr().String())
	w.resources = []proto.Message{
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes",
			ct.Direct("probe", ct.Path("/healthz", ct.Header("user-agent", "kube-probe/1.37")), 200, "ok\n"),
			ct.To("a", ct.Prefix("/", ct.Header("x-gefyra-bridge", "a")), "bridge-a"),
			ct.To("b", ct.Prefix("/", ct.Header("x-gefyra-bridge", "b")), "bridge-b"),
			ct.To("gone", ct.Prefix("/", ct.Header("x-gefyra-bridge", "gone")), "bridge-gone"),
		),
		ct.Cluster("fallback", w.fallback.Listener.Addr().String()),
		ct.BridgeCluster("bridge-a", w.stow.addr(), "demo/bridge-a", 8155, "token-a"),
		ct.BridgeCluster("bridge-b", w.stow.addr(), "demo/bridge-b", 8155, "token-b"),
		ct.BridgeCluster("bridge-gone", w.stow.addr(), "demo/bridge-gone", 8155, "token-c"),
	}
	return w
}

func TestHTTPRouting(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	client := &http.Client{Timeout: 10 * time.Second}
	tests := []struct {
		name    string
		method  string
		path    string
		headers []string
		body    string
		code    int
		want    string // body prefix
	}{
		{name: "bridge a by header", path: "/items/1", headers: []string{"X-Gefyra-Bridge", "a"}, code: 200, want: "dev-a GET /items/1"},
		{name: "bridge b by header", path: "/items/2?x=y", headers: []string{"X-Gefyra-Bridge", "b"}, code: 200, want: "dev-b GET /items/2?x=y"},
		{name: "no route goes to the fallback", path: "/items/3", code: 200, want: "fallback GET /items/3"},
		{name: "bridge refused goes to the fallback", path: "/x", headers: []string{"X-Gefyra-Bridge", "gone"}, code: 200, want: "fallback GET /x"},
		{name: "probe answered locally", path: "/healthz", headers: []string{"User-Agent", "kube-probe/1.37"}, code: 200, want: "ok"},
		{name: "POST body to bridge", method: "POST", path: "/p", headers: []string{"X-Gefyra-Bridge", "a"}, body: strings.Repeat("x", 100000), code: 200, want: "dev-a POST /p 100000"},
		{name: "HEAD", method: "HEAD", path: "/h", headers: []string{"X-Gefyra-Bridge", "b"}, code: 200, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			resp, got := do(t, client, method, c.url("http"), nil)
			_ = resp
			resp, got = do(t, client, method, c.url("http")+tt.path, body, tt.headers...)
			if resp.StatusCode != tt.code || !strings.HasPrefix(got, tt.want) {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, got, tt.code, tt.want)
			}
		})
	}

	// The bridge learnt who it serves and with which credential.
	seen := map[string]string{}
	for _, h := range w.stow.seen() {
		seen[h.Bridge] = string(h.Credential)
		if h.Port != 8155 || !h.ClientAddr.IsValid() {
			t.Errorf("preamble %+v lacks port or client address", h)
		}
	}
	if seen["demo/bridge-a"] != "token-a" || seen["demo/bridge-b"] != "token-b" {
		t.Fatalf("stowaway saw %v", seen)
	}

	// Metrics were counted.
	if v := testutil.ToFloat64(counter(t, c.reg, "gefyra_carrier_requests_total", "bridge", "demo/bridge-a", "route", "a", "code", "200")); v != 2 {
		t.Errorf("requests for bridge a = %v, want 2", v)
	}
	if v := testutil.ToFloat64(counter(t, c.reg, "gefyra_carrier_fallbacks_total", "bridge", "demo/bridge-gone", "reason", "bridge_refused")); v != 1 {
		t.Errorf("refused fallbacks = %v, want 1", v)
	}
	if v := testutil.ToFloat64(counter(t, c.reg, "gefyra_carrier_fallbacks_total", "bridge", "", "reason", "no_route")); v < 1 {
		t.Errorf("no-route fallbacks = %v", v)
	}
	if v := testutil.ToFloat64(counter(t, c.reg, "gefyra_carrier_bytes_total", "bridge", "demo/bridge-a", "direction", "upstream")); v != 100000 {
		t.Errorf("upstream bytes for bridge a = %v, want 100000", v)
	}
	if n := testutil.CollectAndCount(c.reg, "gefyra_carrier_request_duration_seconds"); n == 0 {
		t.Error("no duration histogram")
	}
}

// counter finds one series of a metric by its labels.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			want := map[string]string{}
			for i := 0; i+1 < len(labels); i += 2 {
				want[labels[i]] = labels[i+1]
			}
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
					continue metric
				}
			}
			v := m.GetCounter().GetValue()
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			g.Set(v)
			return g
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
	return g
}

func TestHeadersPassAndHopByHopGoes(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	conn, err := net.Dial("tcp", c.srv.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	jwt := "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6ImpvaG5AZ2VmeXJhLmRldiJ9.c2lnbmF0dXJl"
	fmt.Fprintf(conn, "GET /items/123 HTTP/1.1\r\nHost: demo\r\nX-Gefyra-Bridge: a\r\nX-Forwarded-Access-Token: %s\r\n"+
		"X-Forwarded-For: 203.0.113.9\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\r\n", jwt)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get("X-Got-Token"); got != jwt {
		t.Errorf("token arrived as %q", got)
	}
	if got := resp.Header.Get("X-Got-XFF"); got != "203.0.113.9, 127.0.0.1" {
		t.Errorf("X-Forwarded-For arrived as %q", got)
	}
	if got := resp.Header.Get("X-Got-Hop"); got != "" {
		t.Errorf("hop-by-hop fields arrived: %q", got)
	}
	// The connection stays open for the next request (keep-alive).
	fmt.Fprintf(conn, "GET /second HTTP/1.1\r\nHost: demo\r\nX-Gefyra-Bridge: b\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.HasPrefix(string(b), "dev-b GET /second") {
		t.Fatalf("second request on the connection got %q", b)
	}
}

func TestNoFallback503(t *testing.T) {
	be := backend(t, "dev")
	stow := newStowaway(t)
	c := startCarrier(t,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", ""),
		ct.Routes("routes", ct.To("a", ct.Prefix("/", ct.Header("x-gefyra-bridge", "a")), "bridge-a")),
		ct.BridgeCluster("bridge-a", stow.addr(), "demo/a", 80, "t"),
	)
	_ = be
	client := &http.Client{Timeout: 10 * time.Second}
	tests := []struct {
		name    string
		headers []string
		want    string
	}{
		{name: "no route", want: "no route matched and no fallback"},
		{name: "bridge down", headers: []string{"X-Gefyra-Bridge", "a"}, want: "upstream connect error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, client, "GET", c.url("http")+"/", nil, tt.headers...)
			if resp.StatusCode != 503 || !strings.Contains(body, tt.want) {
				t.Fatalf("got %d %q, want 503 %q", resp.StatusCode, body, tt.want)
			}
		})
	}
}

func TestBridgeDownFallsBack(t *testing.T) {
	w := newWorld(t)
	// Bridge a's stowaway is not even listening.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	w.resources[3] = ct.BridgeCluster("bridge-a", dead, "demo/bridge-a", 8155, "token-a")
	c := startCarrier(t, w.resources...)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, body := do(t, client, "GET", c.url("http")+"/down", nil, "X-Gefyra-Bridge", "a")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "fallback") {
		t.Fatalf("got %d %q, want the fallback", resp.StatusCode, body)
	}
	if v := testutil.ToFloat64(counter(t, c.reg, "gefyra_carrier_fallbacks_total", "bridge", "demo/bridge-a", "reason", "connect_failed")); v != 1 {
		t.Errorf("connect_failed fallbacks = %v", v)
	}
	// The developer's backend going away behind stowaway: refused, fallback.
	w.stow.set("demo/bridge-b", "")
	resp, body = do(t, client, "GET", c.url("http")+"/down", nil, "X-Gefyra-Bridge", "b")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "fallback") {
		t.Fatalf("got %d %q, want the fallback", resp.StatusCode, body)
	}
}

// TestVanishedDeveloperFallsBack: stowaway closes the kept-alive
// connections of a developer that stopped answering and refuses new ones;
// the next request, which carrier sends on such a pooled connection, still
// gets the fallback's answer instead of an error.
func TestVanishedDeveloperFallsBack(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, body := do(t, client, "GET", c.url("http")+"/x", nil, "X-Gefyra-Bridge", "a")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "dev-a") {
		t.Fatalf("got %d %q, want dev-a", resp.StatusCode, body)
	}
	w.stow.vanish("demo/bridge-a")
	resp, body = do(t, client, "GET", c.url("http")+"/x", nil, "X-Gefyra-Bridge", "a")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "fallback") {
		t.Fatalf("got %d %q, want the fallback", resp.StatusCode, body)
	}
	if v := testutil.ToFloat64(counter(t, c.reg, "gefyra_carrier_fallbacks_total", "bridge", "demo/bridge-a", "reason", "bridge_refused")); v != 1 {
		t.Errorf("bridge_refused fallbacks = %v, want 1", v)
	}
}

func TestMidRequestFailureIs502(t *testing.T) {
	// A backend that takes the request and hangs up without answering.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				bufio.NewReader(c).ReadString('\n')
				c.Close()
			}()
		}
	}()
	stow := newStowaway(t)
	stow.set("demo/a", ln.Addr().String())
	c := startCarrier(t,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes", ct.To("a", ct.Prefix("/"), "bridge-a")),
		ct.BridgeCluster("bridge-a", stow.addr(), "demo/a", 80, "t"),
		ct.Cluster("fallback", backend(t, "fallback").Listener.Addr().String()),
	)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, body := do(t, client, "GET", c.url("http")+"/", nil)
	if resp.StatusCode != 502 || !strings.Contains(body, "upstream failed") {
		t.Fatalf("got %d %q, want 502", resp.StatusCode, body)
	}
}

func TestWebSocket(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	conn, err := net.Dial("tcp", c.srv.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: demo\r\nX-Gefyra-Bridge: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || resp.Header.Get("X-Backend") != "dev-b" {
		t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello", strings.Repeat("z", 70000)} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo of %d bytes: %v", len(msg), err)
		}
	}
}

func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestH2C(t *testing.T) {
	w := newWorld(t)
	w.resources = append(w.resources[:4:4], ct.HTTP2(ct.BridgeCluster("bridge-b", w.stow.addr(), "demo/bridge-b", 8155, "token-b")), w.resources[5])
	c := startCarrier(t, w.resources...)
	client := h2cClient()
	tests := []struct {
		name      string
		headers   []string
		body      string
		wantBody  string
		wantProto string // what the backend saw
	}{
		{name: "h2c to HTTP/1.1 bridge", headers: []string{"X-Gefyra-Bridge", "a"}, wantBody: "dev-a GET /h2", wantProto: "HTTP/1.1"},
		{name: "h2c to h2c bridge", headers: []string{"X-Gefyra-Bridge", "b"}, wantBody: "dev-b GET /h2", wantProto: "HTTP/2.0"},
		{name: "h2c POST to HTTP/1.1 bridge", headers: []string{"X-Gefyra-Bridge", "a"}, body: "payload", wantBody: "dev-a POST /h2 7", wantProto: "HTTP/1.1"},
		{name: "h2c to the fallback", wantBody: "fallback GET /h2", wantProto: "HTTP/1.1"},
		{name: "h2c probe", headers: []string{"User-Agent", "kube-probe/1.37"}, wantBody: "", wantProto: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path := "GET", "/h2"
			var body io.Reader
			if tt.body != "" {
				method, body = "POST", strings.NewReader(tt.body)
			}
			if tt.wantProto == "" {
				path = "/healthz"
			}
			resp, got := do(t, client, method, c.url("http")+path, body, tt.headers...)
			if resp.ProtoMajor != 2 || resp.StatusCode != 200 || !strings.HasPrefix(got, tt.wantBody) || resp.Header.Get("X-Got-Proto") != tt.wantProto {
				t.Fatalf("got %s %d %q (backend saw %q)", resp.Proto, resp.StatusCode, got, resp.Header.Get("X-Got-Proto"))
			}
		})
	}
	t.Run("trailers over h2c end to end", func(t *testing.T) {
		resp, got := do(t, client, "POST", c.url("http")+"/grpc", strings.NewReader("req"), "X-Gefyra-Bridge", "b", "Content-Type", "application/grpc", "TE", "trailers")
		if got != "dev-b" || resp.Trailer.Get("Grpc-Status") != "0" {
			t.Fatalf("got %q, trailers %v", got, resp.Trailer)
		}
	})
}

func TestTCPListener(t *testing.T) {
	echo := func(tag string) string {
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
				go func() {
					defer c.Close()
					io.WriteString(c, tag)
					io.Copy(c, c)
				}()
			}
		}()
		return ln.Addr().String()
	}
	stow := newStowaway(t)
	stow.set("demo/db", echo("dev:"))
	c := startCarrier(t,
		ct.TCPListener("bridged", "127.0.0.1:0", "bridge-db", "fallback"),
		ct.TCPListener("refused", "127.0.0.1:0", "bridge-nope", "fallback"),
		ct.Cluster("fallback", echo("fallback:")),
		ct.BridgeCluster("bridge-db", stow.addr(), "demo/db", 5432, "t"),
		ct.BridgeCluster("bridge-nope", stow.addr(), "demo/nope", 5432, "t"),
	)
	tests := []struct{ name, listener, want string }{
		{name: "to the bridge", listener: "bridged", want: "dev:"},
		{name: "refused bridge to the fallback", listener: "refused", want: "fallback:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", c.srv.Addr(tt.listener))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, "ping")
			conn.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(conn)
			if err != nil || string(got) != tt.want+"ping" {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

func TestNACKKeepsServing(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	bad := append([]proto.Message(nil), w.resources...)
	bad[1] = ct.Routes("routes", ct.To("a", ct.Regex("/items/([0-9]+"), "bridge-a"))
	err := c.srv.Apply(context.Background(), ct.Resources(bad...))
	if err == nil || !strings.Contains(err.Error(), "missing closing )") {
		t.Fatalf("bad regex accepted: %v", err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, body := do(t, client, "GET", c.url("http")+"/still", nil, "X-Gefyra-Bridge", "a")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "dev-a") {
		t.Fatalf("after NACK: %d %q", resp.StatusCode, body)
	}
	if v := testutil.ToFloat64(counter(t, c.reg, "gefyra_carrier_config_updates_total", "result", "rejected")); v != 1 {
		t.Errorf("rejected updates = %v", v)
	}
}

func TestListenersFollowConfig(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	first := c.srv.Addr("http")
	more := append(append([]proto.Message(nil), w.resources...), ct.HTTPListener("second", "127.0.0.1:0", "routes", "fallback"))
	if err := c.srv.Apply(context.Background(), ct.Resources(more...)); err != nil {
		t.Fatal(err)
	}
	if c.srv.Addr("http") != first || c.srv.Addr("second") == "" {
		t.Fatalf("listeners after adding one: http %q (was %q), second %q", c.srv.Addr("http"), first, c.srv.Addr("second"))
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if resp, _ := do(t, client, "GET", c.url("second")+"/", nil); resp.StatusCode != 200 {
		t.Fatalf("new listener answered %d", resp.StatusCode)
	}
	if err := c.srv.Apply(context.Background(), ct.Resources(w.resources[1:]...)); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", first, time.Second); err == nil {
		t.Fatal("removed listener still accepts")
	}
}

// TestKeptAliveConnectionFollowsConfig: a client's kept-alive connection
// that waits between two requests gets the second one routed on the
// config of when it arrived, not of when the first one ended.
func TestKeptAliveConnectionFollowsConfig(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	client := &http.Client{Timeout: 10 * time.Second} // keeps its connection alive
	if resp, body := do(t, client, "GET", c.url("http")+"/", nil); resp.StatusCode != 200 || !strings.HasPrefix(body, "fallback") {
		t.Fatalf("got %d %q, want the fallback", resp.StatusCode, body)
	}
	// The fallback moves to dev-b's backend while the connection idles.
	moved := append([]proto.Message(nil), w.resources...)
	moved[2] = ct.Cluster("fallback", w.devB.Listener.Addr().String())
	if err := c.srv.Apply(context.Background(), ct.Resources(moved...)); err != nil {
		t.Fatal(err)
	}
	resp, body := do(t, client, "GET", c.url("http")+"/", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "dev-b") {
		t.Fatalf("got %d %q on the kept-alive connection, want the new fallback dev-b", resp.StatusCode, body)
	}
	if got := w.stow.accepted.Load(); got != 0 {
		t.Errorf("stowaway accepted %d connections; the fallback is a plain cluster", got)
	}
}

func TestConfigChangeUnderLoadLosesNothing(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	url := c.url("http") + "/load"
	ctx, stop := context.WithTimeout(context.Background(), 2*time.Second)
	defer stop()
	var failures, total atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for n := 0; n < 2000 && ctx.Err() == nil; n++ {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("X-Gefyra-Bridge", "a")
				resp, err := client.Do(req)
				total.Add(1)
				if err != nil {
					failures.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
				}
			}
		}()
	}
	// Flip bridge a's route between the two developers while requests flow.
	for i := 0; ctx.Err() == nil && i < 40; i++ {
		res := append([]proto.Message(nil), w.resources...)
		target := "bridge-a"
		if i%2 == 0 {
			target = "bridge-b"
		}
		res[1] = ct.Routes("routes", ct.To("a", ct.Prefix("/", ct.Header("x-gefyra-bridge", "a")), target))
		if err := c.srv.Apply(context.Background(), ct.Resources(res...)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	if failures.Load() != 0 || total.Load() == 0 {
		t.Fatalf("%d of %d requests failed across config changes", failures.Load(), total.Load())
	}
}

func TestRunShutdownLeaksNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	w := newWorld(t)
	w.resources[4] = ct.HTTP2(ct.BridgeCluster("bridge-b", w.stow.addr(), "demo/bridge-b", 8155, "token-b"))
	base := runtime.NumGoroutine()
	_ = before
	reg := prometheus.NewRegistry()
	srv := server.New(nil, metrics.New(reg))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	if err := srv.Apply(context.Background(), ct.Resources(w.resources...)); err != nil {
		t.Fatal(err)
	}
	// Leave connections of every kind open: idle keep-alive, pooled upstream.
	client := &http.Client{Timeout: 10 * time.Second}
	do(t, client, "GET", "http://"+srv.Addr("http")+"/", nil, "X-Gefyra-Bridge", "a")
	do(t, h2cClient(), "GET", "http://"+srv.Addr("http")+"/", nil)
	do(t, h2cClient(), "GET", "http://"+srv.Addr("http")+"/", nil, "X-Gefyra-Bridge", "b")
	idle, err := net.Dial("tcp", srv.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Run returned, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

// exchange writes raw request bytes and reads one response.
func exchange(t *testing.T, conn net.Conn, br *bufio.Reader, raw string) (*http.Response, string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestHTTP1Semantics(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	dial := func() (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", c.srv.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, bufio.NewReader(conn)
	}

	t.Run("chunked upload", func(t *testing.T) {
		conn, br := dial()
		_, body := exchange(t, conn, br, "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
		if body != "fallback POST /p 11" {
			t.Fatalf("got %q", body)
		}
	})
	t.Run("expect 100-continue", func(t *testing.T) {
		conn, br := dial()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "PUT /e HTTP/1.1\r\nHost: x\r\nX-Gefyra-Bridge: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
		line, err := br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("interim response %q, %v", line, err)
		}
		br.ReadString('\n')
		_, body := exchange(t, conn, br, "data")
		if body != "dev-a PUT /e 4" {
			t.Fatalf("got %q", body)
		}
	})
	t.Run("HTTP/1.0 closes after the response", func(t *testing.T) {
		conn, br := dial()
		resp, body := exchange(t, conn, br, "GET /old HTTP/1.0\r\n\r\n")
		if !strings.HasPrefix(body, "fallback GET /old") || !resp.Close {
			t.Fatalf("got %q close=%v", body, resp.Close)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("connection still open: %v", err)
		}
	})
	t.Run("pipelined requests", func(t *testing.T) {
		conn, br := dial()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET /1 HTTP/1.1\r\nHost: x\r\nX-Gefyra-Bridge: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nX-Gefyra-Bridge: b\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
		for _, want := range []string{"dev-a GET /1", "dev-b GET /2", "fallback GET /3"} {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if !strings.HasPrefix(string(b), want) {
				t.Fatalf("got %q, want %q", b, want)
			}
		}
	})
	t.Run("malformed request", func(t *testing.T) {
		conn, br := dial()
		resp, body := exchange(t, conn, br, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
		if resp.StatusCode != 400 || !strings.Contains(body, "Transfer-Encoding and Content-Length") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("active connections", func(t *testing.T) {
		dial()
		active := func() float64 {
			return testutil.ToFloat64(gauge(t, c.reg, "gefyra_carrier_active_connections", "listener", "http"))
		}
		deadline := time.Now().Add(5 * time.Second)
		for active() < 1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if active() < 1 {
			t.Fatalf("active connections %v", active())
		}
	})
}

func gauge(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := true
			for _, lp := range m.GetLabel() {
				for i := 0; i+1 < len(labels); i += 2 {
					if lp.GetName() == labels[i] && lp.GetValue() != labels[i+1] {
						match = false
					}
				}
			}
			if match {
				g.Set(m.GetGauge().GetValue())
			}
		}
	}
	return g
}

func TestStreamingResponse(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "event %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	})
	be := httptest.NewServer(mux)
	defer be.Close()
	c := startCarrier(t,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes"),
		ct.Cluster("fallback", be.Listener.Addr().String()),
	)
	resp, err := http.Get(c.url("http") + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer encoding %v", resp.TransferEncoding)
	}
	br := bufio.NewReader(resp.Body)
	// Each event arrives on its own, before the response ends.
	first, err := br.ReadString('\n')
	if err != nil || first != "event 0\n" {
		t.Fatalf("first event %q, %v", first, err)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "event 1\nevent 2\n" {
		t.Fatalf("rest %q", rest)
	}
}

func TestUpstreamClosesKeptAliveConnections(t *testing.T) {
	// A server that closes each connection after one response without
	// saying so, like one whose keep-alive timeout just ran out.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				b, _ := io.ReadAll(req.Body)
				fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
			}()
		}
	}()
	c := startCarrier(t,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes"),
		ct.Cluster("fallback", ln.Addr().String()),
	)
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < 10; i++ {
		method, body := "GET", io.Reader(nil)
		if i%2 == 1 {
			method, body = "POST", strings.NewReader("payload")
		}
		time.Sleep(5 * time.Millisecond)
		resp, got := do(t, client, method, c.url("http")+"/", body)
		if resp.StatusCode != 200 || (method == "POST" && got != "payload") {
			t.Fatalf("request %d (%s): %d %q", i, method, resp.StatusCode, got)
		}
	}
}

func TestBindFailureIsNACKed(t *testing.T) {
	w := newWorld(t)
	c := startCarrier(t, w.resources...)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	res := append(append([]proto.Message(nil), w.resources...), ct.HTTPListener("taken", taken.Addr().String(), "routes", "fallback"))
	err = c.srv.Apply(context.Background(), ct.Resources(res...))
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Apply: %v", err)
	}
	if c.srv.Config().Listener("taken") != nil {
		t.Fatal("rejected config in force")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if resp, _ := do(t, client, "GET", c.url("http")+"/", nil); resp.StatusCode != 200 {
		t.Fatalf("old listener after a failed update: %d", resp.StatusCode)
	}
}

// TestStreamingBothWays: over HTTP/2, the response (its headers first)
// reaches the client while the request body is still being sent, as a
// full-duplex echo or a gRPC bidirectional stream needs; each piece goes
// through on its own. (HTTP/1.1 requests are relayed whole before their
// response is read.)
func TestStreamingBothWays(t *testing.T) {
	echo := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.ProtoMajor == 1 {
			rc.EnableFullDuplex()
		}
		w.Header().Set("X-Got-Proto", r.Proto)
		w.WriteHeader(http.StatusOK)
		rc.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				rc.Flush()
			}
			if err != nil {
				return
			}
		}
	}))
	echo.Config.Protocols = new(http.Protocols)
	echo.Config.Protocols.SetHTTP1(true)
	echo.Config.Protocols.SetUnencryptedHTTP2(true)
	echo.Start()
	defer echo.Close()
	stow := newStowaway(t)
	stow.set("demo/echo", echo.Listener.Addr().String())
	c := startCarrier(t,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes",
			ct.To("h2", ct.Prefix("/", ct.Header("x-upstream", "h2")), "echo-h2"),
			ct.To("bridge", ct.Prefix("/", ct.Header("x-upstream", "bridge")), "bridge"),
		),
		ct.Cluster("fallback", echo.Listener.Addr().String()),
		ct.HTTP2(ct.Cluster("echo-h2", echo.Listener.Addr().String())),
		ct.HTTP2(ct.BridgeCluster("bridge", stow.addr(), "demo/echo", 8155, "token")),
	)
	h2 := h2cClient().Transport.(*http.Transport)
	defer h2.CloseIdleConnections()
	tests := []struct {
		name      string
		transport *http.Transport
		upstream  string
		wantProto string // as the echo got it
	}{
		{name: "h2c to h2c", transport: h2, upstream: "h2", wantProto: "HTTP/2.0"},
		{name: "h2c to an h2c bridge", transport: h2, upstream: "bridge", wantProto: "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			pr, pw := io.Pipe()
			defer pw.Close()
			stop := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) }) // a stuck write ends too
			defer stop()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("http")+"/echo", pr)
			if err != nil {
				t.Fatal(err)
			}
			if tt.upstream != "" {
				req.Header.Set("X-Upstream", tt.upstream)
			}
			// Nothing of the body is sent before the response headers are in.
			resp, err := tt.transport.RoundTrip(req)
			if err != nil {
				t.Fatalf("response headers while the request body is open: %v", err)
			}
			defer resp.Body.Close()
			if got := resp.Header.Get("X-Got-Proto"); got != tt.wantProto {
				t.Errorf("the echo got %s, want %s", got, tt.wantProto)
			}
			br := bufio.NewReader(resp.Body)
			for i := range 3 {
				want := fmt.Sprintf("piece %d\n", i)
				if _, err := io.WriteString(pw, want); err != nil {
					t.Fatal(err)
				}
				if got, err := br.ReadString('\n'); err != nil || got != want {
					t.Fatalf("piece %d: %q, %v; want it echoed while the request is open", i, got, err)
				}
			}
			pw.Close()
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Fatalf("after the request's end: %q, %v", rest, err)
			}
		})
	}
}

// TestEarlyAnswerToAnUpload: a server may answer before it has read the
// request body (401, 413) and close the connection; the client gets that
// answer, not a 502, even though the body could not be sent whole.
func TestEarlyAnswerToAnUpload(t *testing.T) {
	early := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "early")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	defer early.Close()
	c := startCarrier(t,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", ""),
		ct.Routes("routes", ct.To("all", ct.Prefix("/upload"), "early")),
		ct.Cluster("early", early.Listener.Addr().String()),
	)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, size := range []int{1 << 10, 64 << 20} {
		resp, got := do(t, client, "POST", c.url("http")+"/upload", bytes.NewReader(make([]byte, size)))
		if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("X-Backend") != "early" || !strings.Contains(got, "too large") {
			t.Fatalf("%d bytes: got %d %q, want the server's 413", size, resp.StatusCode, got)
		}
		// carrier's own answer to an upload it does not take (no route,
		// no fallback) reaches the client too.
		resp, got = do(t, client, "POST", c.url("http")+"/elsewhere", bytes.NewReader(make([]byte, size)))
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(got, "no route matched") {
			t.Fatalf("%d bytes: got %d %q, want carrier's 503", size, resp.StatusCode, got)
		}
	}
}

package httpproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/carrier/internal/config"
	ct "gefyra.dev/gefyra/carrier/internal/config/configtest"
	"gefyra.dev/gefyra/carrier/internal/httpproxy"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/upstream"
	"gefyra.dev/gefyra/internal/netio"
)

// These tests hold the event loop's HTTP/1.1 path to what the goroutine
// path does: they run on whichever path the process uses (the loop where
// there is one; GEFYRA_EVENT_LOOP=off turns it off) and expect the same
// answers, metrics, keep-alive decisions and timeouts from both.

// rig is a Proxy serving the listener "http" of its config, with the
// registry its metrics go to and the number of ServeConn calls under way.
type rig struct {
	p      *httpproxy.Proxy
	addr   string
	reg    *prometheus.Registry
	cancel context.CancelFunc
	active atomic.Int32
}

func newRig(t *testing.T, setup func(*httpproxy.Proxy), edit func(*config.Listener), res ...proto.Message) *rig {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	cfg, err := config.Compile(ct.Resources(res...), m)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Listener("http")
	if edit != nil {
		edit(l)
	}
	r := &rig{p: &httpproxy.Proxy{Pools: &upstream.Pools{}, Metrics: m}, reg: reg}
	if setup != nil {
		setup(r.p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	t.Cleanup(func() {
		cancel()
		r.p.Close()
	})
	r.addr = serve(t, func(c net.Conn) {
		r.active.Add(1)
		defer r.active.Add(-1)
		r.p.ServeConn(ctx, c, func() *config.Listener { return l })
	})
	return r
}

// toBackend is a listener whose every request goes to backend.
func toBackend(backend string) []proto.Message {
	return []proto.Message{
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes", ct.To("all", ct.Prefix("/"), "fallback")),
		ct.Cluster("fallback", backend),
	}
}

// dial connects to the rig.
func (r *rig) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// waitActive waits until a ServeConn is under way.
func (r *rig) waitActive(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.active.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no ServeConn under way")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitServed waits until no ServeConn is under way.
func (r *rig) waitServed(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for r.active.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d ServeConn calls still under way after %v", r.active.Load(), within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metric sums the samples of name (counter values, histogram counts)
// whose labels include the name, value pairs given.
func (r *rig) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue samples
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// rawUpstream is a backend written by hand: h serves its i-th connection
// (counting from 0) and the connection closes when h returns.
type rawUpstream struct {
	addr     string
	ln       net.Listener
	accepted atomic.Int32
}

func newRawUpstream(t *testing.T, h func(i int, c net.Conn, br *bufio.Reader)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{addr: ln.Addr().String(), ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(u.accepted.Add(1)) - 1
			go func() {
				defer c.Close()
				h(i, c, bufio.NewReader(c))
			}()
		}
	}()
	return u
}

// oneShotUpstream answers the first request of every connection with its
// request line, and closes the connection on the second, unanswered.
func oneShotUpstream(t *testing.T) *rawUpstream {
	return newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		line, _, _, err := readReq(br)
		if err != nil {
			return
		}
		io.WriteString(c, ok(line))
		readReq(br)
	})
}

// getInTurn sends n requests, one after the other, on one connection,
// expects each answered with its request line (see lineUpstream), and
// waits until the connection is served.
func (r *rig) getInTurn(t *testing.T, n int) {
	t.Helper()
	c, br := r.dial(t)
	for i := range n {
		req := fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		if resp, body := exchange(t, c, br, req); resp.StatusCode != 200 || body != fmt.Sprintf("GET /%d", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	c.Close()
	r.waitServed(t, 5*time.Second)
}

// lineUpstream answers every request with its request line.
func lineUpstream(t *testing.T) *rawUpstream {
	return newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			line, _, _, err := readReq(br)
			if err != nil {
				return
			}
			io.WriteString(c, ok(line))
		}
	})
}

// readReq reads a request (its head and a Content-Length body) and
// returns its method and target, its head as it came and its body.
func readReq(br *bufio.Reader) (line, head string, body []byte, err error) {
	var hb strings.Builder
	n := 0
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return "", "", nil, err
		}
		hb.WriteString(l)
		if l == "\r\n" {
			break
		}
		if line == "" {
			f := strings.Fields(l)
			if len(f) >= 2 {
				line = f[0] + " " + f[1]
			}
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "content-length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body = make([]byte, n)
	_, err = io.ReadFull(br, body)
	return line, hb.String(), body, err
}

// ok is a kept-alive response with body b.
func ok(b string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFds waits until the process has no more than max descriptors open.
func waitFds(t *testing.T, max int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := fdCount(t)
		if n <= max {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open after %v, want at most %d", n, within, max)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitClosed waits until the peer of c closes it (EOF or a reset).
func waitClosed(t *testing.T, c net.Conn, br *bufio.Reader, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(within))
	for {
		_, err := br.ReadByte()
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("the connection is still open after %v", within)
		}
		return time.Since(start)
	}
}

// TestLoopWireBytes: what goes upstream and what comes back, byte
// for byte: hop-by-hop fields dropped, X-Forwarded-For appended to.
func TestLoopWireBytes(t *testing.T) {
	heads := make(chan string, 1)
	be := newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			_, head, _, err := readReq(br)
			if err != nil {
				return
			}
			heads <- head
			io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	r := newRig(t, nil, nil, toBackend(be.addr)...)
	c, _ := r.dial(t)
	req := "GET /w?q=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\nTE: trailers\r\nX-Keep: 2\r\n\r\n"
	for range 2 {
		io.WriteString(c, req)
		want := "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok"
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("the client got %q, want %q", got, want)
		}
		if head, want := <-heads, "GET /w?q=1 HTTP/1.1\r\nHost: h\r\nX-Keep: 2\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n\r\n"; head != want {
			t.Fatalf("upstream got %q, want %q", head, want)
		}
	}
	if n := be.accepted.Load(); n != 1 {
		t.Fatalf("%d upstream connections for two requests, want 1", n)
	}
}

// TestLoopMetrics: the same requests count the same on both paths:
// proxied on a route, to the fallback (dialled, then on an idle
// connection), answered directly, failed.
func TestLoopMetrics(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(echo))
	defer be.Close()
	r := newRig(t, nil, nil,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes",
			ct.Direct("direct", ct.Prefix("/direct"), 201, "made here"),
			ct.To("none", ct.Prefix("/none"), "empty"),
			ct.To("routed", ct.Prefix("/r"), "backend"),
		),
		ct.Cluster("backend", be.Listener.Addr().String()),
		ct.Cluster("fallback", be.Listener.Addr().String()),
		ct.Cluster("empty"),
	)
	c, br := r.dial(t)
	tests := []struct {
		name, req string
		status    int
		body      string
	}{
		{"get", "GET /ra HTTP/1.1\r\nHost: x\r\n\r\n", 200, "GET /ra "},
		{"post", "POST /rb HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 200, "POST /rb hello"},
		{"head", "HEAD /rc HTTP/1.1\r\nHost: x\r\n\r\n", 200, ""},
		{"direct", "GET /direct HTTP/1.1\r\nHost: x\r\n\r\n", 201, "made here"},
		{"head of a direct answer", "HEAD /direct HTTP/1.1\r\nHost: x\r\n\r\n", 201, ""},
		{"no endpoints", "GET /none HTTP/1.1\r\nHost: x\r\n\r\n", 503, ""},
		{"no route, dialled", "GET /other1 HTTP/1.1\r\nHost: x\r\n\r\n", 200, "GET /other1 "},
		{"no route, kept alive", "GET /other2 HTTP/1.1\r\nHost: x\r\n\r\n", 200, "GET /other2 "},
	}
	for _, tt := range tests {
		resp, body := exchange(t, c, br, tt.req)
		if resp.StatusCode != tt.status || (tt.status != 503 && body != tt.body) {
			t.Fatalf("%s: %d %q, want %d %q", tt.name, resp.StatusCode, body, tt.status, tt.body)
		}
	}
	c.Close()
	r.waitServed(t, 5*time.Second)
	checks := []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"routed", "gefyra_carrier_requests_total", []string{"route", "routed", "code", "200"}, 3},
		{"direct", "gefyra_carrier_requests_total", []string{"route", "direct", "code", "201"}, 2},
		{"no endpoints", "gefyra_carrier_requests_total", []string{"route", "none", "code", "503"}, 1},
		{"200s", "gefyra_carrier_requests_total", []string{"code", "200"}, 5},
		{"all requests", "gefyra_carrier_requests_total", nil, 8},
		{"durations", "gefyra_carrier_request_duration_seconds", nil, 8},
		{"bytes up", "gefyra_carrier_bytes_total", []string{"direction", "upstream"}, 5},
		{"bytes down", "gefyra_carrier_bytes_total", []string{"direction", "downstream"}, float64(len("GET /ra POST /rb helloGET /other1 GET /other2 "))},
		{"no endpoints error", "gefyra_carrier_upstream_errors_total", []string{"cluster", "empty", "kind", upstream.KindNoEndpoints}, 1},
		{"all errors", "gefyra_carrier_upstream_errors_total", nil, 1},
		{"fallbacks", "gefyra_carrier_fallbacks_total", []string{"reason", metrics.ReasonNoRoute}, 2},
		{"all fallbacks", "gefyra_carrier_fallbacks_total", nil, 2},
	}
	for _, ck := range checks {
		if got := r.metric(t, ck.metric, ck.labels...); got != ck.want {
			t.Errorf("%s: %s%v = %v, want %v", ck.name, ck.metric, ck.labels, got, ck.want)
		}
	}
}

// TestLoopUpstreamClosesIdleConnection: a kept-alive upstream
// connection that its server closes while idle is not used again: the
// next request, with a body or not, goes on a new one without error.
func TestLoopUpstreamClosesIdleConnection(t *testing.T) {
	be := newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		line, _, body, err := readReq(br)
		if err != nil {
			return
		}
		io.WriteString(c, ok(line+" "+string(body)))
		time.Sleep(50 * time.Millisecond)
	})
	r := newRig(t, nil, nil, toBackend(be.addr)...)
	c, br := r.dial(t)
	reqs := []struct{ req, want string }{
		{"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n", "GET /1 "},
		{"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n", "GET /2 "},
		{"POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", "POST /3 hi"},
		{"GET /4 HTTP/1.1\r\nHost: x\r\n\r\n", "GET /4 "},
	}
	for _, rq := range reqs {
		if resp, body := exchange(t, c, br, rq.req); resp.StatusCode != 200 || body != rq.want {
			t.Fatalf("%d %q, want %q", resp.StatusCode, body, rq.want)
		}
		time.Sleep(150 * time.Millisecond) // the server closes meanwhile
	}
	if got := r.metric(t, "gefyra_carrier_upstream_errors_total"); got != 0 {
		t.Errorf("%v upstream errors, want 0", got)
	}
	if n := be.accepted.Load(); n != 4 {
		t.Errorf("%d upstream connections for 4 requests, want 4", n)
	}
}

// TestLoopBadUpstreamAnswers: an upstream that answers with
// something other than an HTTP/1.x response, or nothing, gets the client
// a 502 counted as the right kind of upstream error, and the client's
// connection goes on.
func TestLoopBadUpstreamAnswers(t *testing.T) {
	tests := []struct {
		name, answer string
		status       int
		kind         string
	}{
		{"malformed status line", "HTTP/1.1 2x0 OK\r\n\r\n", 502, metrics.ErrProtocol},
		{"HTTP/2 status line", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", 502, metrics.ErrProtocol},
		{"malformed Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", 502, metrics.ErrProtocol},
		{"switching protocols unasked", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n", 502, metrics.ErrProtocol},
		{"closes at once", "", 502, metrics.ErrIO},
		{"closes in the head", "HTTP/1.1 200 OK\r\nContent-Le", 502, metrics.ErrIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				line, _, _, err := readReq(br)
				if err != nil {
					return
				}
				if line == "GET /bad" {
					io.WriteString(c, tt.answer)
					return
				}
				io.WriteString(c, ok("fine"))
			})
			r := newRig(t, nil, nil, toBackend(be.addr)...)
			c, br := r.dial(t)
			resp, body := exchange(t, c, br, "GET /bad HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp.StatusCode != tt.status {
				t.Fatalf("%d %q, want %d", resp.StatusCode, body, tt.status)
			}
			if resp, body := exchange(t, c, br, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "fine" {
				t.Fatalf("next: %d %q", resp.StatusCode, body)
			}
			if got := r.metric(t, "gefyra_carrier_upstream_errors_total", "kind", tt.kind); got != 1 {
				t.Errorf("%v upstream errors of kind %s, want 1", got, tt.kind)
			}
			if got := r.metric(t, "gefyra_carrier_upstream_errors_total"); got != 1 {
				t.Errorf("%v upstream errors, want 1", got)
			}
		})
	}
}

// TestLoopNoBodyResponses: responses to HEAD and 204 and 304 have
// no body whatever their Content-Length says, and the upstream connection
// serves the next request, one at a time and pipelined.
func TestLoopNoBodyResponses(t *testing.T) {
	be := newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			line, _, _, err := readReq(br)
			if err != nil {
				return
			}
			resp := ok("ok")
			switch line {
			case "HEAD /head":
				resp = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-H: head\r\n\r\n"
			case "HEAD /chunked":
				resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-H: chunked\r\n\r\n"
			case "GET /204":
				resp = "HTTP/1.1 204 No Content\r\nX-H: 204\r\n\r\n"
			case "GET /304":
				resp = "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"e\"\r\nX-H: 304\r\n\r\n"
			}
			io.WriteString(c, resp)
		}
	})
	r := newRig(t, nil, nil, toBackend(be.addr)...)
	tests := []struct {
		name, req string
		status    int
		xh        string
	}{
		{"head", "HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n", 200, "head"},
		{"head, chunked", "HEAD /chunked HTTP/1.1\r\nHost: x\r\n\r\n", 200, "chunked"},
		{"204", "GET /204 HTTP/1.1\r\nHost: x\r\n\r\n", 204, "204"},
		{"304", "GET /304 HTTP/1.1\r\nHost: x\r\n\r\n", 304, "304"},
	}
	check := func(t *testing.T, br *bufio.Reader, req string, status int, xh string) {
		t.Helper()
		resp, body := readResponse(t, br, req)
		if resp.StatusCode != status || resp.Header.Get("X-H") != xh || body != "" {
			t.Fatalf("%d %q (X-H %q), want %d and no body", resp.StatusCode, body, resp.Header.Get("X-H"), status)
		}
		next := "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
		if resp, body := readResponse(t, br, next); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("next: %d %q", resp.StatusCode, body)
		}
	}
	// reused: the requests of f took one upstream connection at most (one
	// the previous client connection used may not be idle yet).
	reused := func(t *testing.T, f func()) {
		t.Helper()
		before := be.accepted.Load()
		f()
		if n := be.accepted.Load() - before; n > 1 {
			t.Fatalf("%d new upstream connections, want the one kept alive", n)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reused(t, func() {
				c, br := r.dial(t)
				io.WriteString(c, tt.req)
				io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
				check(t, br, tt.req, tt.status, tt.xh)
			})
		})
	}
	t.Run("pipelined", func(t *testing.T) {
		reused(t, func() {
			c, br := r.dial(t)
			var all strings.Builder
			for _, tt := range tests {
				all.WriteString(tt.req + "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			}
			io.WriteString(c, all.String())
			for _, tt := range tests {
				check(t, br, tt.req, tt.status, tt.xh)
			}
		})
	})
}

// TestLoopUpstreamEndsItsConnection: an upstream response that says
// Connection: close, or comes in HTTP/1.0, is the last on its connection,
// which carrier closes; the client's connection goes on.
func TestLoopUpstreamEndsItsConnection(t *testing.T) {
	tests := []struct {
		name, resp   string
		serverCloses bool
	}{
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gone := make(chan int, 3)
			be := newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				if _, _, _, err := readReq(br); err != nil {
					return
				}
				io.WriteString(c, tt.resp)
				if !tt.serverCloses {
					// Wait for carrier to close it.
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, err := br.ReadByte(); err != io.EOF {
						return
					}
				}
				gone <- i
			})
			r := newRig(t, nil, nil, toBackend(be.addr)...)
			c, br := r.dial(t)
			for i := range 3 {
				resp, body := exchange(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				if resp.StatusCode != 200 || body != "ok" || resp.Close {
					t.Fatalf("request %d: %d %q (close %v)", i, resp.StatusCode, body, resp.Close)
				}
			}
			if n := be.accepted.Load(); n != 3 {
				t.Fatalf("%d upstream connections for 3 requests, want 3", n)
			}
			for range 3 {
				select {
				case <-gone:
				case <-time.After(5 * time.Second):
					t.Fatal("carrier keeps an upstream connection open after its last response")
				}
			}
		})
	}
}

// TestLoopExtraBytesAfterResponse: an upstream that sends bytes
// after a response (a broken server, or one out of step) must not have
// its connection reused: the next request would get those bytes as its
// answer.
func TestLoopExtraBytesAfterResponse(t *testing.T) {
	const stray = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
	big := strings.Repeat("b", 40<<10)
	tests := []struct {
		name string
		// parts are written in turn, with a pause between them.
		parts []string
		body  string
	}{
		{"with the whole response", []string{ok("hello") + stray}, "hello"},
		{"with a body after the head", []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hello" + stray}, "hello"},
		{"with a body over the buffer", []string{ok(big) + stray}, big},
		{"with the end of a body after a pause", []string{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", "world" + stray}, "helloworld"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				for {
					line, _, _, err := readReq(br)
					if err != nil {
						return
					}
					if line != "GET /first" {
						io.WriteString(c, ok("good"))
						continue
					}
					for j, p := range tt.parts {
						if j > 0 {
							time.Sleep(50 * time.Millisecond)
						}
						io.WriteString(c, p)
					}
				}
			})
			r := newRig(t, nil, nil, toBackend(be.addr)...)
			c, br := r.dial(t)
			if resp, body := exchange(t, c, br, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != tt.body {
				t.Fatalf("first: %d %.40q", resp.StatusCode, body)
			}
			time.Sleep(50 * time.Millisecond)
			if resp, body := exchange(t, c, br, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "good" {
				t.Fatalf("second: %d %q, want the upstream's answer %q", resp.StatusCode, body, "good")
			}
		})
	}
}

// TestLoopKeptAliveUpstreamClosed: a request sent on a kept-alive
// upstream connection that the server closes instead of answering is
// sent again on a new one if it has no body; one with a body fails with
// 502 and the client's connection goes on.
func TestLoopKeptAliveUpstreamClosed(t *testing.T) {
	be := oneShotUpstream(t)
	r := newRig(t, nil, nil, toBackend(be.addr)...)
	c, br := r.dial(t)
	steps := []struct {
		req    string
		status int
		body   string
	}{
		{"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n", 200, "GET /1"},
		{"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n", 200, "GET /2"},
		{"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n", 200, "GET /3"},
		{"POST /4 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 502, ""},
		{"GET /5 HTTP/1.1\r\nHost: x\r\n\r\n", 200, "GET /5"},
	}
	for _, s := range steps {
		resp, body := exchange(t, c, br, s.req)
		if resp.StatusCode != s.status || (s.body != "" && body != s.body) {
			t.Fatalf("%.8q: %d %q, want %d %q", s.req, resp.StatusCode, body, s.status, s.body)
		}
	}
	c.Close()
	r.waitServed(t, 5*time.Second)
	if got := r.metric(t, "gefyra_carrier_upstream_errors_total"); got != 1 {
		t.Errorf("%v upstream errors, want 1 (the POST)", got)
	}
	if got := r.metric(t, "gefyra_carrier_upstream_errors_total", "kind", metrics.ErrIO); got != 1 {
		t.Errorf("%v upstream io errors, want 1", got)
	}
	if got := r.metric(t, "gefyra_carrier_requests_total", "code", "502"); got != 1 {
		t.Errorf("%v requests answered 502, want 1", got)
	}
}

// TestLoopRetryFindsTheServerGone: the request sent again after a
// kept-alive connection closed cannot be, as the server is gone: the
// answer and the metrics are those of the goroutine path.
func TestLoopRetryFindsTheServerGone(t *testing.T) {
	var be *rawUpstream
	be = newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		if _, _, _, err := readReq(br); err != nil {
			return
		}
		io.WriteString(c, ok("first"))
		readReq(br)
		be.ln.Close() // refuse the retry's connection
	})
	r := newRig(t, nil, nil, toBackend(be.addr)...)
	c, br := r.dial(t)
	if resp, body := exchange(t, c, br, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "first" {
		t.Fatalf("first: %d %q", resp.StatusCode, body)
	}
	resp, body := exchange(t, c, br, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	c.Close()
	r.waitServed(t, 5*time.Second)
	errs := map[string]float64{}
	for _, k := range []string{metrics.ErrIO, metrics.ErrConnect} {
		errs[k] = r.metric(t, "gefyra_carrier_upstream_errors_total", "kind", k)
	}
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "upstream failed before responding") || errs[metrics.ErrIO] != 1 || errs[metrics.ErrConnect] != 0 {
		t.Fatalf("second: %d %q, upstream errors %v; want 502 and one io error", resp.StatusCode, body, errs)
	}
}

// TestLoopPipelinedAcrossHandoffs: pipelined requests keep their
// order and bytes when the connection leaves the loop before or during
// one of them, and nothing after a request that closes is answered.
func TestLoopPipelinedAcrossHandoffs(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/chunked" {
			for i := range 3 {
				fmt.Fprintf(w, "part %d;", i)
				w.(http.Flusher).Flush()
			}
			return
		}
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	}))
	defer be.Close()
	r := newRig(t, nil, nil, toBackend(be.Listener.Addr().String())...)
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }
	tests := []struct {
		name   string
		reqs   []string
		want   []string
		closes bool
	}{
		{
			"chunked response in the middle",
			[]string{get("/a"), get("/chunked"), get("/b"), get("/chunked"), get("/c")},
			[]string{"GET /a ", "part 0;part 1;part 2;", "GET /b ", "part 0;part 1;part 2;", "GET /c "},
			false,
		},
		{
			"chunked request in the middle",
			[]string{get("/a"), "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", get("/b")},
			[]string{"GET /a ", "POST /p hello", "GET /b "},
			false,
		},
		{
			"bodies around a handoff",
			[]string{"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none", get("/chunked"), "POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo"},
			[]string{"POST /1 one", "part 0;part 1;part 2;", "POST /2 two"},
			false,
		},
		{
			"request that closes",
			[]string{get("/a"), "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", get("/never")},
			[]string{"GET /a ", "GET /last "},
			true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := r.dial(t)
			io.WriteString(c, strings.Join(tt.reqs, ""))
			for i, want := range tt.want {
				resp, body := readResponse(t, br, tt.reqs[i])
				if resp.StatusCode != 200 || body != want {
					t.Fatalf("response %d: %d %q, want %q", i, resp.StatusCode, body, want)
				}
			}
			if tt.closes {
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("after the request that closes: %v, want EOF", err)
				}
				return
			}
			if resp, body := exchange(t, c, br, get("/after")); resp.StatusCode != 200 || body != "GET /after " {
				t.Fatalf("after: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestLoopClientHalfCloses: a client that sends its requests and
// shuts down its side gets every answer, then the connection closes.
func TestLoopClientHalfCloses(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond) // the FIN comes first
		echo(w, r)
	}))
	defer be.Close()
	r := newRig(t, nil, nil, toBackend(be.Listener.Addr().String())...)
	tests := []struct {
		name string
		reqs []string
		want []string
	}{
		{"one", []string{"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"}, []string{"GET /1 "}},
		{"pipelined", []string{"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n", "POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"}, []string{"GET /1 ", "POST /2 hi", "GET /3 "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := r.dial(t)
			io.WriteString(c, strings.Join(tt.reqs, ""))
			c.(*net.TCPConn).CloseWrite()
			for i, want := range tt.want {
				resp, body := readResponse(t, br, tt.reqs[i])
				if resp.StatusCode != 200 || body != want {
					t.Fatalf("response %d: %d %q, want %q", i, resp.StatusCode, body, want)
				}
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the answers: %v, want EOF", err)
			}
		})
	}
}

// TestLoopClientResetsMidResponse: a client that resets its
// connection while a large body comes ends the request: counted once with
// its status, no upstream error, every descriptor closed.
func TestLoopClientResetsMidResponse(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 16<<20)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		w.Write(payload)
	}))
	defer be.Close()
	r := newRig(t, nil, nil, toBackend(be.Listener.Addr().String())...)
	// Warm up: the loop's own descriptors, the backend's goroutines.
	c0, br0 := r.dial(t)
	exchange(t, c0, br0, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
	c0.Close()
	r.waitServed(t, 5*time.Second)
	base := fdCount(t)

	c, br := r.dial(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	r.waitServed(t, 5*time.Second)
	// The upstream connection, cut mid-body, closes too.
	waitFds(t, base, 5*time.Second)
	if got := r.metric(t, "gefyra_carrier_requests_total", "code", "200"); got != 2 {
		t.Errorf("%v requests counted 200, want 2", got)
	}
	if got := r.metric(t, "gefyra_carrier_upstream_errors_total"); got != 0 {
		t.Errorf("%v upstream errors for a client that went away, want 0", got)
	}
}

// backlogFull is a listening socket whose accept queue is full: a
// connection to it hangs in its handshake.
func backlogFull(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("the listening socket's queue does not fill up")
	return ""
}

// TestLoopContextEnds: ServeConn ends with its context whatever the
// connection waits for, and leaves no descriptor open.
func TestLoopContextEnds(t *testing.T) {
	tests := []struct {
		name    string
		backend func(t *testing.T) string
		req     string
	}{
		{"while dialling", backlogFull, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"while the client does not read", func(t *testing.T) string {
			be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(32<<20))
				w.Write(make([]byte, 32<<20))
			}))
			t.Cleanup(be.Close)
			return be.Listener.Addr().String()
		}, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"while the body comes", func(t *testing.T) string {
			return newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				readReq(br)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				br.ReadByte()
			}).addr
		}, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"while a request head comes", func(t *testing.T) string { return "127.0.0.1:1" }, "GET / HTTP/1.1\r\nHo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.backend(t)
			netio.Shared() // its descriptors, if any, are there before the count
			r := newRig(t, nil, nil, toBackend(addr)...)
			withRig := fdCount(t)
			goroutines := runtime.NumGoroutine()
			c, br := r.dial(t)
			io.WriteString(c, tt.req)
			time.Sleep(200 * time.Millisecond)
			r.cancel()
			start := time.Now()
			r.waitServed(t, 5*time.Second)
			if took := time.Since(start); took > time.Second {
				t.Errorf("ServeConn returned %v after its context ended", took)
			}
			waitClosed(t, c, br, 5*time.Second)
			c.Close()
			waitFds(t, withRig, 5*time.Second)
			deadline := time.Now().Add(5 * time.Second)
			for runtime.NumGoroutine() > goroutines {
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines, %d before the connection", runtime.NumGoroutine(), goroutines)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestLoopHeadTimeouts: the request headers timeout runs from a
// request's first byte, the idle timeout bounds a head when there is
// none, and neither cuts off a body that follows its head after a pause
// (the route's idle timeout does, as for any body).
func TestLoopHeadTimeouts(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(echo))
	defer be.Close()
	tests := []struct {
		name          string
		idle, headers time.Duration
	}{
		{"request headers timeout", 0, 300 * time.Millisecond},
		{"idle timeout", 300 * time.Millisecond, 0},
		{"both", 300 * time.Millisecond, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, nil, func(l *config.Listener) {
				l.HTTP.IdleTimeout = tt.idle
				l.HTTP.RequestHeadersTimeout = tt.headers
			}, toBackend(be.Listener.Addr().String())...)

			t.Run("slow head", func(t *testing.T) {
				c, br := r.dial(t)
				// A request answered first: the timeouts run from its end.
				exchange(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				io.WriteString(c, "GET /slow HTTP/1.1\r\n")
				start := time.Now()
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					for {
						select {
						case <-stop:
							return
						case <-time.After(50 * time.Millisecond):
							if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
								return
							}
						}
					}
				}()
				waitClosed(t, c, br, 5*time.Second)
				if took := time.Since(start); took < 200*time.Millisecond || took > 3*time.Second {
					t.Fatalf("a head that never ends was cut off after %v; the timeout is 300ms", took)
				}
			})

			t.Run("body after a pause", func(t *testing.T) {
				c, br := r.dial(t)
				io.WriteString(c, "POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
				time.Sleep(700 * time.Millisecond)
				io.WriteString(c, "hello")
				c.SetDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("the request whose body came 700ms after its head got no answer: %v", err)
				}
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(b) != "POST /late hello" {
					t.Fatalf("%d %q", resp.StatusCode, b)
				}
			})
		})
	}
}

// routeTimesBackend answers /slow after 400ms, sends half of /pause's
// body and the rest after a second, and echoes what else comes.
func routeTimesBackend(t *testing.T) string {
	return newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			line, _, body, err := readReq(br)
			if err != nil {
				return
			}
			switch line {
			case "GET /slow":
				time.Sleep(400 * time.Millisecond)
				io.WriteString(c, ok("slow"))
			case "GET /pause":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
				time.Sleep(time.Second)
				io.WriteString(c, "world")
			default:
				io.WriteString(c, ok(line+" "+string(body)))
			}
		}
	}).addr
}

// TestLoopRouteTimeoutZero: a route timeout of 0 means none.
func TestLoopRouteTimeoutZero(t *testing.T) {
	r := newRig(t, nil, func(l *config.Listener) { route(l).Timeout = 0 }, toBackend(routeTimesBackend(t))...)
	c, br := r.dial(t)
	for range 2 {
		if resp, body := exchange(t, c, br, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "slow" {
			t.Fatalf("slow, with no route timeout: %d %q", resp.StatusCode, body)
		}
	}
}

// TestLoopRouteIdleTimeout: the route's idle timeout bounds a pause
// in a body, not the whole exchange: a response head slower than it
// arrives (the route timeout is what bounds that wait), and so does a
// request body sent in pieces over longer than it; a response body that
// pauses longer is cut off, counted as an upstream io error.
func TestLoopRouteIdleTimeout(t *testing.T) {
	r := newRig(t, nil, func(l *config.Listener) {
		route(l).Timeout = 5 * time.Second
		route(l).IdleTimeout = 200 * time.Millisecond
	}, toBackend(routeTimesBackend(t))...)

	t.Run("response head after 400ms", func(t *testing.T) {
		c, br := r.dial(t)
		if resp, body := exchange(t, c, br, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "slow" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})

	t.Run("request body in pieces", func(t *testing.T) {
		c, br := r.dial(t)
		io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n")
		for _, piece := range []string{"aaaaa", "bbbbb", "ccccc"} {
			time.Sleep(120 * time.Millisecond)
			io.WriteString(c, piece)
		}
		resp, body := readResponse(t, br, "POST")
		if resp.StatusCode != 200 || body != "POST /up aaaaabbbbbccccc" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})

	t.Run("response body pauses", func(t *testing.T) {
		before := r.metric(t, "gefyra_carrier_upstream_errors_total", "kind", metrics.ErrIO)
		c, br := r.dial(t)
		io.WriteString(c, "GET /pause HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		b, err := io.ReadAll(resp.Body)
		if err == nil || string(b) != "hello" {
			t.Fatalf("a body that pauses 1s, over the route's idle timeout: %q %v", b, err)
		}
		if took := time.Since(start); took > 900*time.Millisecond {
			t.Fatalf("cut off after %v; the idle timeout is 200ms", took)
		}
		c.Close()
		r.waitServed(t, 5*time.Second)
		if got := r.metric(t, "gefyra_carrier_upstream_errors_total", "kind", metrics.ErrIO); got != before+1 {
			t.Errorf("%v upstream io errors, want %v", got, before+1)
		}
	})
}

// TestLoopPruneInFlight: an upstream connection to an endpoint the
// config dropped while it served a request is closed once the request is
// done, not kept idle.
func TestLoopPruneInFlight(t *testing.T) {
	release := make(chan struct{})
	got := make(chan struct{}, 1)
	gone := make(chan struct{}, 1)
	be := newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		if _, _, _, err := readReq(br); err != nil {
			return
		}
		got <- struct{}{}
		<-release
		io.WriteString(c, ok("done"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := br.ReadByte(); err == io.EOF {
			gone <- struct{}{}
		}
	})
	pools := &upstream.Pools{}
	r := newRig(t, func(p *httpproxy.Proxy) { p.Pools = pools }, nil, toBackend(be.addr)...)
	c, br := r.dial(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-got
	other, err := config.Compile(ct.Resources(toBackend("127.0.0.1:1")...), metrics.New(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	pools.Prune(other)
	r.p.Prune(other)
	httpproxy.LoopIdle(r.p) // the loop's prune has run
	close(release)
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "done" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	select {
	case <-gone:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream connection to a pruned endpoint stays open after its request")
	}
}

// TestLoopIdleUpstreamsWithoutClients: idle upstream connections
// close after the pools' idle timeout (whether or not their server closed
// its end meanwhile), also once no client connection is left.
func TestLoopIdleUpstreamsWithoutClients(t *testing.T) {
	tests := []struct {
		name         string
		serverCloses bool
	}{
		{"idle timeout", false},
		{"server closes", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gone := make(chan struct{}, 1)
			be := newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				if _, _, _, err := readReq(br); err != nil {
					return
				}
				io.WriteString(c, ok("ok"))
				if tt.serverCloses {
					time.Sleep(100 * time.Millisecond)
					return
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := br.ReadByte(); err == io.EOF {
					gone <- struct{}{}
				}
			})
			idle := 200 * time.Millisecond
			pools := &upstream.Pools{IdleTimeout: idle}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go pools.Run(ctx)
			r := newRig(t, func(p *httpproxy.Proxy) { p.Pools = pools }, nil, toBackend(be.addr)...)
			netio.Shared() // its descriptors, if any, are there before the count
			base := fdCount(t)
			c, br := r.dial(t)
			if resp, body := exchange(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			c.Close()
			r.waitServed(t, 5*time.Second)
			if tt.serverCloses {
				// carrier's end of the connection the server closed.
				waitFds(t, base, 3*time.Second)
				return
			}
			select {
			case <-gone:
			case <-time.After(3 * time.Second):
				t.Fatalf("an upstream connection idle for 3s stays open; the idle timeout is %v", idle)
			}
		})
	}
}

// TestLoopLocalAnswerToConnectionClose: carrier's own answer to a
// request that says Connection: close says so too, and the connection
// closes after it.
func TestLoopLocalAnswerToConnectionClose(t *testing.T) {
	r := newRig(t, nil, nil,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes", ct.Direct("direct", ct.Prefix("/"), 200, "made here")),
		ct.Cluster("fallback", "127.0.0.1:1"),
	)
	c, br := r.dial(t)
	resp, body := exchange(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || body != "made here" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Error("the answer to a request with Connection: close does not say Connection: close")
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the answer to a request with Connection: close: %v, want EOF", err)
	}
}

// TestLoopLocalAnswerToAClientThatDoesNotRead: a large direct
// response to a client that reads nothing ends after the stream idle
// timeout, as a proxied one does.
func TestLoopLocalAnswerToAClientThatDoesNotRead(t *testing.T) {
	r := newRig(t, func(p *httpproxy.Proxy) { p.StreamIdleTimeout = 300 * time.Millisecond }, func(l *config.Listener) {
		route(l).Direct.Body = bytes.Repeat([]byte("d"), 32<<20)
	},
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes", ct.Direct("direct", ct.Prefix("/"), 200, "replaced")),
		ct.Cluster("fallback", "127.0.0.1:1"),
	)
	c, _ := r.dial(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	r.waitActive(t)
	r.waitServed(t, 5*time.Second)
}

// TestLoopBodySizes: request bodies at and around what the loop
// takes whole, and heads that leave the body no room in its buffer, arrive
// whole upstream, in one write or byte by byte.
func TestLoopBodySizes(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d %d %x", r.URL.Path, len(b), len(r.Header.Get("X-Pad")), sha256.Sum256(b))
	}))
	defer be.Close()
	r := newRig(t, nil, nil, toBackend(be.Listener.Addr().String())...)
	tests := []struct {
		name       string
		body, pad  int
		byteByByte bool
		afterwards bool // another request follows in the same write
	}{
		{"empty", 0, 0, false, true},
		{"small", 100, 0, false, true},
		{"half the buffer", 8 << 10, 0, false, true},
		{"over half the buffer", 8<<10 + 1, 0, false, true},
		{"large head and body", 8 << 10, 10 << 10, false, true},
		{"large head", 1, 15 << 10, false, true},
		{"byte by byte", 300, 200, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := bytes.Repeat([]byte("0123456789abcdef"), tt.body/16+1)[:tt.body]
			req := fmt.Sprintf("POST /p HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\nContent-Length: %d\r\n\r\n%s", strings.Repeat("p", tt.pad), tt.body, body)
			want := fmt.Sprintf("/p %d %d %x", tt.body, tt.pad, sha256.Sum256(body))
			next := "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
			c, br := r.dial(t)
			switch {
			case tt.byteByByte:
				for i := range len(req) {
					if _, err := c.Write([]byte{req[i]}); err != nil {
						t.Fatal(err)
					}
					if i%16 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			case tt.afterwards:
				io.WriteString(c, req+next)
			default:
				io.WriteString(c, req)
			}
			if resp, got := readResponse(t, br, req); resp.StatusCode != 200 || got != want {
				t.Fatalf("%d %q, want %q", resp.StatusCode, got, want)
			}
			if !tt.afterwards {
				io.WriteString(c, next)
			}
			wantNext := fmt.Sprintf("/next 0 0 %x", sha256.Sum256(nil))
			if resp, got := readResponse(t, br, next); resp.StatusCode != 200 || got != wantNext {
				t.Fatalf("next: %d %q", resp.StatusCode, got)
			}
		})
	}
}

// TestLoopManyPipelined: more pipelined requests than the loop's
// buffer holds are answered in order.
func TestLoopManyPipelined(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(echo))
	defer be.Close()
	r := newRig(t, nil, nil, toBackend(be.Listener.Addr().String())...)
	c, br := r.dial(t)
	const n = 600
	var all strings.Builder
	for i := range n {
		if i%7 == 3 {
			fmt.Fprintf(&all, "POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nb%02d", i, i%100)
			continue
		}
		fmt.Fprintf(&all, "GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	go io.WriteString(c, all.String())
	for i := range n {
		want := fmt.Sprintf("GET /%d ", i)
		if i%7 == 3 {
			want = fmt.Sprintf("POST /%d b%02d", i, i%100)
		}
		if resp, got := readResponse(t, br, want); resp.StatusCode != 200 || got != want {
			t.Fatalf("response %d: %d %q, want %q", i, resp.StatusCode, got, want)
		}
	}
}

// TestLoopConcurrentClients: many clients at once, their upstream
// connections reused, dropped and dialled anew, each get their own
// answers whole.
func TestLoopConcurrentClients(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case strings.HasSuffix(r.URL.Path, "/close"):
			w.Header().Set("Connection", "close")
		case strings.HasSuffix(r.URL.Path, "/chunked"):
			fmt.Fprintf(w, "%s ", r.URL.Path)
			w.(http.Flusher).Flush()
			fmt.Fprintf(w, "%s", b)
			return
		case strings.HasSuffix(r.URL.Path, "/big"):
			w.Write(bytes.Repeat([]byte(r.URL.Path), 3000))
			return
		}
		fmt.Fprintf(w, "%s %s", r.URL.Path, b)
	}))
	defer be.Close()
	r := newRig(t, func(p *httpproxy.Proxy) { p.Pools = &upstream.Pools{MaxIdle: 2} }, func(l *config.Listener) {
		l.HTTP.IdleTimeout = 5 * time.Second
		l.HTTP.RequestHeadersTimeout = 5 * time.Second
	}, toBackend(be.Listener.Addr().String())...)
	const clients, requests = 24, 30
	errs := make(chan error, clients)
	for ci := range clients {
		go func() {
			errs <- func() error {
				c, err := net.Dial("tcp", r.addr)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				br := bufio.NewReader(c)
				for j := range requests {
					kind := []string{"plain", "close", "big", "plain", "post"}[(ci+j)%5]
					if j == requests-1 {
						kind = "chunked" // the connection leaves the loop
					}
					path := fmt.Sprintf("/%d/%d/%s", ci, j, kind)
					body := ""
					req := "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"
					if kind == "post" || kind == "chunked" {
						body = fmt.Sprintf("body-%d-%d", ci, j)
						req = fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
					}
					want := path + " " + body
					if kind == "big" {
						want = strings.Repeat(path, 3000)
					}
					if _, err := io.WriteString(c, req); err != nil {
						return err
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						return fmt.Errorf("%s: %v", path, err)
					}
					got, err := io.ReadAll(resp.Body)
					if err != nil || resp.StatusCode != 200 || string(got) != want {
						return fmt.Errorf("%s: %d %.60q %v, want %.60q", path, resp.StatusCode, got, err, want)
					}
				}
				return nil
			}()
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestLoopRetryCountsOnce: a request to the fallback sent again on
// a new connection, after its kept-alive one turned out closed, counts as
// one request and one fallback.
func TestLoopRetryCountsOnce(t *testing.T) {
	be := oneShotUpstream(t)
	r := newRig(t, nil, nil,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes", ct.To("other", ct.Prefix("/other"), "fallback")),
		ct.Cluster("fallback", be.addr),
	)
	r.getInTurn(t, 3)
	if n := be.accepted.Load(); n != 3 {
		t.Fatalf("%d upstream connections, want 3 (two requests sent again)", n)
	}
	if got := r.metric(t, "gefyra_carrier_requests_total"); got != 3 {
		t.Errorf("%v requests counted, want 3", got)
	}
	if got := r.metric(t, "gefyra_carrier_fallbacks_total", "reason", metrics.ReasonNoRoute); got != 3 {
		t.Errorf("%v fallbacks counted for 3 requests, want 3", got)
	}
}

// TestLoopUnreachableBridge: requests for a bridge that cannot be
// reached go to the fallback, each counted once as a fallback and as an
// upstream error of the bridge's cluster, on the fallback's kept-alive
// connection.
func TestLoopUnreachableBridge(t *testing.T) {
	be := lineUpstream(t)
	r := newRig(t, nil, nil,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes", ct.To("dev", ct.Prefix("/"), "dev")),
		ct.BridgeCluster("dev", "127.0.0.1:1", "ns/dev", 8080, "secret"),
		ct.Cluster("fallback", be.addr),
	)
	r.getInTurn(t, 3)
	checks := []struct {
		name   string
		metric string
		labels []string
		want   float64
	}{
		{"requests", "gefyra_carrier_requests_total", []string{"code", "200"}, 3},
		{"fallbacks", "gefyra_carrier_fallbacks_total", []string{"bridge", "ns/dev", "reason", metrics.ReasonConnectFailed}, 3},
		{"all fallbacks", "gefyra_carrier_fallbacks_total", nil, 3},
		{"errors", "gefyra_carrier_upstream_errors_total", []string{"cluster", "dev", "kind", upstream.KindConnect}, 3},
		{"all errors", "gefyra_carrier_upstream_errors_total", nil, 3},
	}
	for _, ck := range checks {
		if got := r.metric(t, ck.metric, ck.labels...); got != ck.want {
			t.Errorf("%s: %s%v = %v, want %v", ck.name, ck.metric, ck.labels, got, ck.want)
		}
	}
	if n := be.accepted.Load(); n != 1 {
		t.Errorf("%d connections to the fallback for 3 requests one after the other, want 1 kept alive", n)
	}
}

// TestLoopClientAbandonsBody: a client that goes away in the middle
// of a request body leaves a request counted as 499, as an HTTP proxy
// counts one its client gave up on.
func TestLoopClientAbandonsBody(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(echo))
	defer be.Close()
	r := newRig(t, nil, nil, toBackend(be.Listener.Addr().String())...)
	c, br := r.dial(t)
	exchange(t, c, br, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // a connection kept alive
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("a", 50))
	time.Sleep(100 * time.Millisecond)
	c.Close()
	r.waitServed(t, 5*time.Second)
	if got := r.metric(t, "gefyra_carrier_requests_total", "code", "499"); got != 1 {
		t.Errorf("%v requests counted 499, want 1", got)
	}
	if got := r.metric(t, "gefyra_carrier_requests_total"); got != 2 {
		t.Errorf("%v requests counted, want 2", got)
	}
}

// TestLoopPruneIdle: idle upstream connections to an endpoint the
// config dropped close; those to endpoints it kept stay.
func TestLoopPruneIdle(t *testing.T) {
	gone := make(chan string, 2)
	backend := func(name string) *rawUpstream {
		return newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
			for {
				line, _, _, err := readReq(br)
				if err != nil {
					if err == io.EOF {
						gone <- name
					}
					return
				}
				io.WriteString(c, ok(name+" "+line))
			}
		})
	}
	a, b := backend("a"), backend("b")
	res := func(aAddr string) []proto.Message {
		return []proto.Message{
			ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
			ct.Routes("routes", ct.To("a", ct.Prefix("/a"), "a")),
			ct.Cluster("a", aAddr),
			ct.Cluster("fallback", b.addr),
		}
	}
	pools := &upstream.Pools{}
	r := newRig(t, func(p *httpproxy.Proxy) { p.Pools = pools }, nil, res(a.addr)...)
	c, br := r.dial(t)
	for _, path := range []string{"/a", "/b"} {
		if resp, body := exchange(t, c, br, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || !strings.HasSuffix(body, "GET "+path) {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	cfg, err := config.Compile(ct.Resources(res("127.0.0.1:1")...), metrics.New(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	pools.Prune(cfg)
	r.p.Prune(cfg)
	select {
	case name := <-gone:
		if name != "a" {
			t.Fatalf("the connection to %s closed, want a's", name)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the idle connection to the dropped endpoint stays open")
	}
	if resp, body := exchange(t, c, br, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "b GET /b" {
		t.Fatalf("/b after the prune: %d %q", resp.StatusCode, body)
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("%d connections to b, want its one kept alive through the prune", n)
	}
}

// TestLoopNotHTTPGoesToTheFallback: a connection to an HTTP port that
// does not start as HTTP (another protocol on a port no bridge carries as
// raw TCP) is relayed whole to the fallback, and counted; HTTP on the same
// port is served as before, and without a fallback such bytes get a 400.
func TestLoopNotHTTPGoesToTheFallback(t *testing.T) {
	// The backend answers HTTP to a GET and echoes anything else.
	be := newRawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		first, err := br.Peek(4)
		if err != nil {
			return
		}
		if string(first) == "GET " {
			line, _, _, err := readReq(br)
			if err == nil {
				io.WriteString(c, ok(line))
			}
			return
		}
		io.Copy(c, br)
	})
	r := newRig(t, nil, nil, toBackend(be.addr)...)
	tests := []struct{ name, in string }{
		{"redis command", "*1\r\n$4\r\nPING\r\n"},
		{"inline command", "PING\r\n"},
		{"binary", "\x00\x00\x00\x08\x04\xd2\x16\x2f"},
		{"one byte at a time", "\x16\x03\x01\x02\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := r.dial(t)
			if tt.name == "one byte at a time" {
				for i := range len(tt.in) {
					io.WriteString(c, tt.in[i:i+1])
					time.Sleep(20 * time.Millisecond)
				}
			} else {
				io.WriteString(c, tt.in)
			}
			got := make([]byte, len(tt.in))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != tt.in {
				t.Fatalf("echo %q, %v; want %q", got, err, tt.in)
			}
			// The relay goes on both ways, as TCP.
			io.WriteString(c, "more")
			if _, err := io.ReadFull(br, got[:4]); err != nil || string(got[:4]) != "more" {
				t.Fatalf("second echo %q, %v", got[:4], err)
			}
		})
	}
	c, br := r.dial(t)
	if resp, body := exchange(t, c, br, "GET /h HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || body != "GET /h" {
		t.Fatalf("HTTP: %d %q", resp.StatusCode, body)
	}
	if got := r.metric(t, "gefyra_carrier_fallbacks_total", "reason", metrics.ReasonNotHTTP); got != float64(len(tests)) {
		t.Errorf("%v fallbacks of reason %s, want %d", got, metrics.ReasonNotHTTP, len(tests))
	}

	noFallback := newRig(t, nil, nil,
		ct.HTTPListener("http", "127.0.0.1:0", "routes", ""),
		ct.Routes("routes", ct.To("all", ct.Prefix("/"), "backend")),
		ct.Cluster("backend", be.addr),
	)
	c, br = noFallback.dial(t)
	if resp, body := exchange(t, c, br, "PING\r\n"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("without a fallback: %d %q, want 400", resp.StatusCode, body)
	}
}

package httpproxy_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gefyra.dev/gefyra/carrier/internal/config"
	ct "gefyra.dev/gefyra/carrier/internal/config/configtest"
	"gefyra.dev/gefyra/carrier/internal/httpproxy"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/upstream"
)

const response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

// rawBackend answers every request with response, as cheaply as it can, so
// a benchmark measures the proxy.
func rawBackend(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				resp := []byte(response)
				for {
					// Read to the empty line, then the body if the
					// request has one of a Content-Length.
					body := 0
					for {
						l, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(l) <= 2 {
							break
						}
						if len(l) > 16 && bytes.EqualFold(l[:15], []byte("content-length:")) {
							for _, d := range bytes.TrimSpace(l[15:]) {
								body = body*10 + int(d-'0')
							}
						}
					}
					if _, err := br.Discard(body); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func serve(tb testing.TB, h func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go h(c)
		}
	}()
	return ln.Addr().String()
}

// cpuTime is the CPU time (user and system) the process has used: the
// benchmark's client and backend as well as the proxy.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// load sends b.N keep-alive requests over one connection and checks every
// response.
func load(b *testing.B, addr string, want string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /items/123 HTTP/1.1\r\nHost: demo\r\nUser-Agent: bench\r\nX-Forwarded-Access-Token: eyJhbGciOiJSUzI1NiJ9.e30.sig\r\nAccept: */*\r\n\r\n")
	buf := make([]byte, len(want))
	br := bufio.NewReader(c)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	if !bytes.HasSuffix(buf, []byte("\r\n\r\nok")) {
		b.Fatalf("response %q", buf)
	}
}

// proxyAddr starts carrier's HTTP data path in front of a raw backend.
func proxyAddr(tb testing.TB) string {
	be := rawBackend(tb)
	cfg, err := config.Compile(ct.Resources(
		ct.HTTPListener("http", "127.0.0.1:0", "routes", "fallback"),
		ct.Routes("routes", ct.To("a", ct.Prefix("/", ct.Header("x-gefyra-bridge", "a")), "fallback")),
		ct.Cluster("fallback", be),
	), metrics.New(prometheus.NewRegistry()))
	if err != nil {
		tb.Fatal(err)
	}
	l := cfg.Listener("http")
	p := &httpproxy.Proxy{Pools: &upstream.Pools{}, Metrics: metrics.New(prometheus.NewRegistry())}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	return serve(tb, func(c net.Conn) { p.ServeConn(ctx, c, func() *config.Listener { return l }) })
}

// BenchmarkHTTPProxy is one keep-alive client through carrier to a
// backend; compare with BenchmarkReverseProxy (net/http/httputil).
// cpu-ns/op is the whole process's CPU time per request (client and
// backend included). Where carrier serves HTTP/1.1 on its event loop,
// this shows the loop slower than the goroutine path
// (GEFYRA_EVENT_LOOP=off): client and backend are goroutines of this
// process, so a round trip can pass between goroutines without a thread
// sleeping, except through the loop. Between processes, as carrier runs,
// every hop wakes a thread either way; make bench measures that.
func BenchmarkHTTPProxy(b *testing.B) {
	load(b, proxyAddr(b), response)
}

// TestHTTPProxyDoesNotAllocate counts every allocation of the process
// (client and backend included, which allocate nothing per request here)
// over many proxied requests on a kept-alive connection.
func TestHTTPProxyDoesNotAllocate(t *testing.T) {
	c, err := net.Dial("tcp", proxyAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /items/123 HTTP/1.1\r\nHost: demo\r\nX-Gefyra-Bridge: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
	buf := make([]byte, len(response))
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip() // warm the pools
	if n := testing.AllocsPerRun(500, roundTrip); n >= 0.5 {
		t.Fatalf("%v allocations per proxied request", n)
	}
	if string(buf) != response {
		t.Fatalf("response %q", buf)
	}
}

// TestHTTPProxyPostDoesNotAllocate is the same for requests with a body,
// for which a kept-alive upstream connection is looked at before each
// one is sent on it.
func TestHTTPProxyPostDoesNotAllocate(t *testing.T) {
	c, err := net.Dial("tcp", proxyAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("POST /items HTTP/1.1\r\nHost: demo\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world")
	buf := make([]byte, len(response))
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip() // warm the pools
	if n := testing.AllocsPerRun(500, roundTrip); n >= 0.5 {
		t.Fatalf("%v allocations per proxied request", n)
	}
	if string(buf) != response {
		t.Fatalf("response %q", buf)
	}
}

func BenchmarkReverseProxy(b *testing.B) {
	be := rawBackend(b)
	u, _ := url.Parse("http://" + be)
	rp := httputil.NewSingleHostReverseProxy(u)
	// No Date header, so every response has the same length.
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Date"] = nil
		rp.ServeHTTP(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	c, _ := net.Dial("tcp", ln.Addr().String())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
	var probe []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(probe, []byte("\r\n\r\nok")) {
		if _, err := c.Read(one); err != nil {
			b.Fatal(err)
		}
		probe = append(probe, one[0])
	}
	c.Close()
	load(b, ln.Addr().String(), string(probe))
}

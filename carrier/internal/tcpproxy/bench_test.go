package tcpproxy_test

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gefyra.dev/gefyra/carrier/internal/config"
	ct "gefyra.dev/gefyra/carrier/internal/config/configtest"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/tcpproxy"
)

const (
	request  = "GET /items/123 HTTP/1.1\r\nHost: demo\r\nX-Forwarded-Access-Token: eyJhbGciOiJSUzI1NiJ9.e30.sig\r\n\r\n"
	response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
)

func listen(tb testing.TB, serve func(net.Conn)) string {
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
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// backend answers every request-sized read with response.
func backend(c net.Conn) {
	defer c.Close()
	buf := make([]byte, len(request))
	resp := []byte(response)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// proxy starts carrier's TCP data path in front of backend.
func proxy(tb testing.TB) string {
	cfg, err := config.Compile(ct.Resources(
		ct.TCPListener("tcp", "127.0.0.1:0", "fallback", "fallback"),
		ct.Cluster("fallback", listen(tb, backend)),
	), metrics.New(prometheus.NewRegistry()))
	if err != nil {
		tb.Fatal(err)
	}
	l := cfg.Listener("tcp")
	p := &tcpproxy.Proxy{Metrics: metrics.New(prometheus.NewRegistry())}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	return listen(tb, func(c net.Conn) { p.ServeConn(ctx, c, l) })
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTCPProxy is one keep-alive client's request and response
// through a TCP listener. cpu-ns/op is the whole process's CPU time per
// round trip (client and backend included).
func BenchmarkTCPProxy(b *testing.B) {
	c, err := net.Dial("tcp", proxy(b))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte(request)
	got := make([]byte, len(response))
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	if string(got) != response {
		b.Fatalf("response %q", got)
	}
}

// TestTCPProxyDoesNotAllocate counts every allocation of the process
// over many round trips on one relayed connection.
func TestTCPProxyDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c, err := net.Dial("tcp", proxy(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte(request)
	got := make([]byte, len(response))
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip()
	if n := testing.AllocsPerRun(300, roundTrip); n >= 0.5 {
		t.Fatalf("%v allocations per relayed round trip", n)
	}
	if string(got) != response {
		t.Fatalf("response %q", got)
	}
}

package netio_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"gefyra.dev/gefyra/internal/netio"
	"gefyra.dev/gefyra/internal/pipe"
)

// cpuTime is the CPU time (user and system) the process has used: the
// benchmark's client and server as well as the relay, all alike for the
// relays compared.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// relays are what the benchmarks compare: this package's Join (the relay
// loop on Linux), Join with a goroutine per direction, and internal/pipe's
// Join, which hands two TCP connections to this package's.
var relays = []struct {
	name string
	join func(ctx context.Context, a, b *net.TCPConn)
}{
	{name: "netio", join: func(ctx context.Context, a, b *net.TCPConn) {
		netio.Join(ctx, netio.New(a), netio.New(b), nil, nil)
	}},
	{name: "goroutines", join: func(ctx context.Context, a, b *net.TCPConn) {
		netio.GoJoin(ctx, netio.New(a), netio.New(b), nil, nil)
	}},
	{name: "pipe", join: func(ctx context.Context, a, b *net.TCPConn) {
		pipe.Join(ctx, a, b)
	}},
}

func relay(b *testing.B, join func(context.Context, *net.TCPConn, *net.TCPConn)) (client, server *net.TCPConn) {
	client, in := pair(b)
	out, server := pair(b)
	done := make(chan struct{})
	go func() {
		join(context.Background(), in, out)
		close(done)
	}()
	b.Cleanup(func() {
		client.Close()
		server.Close()
		<-done
	})
	return client, server
}

// BenchmarkJoinRoundTrip is a request and its response through the relay
// on a kept-alive connection, as an HTTP client through a TCP listener.
// cpu-ns/op is the whole process's CPU time per round trip.
//
// Here the client and the server are goroutines of the same process as
// the relay, which favours the goroutine relays: a whole round trip can
// pass from goroutine to goroutine without a thread going to sleep, while
// every message through the relay loop wakes a thread (the loop's, or the
// one of the scheduler's that waits in the runtime's poller). Between
// processes, as carrier runs, every hop wakes a thread either way; there
// the loop does less per message (make bench, "TCP proxying").
func BenchmarkJoinRoundTrip(b *testing.B) {
	req := []byte("GET /items/123 HTTP/1.1\r\nHost: demo\r\nX-Forwarded-Access-Token: eyJhbGciOiJSUzI1NiJ9.e30.sig\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
	for _, r := range relays {
		b.Run(r.name, func(b *testing.B) {
			client, server := relay(b, r.join)
			go func() {
				buf := make([]byte, len(req))
				for {
					if _, err := io.ReadFull(server, buf); err != nil {
						return
					}
					if _, err := server.Write(resp); err != nil {
						return
					}
				}
			}()
			got := make([]byte, len(resp))
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if _, err := client.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, got); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkJoinBulk is one direction of a bulk transfer in 64 KiB writes.
func BenchmarkJoinBulk(b *testing.B) {
	buf := bytes.Repeat([]byte("x"), 64<<10)
	for _, r := range relays {
		b.Run(r.name, func(b *testing.B) {
			client, server := relay(b, r.join)
			go io.Copy(io.Discard, server)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				if _, err := client.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

package pipe_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"gefyra.dev/gefyra/internal/pipe"
	"gefyra.dev/gefyra/internal/tcptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns the two ends of a real loopback TCP connection.
var pair = tcptest.Pair

// buffered hides the *net.TCPConn type, as a tunnel's connection is not
// one: Join must copy through its buffers and still half-close.
type buffered struct{ *net.TCPConn }

// noHalfClose is a connection without CloseWrite.
type noHalfClose struct{ net.Conn }

// counter is a pipe.Counter.
type counter struct{ n atomic.Int64 }

func (c *counter) Add(v float64) { c.n.Add(int64(v)) }

type result struct {
	aToB, bToA int64
	err        error
}

func join(ctx context.Context, o pipe.Options, a, b net.Conn) <-chan result {
	done := make(chan result, 1)
	go func() {
		ab, ba, err := o.Join(ctx, a, b)
		done <- result{ab, ba, err}
	}()
	return done
}

func wait(t *testing.T, done <-chan result) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Join did not return")
	}
	return result{}
}

func TestJoinHalfClose(t *testing.T) {
	tests := []struct {
		name string
		// wrap turns the proxy's two connections into what Join sees.
		wrap    func(in, out *net.TCPConn) (net.Conn, net.Conn)
		counted bool
	}{
		{name: "tcp to tcp (splice)", wrap: func(in, out *net.TCPConn) (net.Conn, net.Conn) { return in, out }},
		{name: "tcp to tcp, counted", wrap: func(in, out *net.TCPConn) (net.Conn, net.Conn) { return in, out }, counted: true},
		{name: "tcp to buffered", wrap: func(in, out *net.TCPConn) (net.Conn, net.Conn) { return in, buffered{out} }},
		{name: "buffered to buffered, counted", wrap: func(in, out *net.TCPConn) (net.Conn, net.Conn) { return buffered{in}, buffered{out} }, counted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// client <-> [in  Join  out] <-> server
			client, in := pair(t)
			out, server := pair(t)
			var up, down counter
			o := pipe.Options{APending: []byte("pre-"), BPending: []byte("hello ")}
			if tt.counted {
				o.AToB, o.BToA = &up, &down
			}
			a, b := tt.wrap(in, out)
			done := join(context.Background(), o, a, b)
			// The client sends and half-closes; the server still answers
			// after reading EOF: a half-close must not end the other
			// direction.
			client.Write([]byte("request"))
			client.CloseWrite()
			got, err := io.ReadAll(server)
			if err != nil || string(got) != "pre-request" {
				t.Fatalf("server read %q, %v", got, err)
			}
			server.Write([]byte("late answer"))
			server.CloseWrite()
			got, err = io.ReadAll(client)
			if err != nil || string(got) != "hello late answer" {
				t.Fatalf("client read %q, %v", got, err)
			}
			r := wait(t, done)
			if r.err != nil || r.aToB != int64(len("pre-request")) || r.bToA != int64(len("hello late answer")) {
				t.Fatalf("Join = %d, %d, %v", r.aToB, r.bToA, r.err)
			}
			if tt.counted && (up.n.Load() != r.aToB || down.n.Load() != r.bToA) {
				t.Fatalf("counted %d up, %d down; Join returned %d, %d", up.n.Load(), down.n.Load(), r.aToB, r.bToA)
			}
		})
	}
}

func TestJoinCountsWhileOpen(t *testing.T) {
	client, in := pair(t)
	out, server := pair(t)
	var up counter
	done := join(context.Background(), pipe.Options{AToB: &up}, in, out)
	client.Write([]byte("12345"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(server, buf); err != nil {
		t.Fatal(err)
	}
	// The counter is told while the connection is still open, not only
	// when Join returns.
	for deadline := time.Now().Add(5 * time.Second); up.n.Load() != 5; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("counted %d bytes of an open connection, want 5", up.n.Load())
		}
	}
	client.Close()
	server.Close()
	wait(t, done)
}

func TestJoinResetEndsBothDirections(t *testing.T) {
	tests := []struct {
		name string
		wrap func(c *net.TCPConn) net.Conn
	}{
		{name: "tcp", wrap: func(c *net.TCPConn) net.Conn { return c }},
		{name: "buffered", wrap: func(c *net.TCPConn) net.Conn { return buffered{c} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, in := pair(t)
			out, server := pair(t)
			done := join(context.Background(), pipe.Options{}, tt.wrap(in), tt.wrap(out))
			// The server vanishes with a reset while the client is idle:
			// the client's side must be torn down too rather than wait
			// forever for the client to speak.
			server.SetLinger(0)
			server.Close()
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := client.Read(make([]byte, 1)); err == nil {
				t.Fatal("client connection still open")
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("client connection not closed")
			}
			// A peer going away is not the relay's error.
			if r := wait(t, done); r.err != nil {
				t.Fatalf("Join after a reset: %v", r.err)
			}
		})
	}
}

// failing is a connection whose reads fail.
type failing struct {
	net.Conn
	err error
}

func (f failing) Read([]byte) (int, error) { return 0, f.err }

func TestJoinReportsErrors(t *testing.T) {
	client, in := pair(t)
	out, server := pair(t)
	boom := errors.New("boom")
	done := join(context.Background(), pipe.Options{}, in, failing{out, boom})
	// The failing side ends both directions: the client sees its
	// connection end without having sent anything.
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client connection still open")
	}
	r := wait(t, done)
	if !errors.Is(r.err, boom) {
		t.Fatalf("Join = %v, want %v", r.err, boom)
	}
	server.Close()
}

func TestJoinWithoutHalfClose(t *testing.T) {
	client, in := pair(t)
	out, server := pair(t)
	done := join(context.Background(), pipe.Options{}, in, noHalfClose{out})
	client.Write([]byte("once"))
	client.CloseWrite()
	// Without CloseWrite the only way to pass on EOF is to close.
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "once" {
		t.Fatalf("server read %q, %v", got, err)
	}
	if r := wait(t, done); r.err != nil || r.aToB != 4 {
		t.Fatalf("Join = %d, %d, %v", r.aToB, r.bToA, r.err)
	}
}

func TestJoinEndsWithContext(t *testing.T) {
	_, in := pair(t)
	out, _ := pair(t)
	in.SetDeadline(time.Now().Add(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := join(ctx, pipe.Options{}, in, out)
	cancel()
	if r := wait(t, done); r.err != nil {
		t.Fatalf("Join after cancel: %v", r.err)
	}
	// Both connections are closed.
	if _, err := in.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Join: %v, want net.ErrClosed", err)
	}
}

func TestJoinClearsDeadlines(t *testing.T) {
	client, in := pair(t)
	out, server := pair(t)
	// A deadline left from reading a protocol head must not cut the stream.
	in.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	done := join(context.Background(), pipe.Options{}, in, out)
	time.Sleep(100 * time.Millisecond)
	client.Write([]byte("still here"))
	client.CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "still here" {
		t.Fatalf("server read %q, %v", got, err)
	}
	server.Close()
	wait(t, done)
}

func TestJoinDoesNotAllocatePerWrite(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	tests := []struct {
		name    string
		wrap    func(c *net.TCPConn) net.Conn
		counted bool
	}{
		{name: "splice", wrap: func(c *net.TCPConn) net.Conn { return c }},
		{name: "buffered, counted", wrap: func(c *net.TCPConn) net.Conn { return buffered{c} }, counted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, in := pair(t)
			out, server := pair(t)
			var o pipe.Options
			if tt.counted {
				o.AToB, o.BToA = &counter{}, &counter{}
			}
			done := join(context.Background(), o, tt.wrap(in), tt.wrap(out))
			msg := bytes.Repeat([]byte("x"), 16<<10)
			got := make([]byte, len(msg))
			roundTrip := func() {
				if _, err := client.Write(msg); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(server, got); err != nil {
					t.Fatal(err)
				}
			}
			roundTrip() // the buffer pool and the splice pipe fill once
			// AllocsPerRun counts every goroutine's allocations, Join's
			// copies included.
			if allocs := testing.AllocsPerRun(200, roundTrip); allocs >= 1 {
				t.Fatalf("%v allocations per relayed write, want 0", allocs)
			}
			client.Close()
			server.Close()
			wait(t, done)
		})
	}
}

func benchmarkJoin(b *testing.B, wrap func(*net.TCPConn) net.Conn) {
	client, in := pair(b)
	out, server := pair(b)
	done := make(chan struct{})
	go func() {
		pipe.Join(context.Background(), wrap(in), wrap(out))
		close(done)
	}()
	go io.Copy(io.Discard, server)
	buf := bytes.Repeat([]byte("x"), 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	client.Close()
	server.Close()
	<-done
}

// BenchmarkJoin: one direction between two TCP connections, moved by splice.
func BenchmarkJoin(b *testing.B) {
	benchmarkJoin(b, func(c *net.TCPConn) net.Conn { return c })
}

// BenchmarkJoinBuffered: the same through the buffer pool, as for a tunnel
// connection.
func BenchmarkJoinBuffered(b *testing.B) {
	benchmarkJoin(b, func(c *net.TCPConn) net.Conn { return buffered{c} })
}

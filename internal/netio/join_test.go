package netio_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"testing"
	"time"

	"gefyra.dev/gefyra/internal/netio"
)

type result struct {
	aToB, bToA int64
	err        error
}

// joinFn is the Join under test: see eachJoin.
var joinFn = netio.Join

// eachJoin runs f for Join as it is (the relay loop, on Linux with two Ps
// or more) and for Join with a goroutine per direction.
func eachJoin(t *testing.T, f func(t *testing.T)) {
	t.Run("loop", func(t *testing.T) {
		if !netio.HasLoop() {
			t.Skip("no relay loop here")
		}
		f(t)
	})
	t.Run("goroutines", func(t *testing.T) {
		joinFn = netio.GoJoin
		defer func() { joinFn = netio.Join }()
		f(t)
	})
}

func join(ctx context.Context, a, b *net.TCPConn, aPending, bPending []byte) <-chan result {
	done := make(chan result, 1)
	go func() {
		ab, ba, err := joinFn(ctx, netio.New(a), netio.New(b), aPending, bPending)
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

func TestJoinHalfClose(t *testing.T) { eachJoin(t, testJoinHalfClose) }

func testJoinHalfClose(t *testing.T) {
	tests := []struct {
		name               string
		aPending, bPending string
	}{
		{name: "plain"},
		{name: "with bytes already read", aPending: "pre-", bPending: "hello "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// client <-> [in  Join  out] <-> server
			client, in := pair(t)
			out, server := pair(t)
			done := join(context.Background(), in, out, []byte(tt.aPending), []byte(tt.bPending))
			// The client sends and half-closes; the server still answers
			// after reading EOF: a half-close must not end the other
			// direction.
			client.Write([]byte("request"))
			client.CloseWrite()
			got, err := io.ReadAll(server)
			if want := tt.aPending + "request"; err != nil || string(got) != want {
				t.Fatalf("server read %q, %v; want %q", got, err, want)
			}
			server.Write([]byte("late answer"))
			server.CloseWrite()
			got, err = io.ReadAll(client)
			if want := tt.bPending + "late answer"; err != nil || string(got) != want {
				t.Fatalf("client read %q, %v; want %q", got, err, want)
			}
			r := wait(t, done)
			if r.err != nil || r.aToB != int64(len(tt.aPending+"request")) || r.bToA != int64(len(tt.bPending+"late answer")) {
				t.Fatalf("Join = %d, %d, %v", r.aToB, r.bToA, r.err)
			}
		})
	}
}

// TestJoinMovesEverything relays streams whose writes come in many
// sizes, some larger than a buffer, with pauses that drain the sockets.
func TestJoinMovesEverything(t *testing.T) { eachJoin(t, testJoinMovesEverything) }

func testJoinMovesEverything(t *testing.T) {
	client, in := pair(t)
	out, server := pair(t)
	done := join(context.Background(), in, out, nil, nil)
	msg := make([]byte, 8<<20)
	for i := range msg {
		msg[i] = byte(rand.Uint32())
	}
	send := func(c *net.TCPConn) {
		rest := msg
		for len(rest) > 0 {
			n := min(len(rest), []int{1, 100, 4095, 4096, 4097, 65536, 200000}[rand.IntN(7)])
			c.Write(rest[:n])
			rest = rest[n:]
			if rand.IntN(8) == 0 {
				time.Sleep(time.Millisecond) // let the reader drain
			}
		}
		c.CloseWrite()
	}
	go send(client)
	go send(server)
	for _, c := range []*net.TCPConn{server, client} {
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("read %d bytes, %v; want the %d sent", len(got), err, len(msg))
		}
	}
	if r := wait(t, done); r.err != nil || r.aToB != int64(len(msg)) || r.bToA != int64(len(msg)) {
		t.Fatalf("Join = %d, %d, %v", r.aToB, r.bToA, r.err)
	}
}

// TestIdleJoinHoldsNoBuffer: a relayed connection waiting for its peers
// holds no copy buffer; a thousand idle connections must not cost
// 128 KiB each.
func TestIdleJoinHoldsNoBuffer(t *testing.T) { eachJoin(t, testIdleJoinHoldsNoBuffer) }

func testIdleJoinHoldsNoBuffer(t *testing.T) {
	const conns = 100
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	type relayed struct {
		client, server *net.TCPConn
		done           <-chan result
	}
	var rs []relayed
	for range conns {
		client, in := pair(t)
		out, server := pair(t)
		done := join(context.Background(), in, out, nil, nil)
		// One message each way, so that both directions have read and
		// now wait.
		buf := make([]byte, 5)
		client.Write([]byte("hello"))
		io.ReadFull(server, buf)
		server.Write([]byte("world"))
		io.ReadFull(client, buf)
		rs = append(rs, relayed{client, server, done})
	}
	grown := int64(heap()) - int64(before)
	for _, r := range rs {
		r.client.Close()
		r.server.Close()
		wait(t, r.done)
	}
	if grown > conns*16<<10 {
		t.Fatalf("the heap grew by %d KiB for %d idle relayed connections", grown>>10, conns)
	}
}

func TestJoinResetEndsBothDirections(t *testing.T) { eachJoin(t, testJoinResetEndsBothDirections) }

func testJoinResetEndsBothDirections(t *testing.T) {
	client, in := pair(t)
	out, server := pair(t)
	done := join(context.Background(), in, out, nil, nil)
	// The server vanishes with a reset while the client is idle: the
	// client's side must be torn down too rather than wait forever for the
	// client to speak.
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
}

func TestJoinEndsWithContext(t *testing.T) { eachJoin(t, testJoinEndsWithContext) }

func testJoinEndsWithContext(t *testing.T) {
	_, in := pair(t)
	out, _ := pair(t)
	in.SetDeadline(time.Now().Add(time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := join(ctx, in, out, nil, nil)
	cancel()
	if r := wait(t, done); r.err != nil {
		t.Fatalf("Join after cancel: %v", r.err)
	}
	// Both connections are closed.
	for _, c := range []*net.TCPConn{in, out} {
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after Join: %v, want net.ErrClosed", err)
		}
	}
}

// TestJoinContextEndsAsItReturns: ctx may end just as Join returns, and
// the caller may by then reuse its Conns for other connections; those
// must not be closed.
func TestJoinContextEndsAsItReturns(t *testing.T) { eachJoin(t, testJoinContextEndsAsItReturns) }

func testJoinContextEndsAsItReturns(t *testing.T) {
	for range 50 {
		client, in := pair(t)
		out, server := pair(t)
		ctx, cancel := context.WithCancel(context.Background())
		a, b := netio.New(in), netio.New(out)
		done := make(chan struct{})
		go func() {
			joinFn(ctx, a, b, nil, nil)
			close(done)
		}()
		client.Close()
		server.Close()
		go cancel()
		<-done
		next, peer := pair(t)
		a.Reset(next)
		time.Sleep(time.Millisecond)
		if _, err := a.Write([]byte("x")); err != nil {
			t.Fatalf("the reused Conn's new connection: %v", err)
		}
		peer.Close()
	}
}

func TestJoinClearsDeadlines(t *testing.T) { eachJoin(t, testJoinClearsDeadlines) }

func testJoinClearsDeadlines(t *testing.T) {
	client, in := pair(t)
	out, server := pair(t)
	// A deadline left from reading a protocol head must not cut the stream.
	in.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	done := join(context.Background(), in, out, nil, nil)
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

func TestJoinDoesNotAllocatePerWrite(t *testing.T) { eachJoin(t, testJoinDoesNotAllocatePerWrite) }

func testJoinDoesNotAllocatePerWrite(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	client, in := pair(t)
	out, server := pair(t)
	done := join(context.Background(), in, out, nil, nil)
	tests := []struct {
		name string
		size int
	}{
		{name: "requests", size: 200},
		{name: "bulk", size: 256 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := bytes.Repeat([]byte("x"), tt.size)
			got := make([]byte, len(msg))
			roundTrip := func() {
				if _, err := client.Write(msg); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(server, got); err != nil {
					t.Fatal(err)
				}
			}
			roundTrip() // the large buffers' pool fills once
			// AllocsPerRun counts every goroutine's allocations, Join's
			// copies included.
			if allocs := testing.AllocsPerRun(100, roundTrip); allocs >= 1 {
				t.Fatalf("%v allocations per relayed write, want 0", allocs)
			}
		})
	}
	client.Close()
	server.Close()
	wait(t, done)
}

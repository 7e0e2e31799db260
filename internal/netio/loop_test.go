package netio_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"gefyra.dev/gefyra/internal/netio"
)

// TestLoopManyPairs relays many connections at once, each direction a
// stream of random writes, some beyond the socket buffers, and checks
// every byte; the loop's goroutine runs while they do and is gone once
// they ended.
func TestLoopManyPairs(t *testing.T) {
	if !netio.HasLoop() {
		t.Skip("no relay loop here")
	}
	const pairs, size = 48, 512 << 10
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(rand.Uint32())
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan string, 4*pairs)
	for range pairs {
		client, in := pair(t)
		out, server := pair(t)
		done := join(context.Background(), in, out, []byte("a:"), []byte("b:"))
		// The pending bytes arrive only once Join has the pair.
		head := make([]byte, 2)
		if _, err := io.ReadFull(client, head); err != nil || string(head) != "b:" {
			t.Fatalf("client read %q, %v", head, err)
		}
		send := func(c *net.TCPConn) {
			defer wg.Done()
			<-start
			rest := msg
			for len(rest) > 0 {
				n := min(len(rest), []int{1, 700, 4096, 65536, 300000}[rand.IntN(5)])
				if _, err := c.Write(rest[:n]); err != nil {
					errs <- err.Error()
					return
				}
				rest = rest[n:]
			}
			c.CloseWrite()
		}
		check := func(c *net.TCPConn, prefix string) {
			defer wg.Done()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, append([]byte(prefix), msg...)) {
				t.Logf("%d bytes, %v", len(got), err)
				errs <- "a stream arrived damaged"
			}
		}
		wg.Add(5)
		go send(client)
		go send(server)
		go check(server, "a:")
		go check(client, "")
		go func() {
			defer wg.Done()
			if r := wait(t, done); r.err != nil || r.aToB != size+2 || r.bToA != size+2 {
				errs <- "Join's result is wrong"
			}
		}()
	}
	if !netio.LoopBusy() {
		t.Error("the relay loop is not running while pairs are joined")
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	deadline := time.Now().Add(5 * time.Second)
	for netio.LoopBusy() {
		if time.Now().After(deadline) {
			t.Fatal("the relay loop still runs with no pair joined")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestJoinSlowReader: a side that does not read for a while fills the
// socket buffers; the relay waits for room and then moves everything.
func TestJoinSlowReader(t *testing.T) { eachJoin(t, testJoinSlowReader) }

func testJoinSlowReader(t *testing.T) {
	client, in := pair(t)
	out, server := pair(t)
	done := join(context.Background(), in, out, nil, nil)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB
	go func() {
		client.Write(msg)
		client.CloseWrite()
	}()
	time.Sleep(200 * time.Millisecond)
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, %v; want the %d sent", len(got), err, len(msg))
	}
	server.Close()
	if r := wait(t, done); r.err != nil || r.aToB != int64(len(msg)) {
		t.Fatalf("Join = %d, %d, %v", r.aToB, r.bToA, r.err)
	}
}

// TestJoinEndOnTheHeelsOfData: a FIN or a reset right behind the last
// bytes (both often in the socket before the relay reads) still ends the
// direction; the bytes before a FIN arrive.
func TestJoinEndOnTheHeelsOfData(t *testing.T) { eachJoin(t, testJoinEndOnTheHeelsOfData) }

func testJoinEndOnTheHeelsOfData(t *testing.T) {
	for range 20 {
		client, in := pair(t)
		out, server := pair(t)
		done := join(context.Background(), in, out, nil, nil)
		client.Write([]byte("last words"))
		client.CloseWrite()
		got, err := io.ReadAll(server)
		if err != nil || string(got) != "last words" {
			t.Fatalf("server read %q, %v", got, err)
		}
		server.Close()
		wait(t, done)

		client, in = pair(t)
		out, server = pair(t)
		done = join(context.Background(), in, out, nil, nil)
		client.Write([]byte("then a reset"))
		client.SetLinger(0)
		client.Close()
		server.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(server); isTimeout(err) {
			t.Fatal("the reset did not end the relay")
		}
		wait(t, done)
	}
}

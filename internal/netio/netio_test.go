package netio_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"gefyra.dev/gefyra/internal/netio"
	"gefyra.dev/gefyra/internal/tcptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns the two ends of a real loopback TCP connection.
var pair = tcptest.Pair

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

// TestConnMovesBytes sends data of several sizes each way through Conns
// and through plain TCPConns on the other end, the largest far beyond the
// socket buffers so that writes wait for the reader.
func TestConnMovesBytes(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{name: "one byte", size: 1},
		{name: "a request", size: 300},
		{name: "larger than a read buffer", size: 100 << 10},
		{name: "larger than the socket buffers", size: 16 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := pair(t)
			c := netio.New(a)
			msg := make([]byte, tt.size)
			for i := range msg {
				msg[i] = byte(rand.Uint32())
			}
			// Conn writes, TCPConn reads; then the reverse.
			for _, dir := range []struct {
				w io.Writer
				r io.Reader
			}{{c, b}, {b, c}} {
				errc := make(chan error, 1)
				go func() {
					n, err := dir.w.Write(msg)
					if err == nil && n != len(msg) {
						err = io.ErrShortWrite
					}
					errc <- err
				}()
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(dir.r, got); err != nil {
					t.Fatal(err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatal("bytes differ")
				}
			}
		})
	}
}

func TestConnErrors(t *testing.T) {
	tests := []struct {
		name string
		// do sets the scene with the Conn c and the peer's TCPConn p, and
		// returns the error of the operation under test.
		do   func(t *testing.T, c *netio.Conn, p *net.TCPConn) error
		want func(error) bool
	}{
		{
			name: "EOF when the peer closes",
			do: func(t *testing.T, c *netio.Conn, p *net.TCPConn) error {
				p.Write([]byte("x"))
				p.Close()
				buf := make([]byte, 8)
				if n, err := c.Read(buf); n != 1 || err != nil {
					t.Fatalf("first read: %d, %v", n, err)
				}
				_, err := c.Read(buf)
				return err
			},
			want: func(err error) bool { return err == io.EOF },
		},
		{
			name: "read deadline",
			do: func(t *testing.T, c *netio.Conn, p *net.TCPConn) error {
				c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				_, err := c.Read(make([]byte, 8))
				return err
			},
			want: isTimeout,
		},
		{
			name: "write deadline with a peer that does not read",
			do: func(t *testing.T, c *netio.Conn, p *net.TCPConn) error {
				c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
				buf := make([]byte, 1<<20)
				for {
					if _, err := c.Write(buf); err != nil {
						return err
					}
				}
			},
			want: isTimeout,
		},
		{
			name: "close during a read",
			do: func(t *testing.T, c *netio.Conn, p *net.TCPConn) error {
				time.AfterFunc(20*time.Millisecond, func() { c.Close() })
				_, err := c.Read(make([]byte, 8))
				return err
			},
			want: func(err error) bool { return errors.Is(err, net.ErrClosed) },
		},
		{
			name: "reset by the peer",
			do: func(t *testing.T, c *netio.Conn, p *net.TCPConn) error {
				p.SetLinger(0)
				p.Close()
				time.Sleep(20 * time.Millisecond)
				_, err := c.Read(make([]byte, 8))
				return err
			},
			want: func(err error) bool { return errors.Is(err, syscall.ECONNRESET) },
		},
		{
			name: "write after the peer reset",
			do: func(t *testing.T, c *netio.Conn, p *net.TCPConn) error {
				p.SetLinger(0)
				p.Close()
				time.Sleep(20 * time.Millisecond)
				var err error
				for i := 0; i < 10 && err == nil; i++ {
					_, err = c.Write([]byte("x"))
				}
				return err
			},
			want: func(err error) bool {
				return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
			},
		},
		{
			name: "empty read and write",
			do: func(t *testing.T, c *netio.Conn, p *net.TCPConn) error {
				if n, err := c.Write(nil); n != 0 || err != nil {
					return errors.New("write of nothing")
				}
				n, err := c.Read(nil)
				if n != 0 {
					return errors.New("read of nothing")
				}
				return err
			},
			want: func(err error) bool { return err == nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := pair(t)
			c := netio.New(a)
			err := tt.do(t, c, b)
			if !tt.want(err) {
				t.Fatalf("error %v (%T)", err, err)
			}
			var oe *net.OpError
			if err != nil && err != io.EOF && (!errors.As(err, &oe) || (oe.Op != "read" && oe.Op != "write")) {
				t.Fatalf("error %v: want a *net.OpError of read or write, as a TCPConn returns", err)
			}
		})
	}
}

// TestConnReset checks that a reused Conn reads and writes its new
// connection, and that a Conn of nothing is safe to hold.
func TestConnReset(t *testing.T) {
	c := netio.New(nil)
	for range 3 {
		a, b := pair(t)
		c.Reset(a)
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("%q, %v", buf, err)
		}
		b.Write([]byte("pong"))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
			t.Fatalf("%q, %v", buf, err)
		}
		c.Reset(nil)
	}
}

// TestConnDoesNotAllocate: a read or write that had to wait allocates
// nothing either.
func TestConnDoesNotAllocate(t *testing.T) {
	a, b := pair(t)
	c := netio.New(a)
	msg := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	back := make([]byte, len(msg))
	done := make(chan struct{})
	go func() { // an echo on the peer
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			b.Write(buf[:n])
		}
	}()
	roundTrip := func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, back); err != nil {
			t.Fatal(err)
		}
	}
	roundTrip()
	if n := testing.AllocsPerRun(200, roundTrip); n >= 1 {
		t.Fatalf("%v allocations per round trip", n)
	}
	c.CloseWrite()
	<-done
}

func TestConnQuiet(t *testing.T) {
	tests := []struct {
		name string
		peer func(p *net.TCPConn) // what the peer did before the look
		want bool
	}{
		{name: "open and silent", peer: func(p *net.TCPConn) {}, want: true},
		{name: "sent bytes nobody asked for", peer: func(p *net.TCPConn) { p.Write([]byte("x")) }, want: false},
		{name: "closed", peer: func(p *net.TCPConn) { p.Close() }, want: false},
		{name: "reset", peer: func(p *net.TCPConn) { p.SetLinger(0); p.Close() }, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := pair(t)
			c := netio.New(a)
			tt.peer(b)
			time.Sleep(20 * time.Millisecond)
			if got := c.Quiet(); got != tt.want {
				t.Fatalf("Quiet() = %t, want %t", got, tt.want)
			}
			if tt.want {
				// Looking consumed nothing and broke nothing.
				b.Write([]byte("late"))
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "late" {
					t.Fatalf("after Quiet: %q, %v", buf, err)
				}
			}
		})
	}
	c := netio.New(nil)
	a, _ := pair(t)
	c.Reset(a)
	if !raceEnabled {
		if n := testing.AllocsPerRun(100, func() { c.Quiet() }); n != 0 {
			t.Fatalf("%v allocations per look", n)
		}
	}
	a.Close()
	if c.Quiet() {
		t.Fatal("a closed connection is quiet")
	}
}

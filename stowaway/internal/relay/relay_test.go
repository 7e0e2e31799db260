package relay

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestPipeHalfClose(t *testing.T) {
	// carrier <-> [a  Pipe  b] <-> developer
	carrier, a := tcpPair(t)
	b, developer := tcpPair(t)
	up, down := prometheus.NewCounter(prometheus.CounterOpts{Name: "up"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "down"})
	done := make(chan error, 1)
	go func() { done <- Pipe(a, b, up, down) }()

	carrier.Write([]byte("request"))
	carrier.(*net.TCPConn).CloseWrite()
	// The developer sees the whole request and then EOF, while its own
	// direction is still open ...
	got, err := io.ReadAll(developer)
	if err != nil || string(got) != "request" {
		t.Fatalf("developer read %q, %v", got, err)
	}
	// ... so it can still answer.
	developer.Write([]byte("response!"))
	developer.(*net.TCPConn).CloseWrite()
	got, err = io.ReadAll(carrier)
	if err != nil || string(got) != "response!" {
		t.Fatalf("carrier read %q, %v", got, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Pipe: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pipe did not return after both halves closed")
	}
	if testutil.ToFloat64(up) != 7 || testutil.ToFloat64(down) != 9 {
		t.Fatalf("counted %v up, %v down", testutil.ToFloat64(up), testutil.ToFloat64(down))
	}
}

func TestPipeAbortEndsBothDirections(t *testing.T) {
	carrier, a := tcpPair(t)
	b, developer := tcpPair(t)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "c"})
	done := make(chan error, 1)
	go func() { done <- Pipe(a, b, c, c) }()
	// The developer side vanishes with a reset; the carrier's side must be
	// torn down too rather than wait forever.
	developer.(*net.TCPConn).SetLinger(0)
	developer.Close()
	carrier.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := carrier.Read(make([]byte, 1)); err == nil {
		t.Fatal("carrier connection still open")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("carrier connection not closed")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Pipe did not return")
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

package relay_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"gefyra.dev/gefyra/carrier/internal/relay"
)

// pair returns the two ends of a real TCP connection.
func pair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

func TestJoinHalfClose(t *testing.T) {
	client, proxyIn := pair(t)
	proxyOut, server := pair(t)
	type res struct {
		up, down int64
		err      error
	}
	done := make(chan res, 1)
	go func() {
		up, down, err := relay.Join(context.Background(), proxyIn, proxyOut, []byte("pre-"), nil)
		done <- res{up, down, err}
	}()
	// The client sends and half-closes; the server still answers after
	// reading EOF: a half-close must not tear the other direction down.
	client.Write([]byte("request"))
	client.CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "pre-request" {
		t.Fatalf("server read %q, %v", got, err)
	}
	server.Write([]byte("late answer"))
	server.CloseWrite()
	got, err = io.ReadAll(client)
	if err != nil || string(got) != "late answer" {
		t.Fatalf("client read %q, %v", got, err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.up != int64(len("pre-request")) || r.down != int64(len("late answer")) {
			t.Fatalf("Join = %d, %d, %v", r.up, r.down, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Join did not return after both directions ended")
	}
}

func TestJoinEndsWithContext(t *testing.T) {
	_, proxyIn := pair(t)
	proxyOut, _ := pair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := relay.Join(ctx, proxyIn, proxyOut, nil, nil)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Join after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Join ignored ctx")
	}
}

func BenchmarkJoin(b *testing.B) {
	client, proxyIn := pair(b)
	proxyOut, server := pair(b)
	go relay.Join(context.Background(), proxyIn, proxyOut, nil, nil)
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
}

//go:build linux

package netio

import (
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"gefyra.dev/gefyra/internal/tcptest"
)

// TestLoopMovesAtMostItsBudget: a direction with more bytes waiting than a
// turn may move stops at moveReads reads and is queued to continue after
// the next wait, so one bulk transfer cannot hold up the other pairs.
func TestLoopMovesAtMostItsBudget(t *testing.T) {
	if syscall.Getuid() != 0 {
		t.Skip("needs root to raise the socket buffers past rmem_max")
	}
	const backlog = 4 << 20 // more than moveReads × bufSize
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c.(*net.TCPConn)
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	in := <-accepted
	defer in.Close()
	force := func(c *net.TCPConn, opt int) {
		rc, _ := c.SyscallConn()
		rc.Control(func(fd uintptr) {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 2*backlog); err != nil {
				t.Fatal(err)
			}
		})
	}
	force(in, unix.SO_RCVBUFFORCE)
	force(client.(*net.TCPConn), unix.SO_SNDBUFFORCE)
	if _, err := client.Write(make([]byte, backlog)); err != nil {
		t.Fatal(err)
	}
	out, sink := tcptest.Pair(t)
	force(out, unix.SO_SNDBUFFORCE)
	force(sink, unix.SO_RCVBUFFORCE)

	l, err := newLoop()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l.epfd)
	defer unix.Close(l.wakefd)
	p := &lpair{gen: 1, done: make(chan struct{}, 1)}
	if p.fd[0], err = Detach(in); err != nil {
		t.Fatal(err)
	}
	if p.fd[1], err = Detach(out); err != nil {
		t.Fatal(err)
	}
	in.Close()
	out.Close()
	// Until the socket says so, the bytes may still be on their way.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := unix.IoctlGetInt(p.fd[0], unix.SIOCINQ)
		if n >= backlog {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes in the socket", n, backlog)
		}
		time.Sleep(time.Millisecond)
	}
	l.add(p) // the loop's first turn, on this goroutine
	if max := int64(moveReads * bufSize); p.n[0] == 0 || p.n[0] > max {
		t.Fatalf("the first turn moved %d bytes, want some and at most %d", p.n[0], max)
	}
	if !p.queued || len(l.ready) != 1 || l.ready[0].h != p {
		t.Fatal("the pair is not queued to go on after the next wait")
	}
	// The next turns move the rest.
	for p.n[0] < backlog && len(l.ready) > 0 {
		ready := l.ready
		l.ready = nil
		for _, q := range ready {
			q.h.Event(q.tag, 0)
		}
	}
	if p.n[0] != backlog {
		t.Fatalf("moved %d of %d bytes", p.n[0], backlog)
	}
	l.finish(p, true)
	<-p.done
}

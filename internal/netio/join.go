package netio

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Join relays a→b and b→a until both directions end or ctx is done, then
// closes both connections, with internal/pipe's rules: one copy per
// direction, a half-close (CloseWrite) when a direction reaches EOF so the
// other can still answer, both connections torn down when a direction
// fails, both directions waited for, their errors joined. A direction
// ending with EOF is not an error; nor is a peer going away with a reset
// or a broken pipe, nor anything after ctx is done. aPending and bPending
// are bytes already read from a (resp. b), written to b (resp. a) before
// anything else. It returns the bytes moved each way.
//
// Join owns a and b from the call on; the caller ends it early through
// ctx, not by closing them. On Linux, with at least two Ps, the relay
// loop moves the bytes (see loop_linux.go): Join then closes a and b at
// once and the loop works on duplicates of their descriptors. Elsewhere there is a goroutine per
// direction. Either way a direction takes a buffer only once its socket
// has data and gives it back when that is written, so an idle connection
// holds none. (Splice would keep the bytes in the kernel, but it costs
// two calls and a pipe per move.)
func Join(ctx context.Context, a, b *Conn, aPending, bPending []byte) (aToB, bToA int64, err error) {
	if l := theLoop(); l != nil && a.rc != nil && b.rc != nil {
		return loopJoin(ctx, l, a, b, aPending, bPending)
	}
	return goJoin(ctx, a, b, aPending, bPending)
}

// goJoin is Join with a goroutine per direction.
func goJoin(ctx context.Context, a, b *Conn, aPending, bPending []byte) (aToB, bToA int64, err error) {
	// Deadlines set while a protocol head was read must not end the stream.
	a.SetDeadline(time.Time{})
	b.SetDeadline(time.Time{})
	j := &join{a: a.TCPConn, b: b.TCPConn}
	stop := context.AfterFunc(ctx, j.abort)
	defer stop()
	done := make(chan struct{})
	var errAB error
	go func() {
		aToB, errAB = j.copy(b, a, aPending)
		close(done)
	}()
	bToA, errBA := j.copy(a, b, bPending)
	<-done
	a.Close()
	b.Close()
	if ctx.Err() != nil {
		return aToB, bToA, nil
	}
	return aToB, bToA, errors.Join(errAB, errBA)
}

type join struct {
	// a and b are the connections themselves, not their Conns: ctx may
	// end as Join returns, and abort then runs after the caller may have
	// reused a Conn for another connection.
	a, b *net.TCPConn
	// aborted is set once a direction failed (or ctx ended) and both
	// connections were closed: the other direction's error is then only
	// the echo of that close.
	aborted atomic.Bool
}

func (j *join) abort() {
	j.aborted.Store(true)
	j.a.Close()
	j.b.Close()
}

// copy moves src to dst. On EOF it half-closes dst; on any other end it
// closes both connections so the other direction ends too.
func (j *join) copy(dst, src *Conn, pending []byte) (int64, error) {
	var n int64
	var err error
	if len(pending) > 0 {
		var w int
		w, err = dst.Write(pending)
		n += int64(w)
	}
	if err == nil {
		var m int64
		m, err = stream(dst, src)
		n += m
	}
	if err == nil {
		dst.CloseWrite()
		return n, nil
	}
	if j.aborted.Load() {
		return n, nil
	}
	// Whatever made it out so far still reaches dst's peer: a FIN is queued
	// behind it before the close.
	dst.CloseWrite()
	j.abort()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		// The peer went away (or the caller closed a connection): the
		// data that could flow has flowed.
		return n, nil
	}
	return n, err
}

// stream copies until EOF (nil error) or an error.
func stream(dst, src *Conn) (int64, error) {
	var n int64
	for {
		bp, nr, rerr := src.readPooled()
		if nr > 0 {
			nw, werr := dst.Write((*bp)[:nr])
			n += int64(nw)
			if werr != nil {
				putBuf(bp)
				return n, werr
			}
		}
		putBuf(bp)
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

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

// Counter is told the bytes of one direction as they are written; a
// prometheus.Counter is one.
type Counter interface{ Add(float64) }

// Options are what Relay needs beyond the two connections. The zero value
// relays without pending bytes or counters.
type Options struct {
	// APending and BPending are bytes already read from a (resp. b), for
	// example left in a bufio.Reader, that are written to b (resp. a)
	// before anything else.
	APending, BPending []byte
	// AToB and BToA, if not nil, are told the bytes of each direction as
	// they move, so a long connection shows while it lasts.
	AToB, BToA Counter
}

// Join relays a→b and b→a until both directions end or ctx is done, then
// closes both connections, with Relay's rules. aPending and bPending are
// bytes already read from a (resp. b), written to b (resp. a) before
// anything else. It returns the bytes moved each way.
//
// On Linux, with at least two Ps, the relay loop moves the bytes (see
// loop_linux.go): Join then closes a and b at once and the loop works on
// duplicates of their descriptors. Elsewhere Join is Relay. Either way a
// direction takes a buffer only once its socket has data and gives it
// back when that is written, so an idle connection holds none. (Splice
// would keep the bytes in the kernel, but it costs two calls and a pipe
// per move.)
func Join(ctx context.Context, a, b *Conn, aPending, bPending []byte) (aToB, bToA int64, err error) {
	if l := theLoop(); l != nil && a.rc != nil && b.rc != nil {
		return loopJoin(ctx, l, a, b, aPending, bPending)
	}
	return Relay(ctx, a, b, Options{APending: aPending, BPending: bPending})
}

// Relay relays a→b and b→a with a goroutine per direction until both
// directions end or ctx is done, then closes both connections: a
// half-close (CloseWrite; a Close where the connection has none) when a
// direction reaches EOF so the other can still answer, both connections
// torn down when a direction fails, both directions waited for, their
// errors joined. A direction ending with EOF is not an error; nor is a
// peer going away with a reset or a broken pipe, nor anything after ctx
// is done. It returns the bytes moved each way and tells o's counters as
// they move.
//
// Relay, like Join, owns a and b from the call on; the caller ends it
// early through ctx, not by closing them. A direction whose source is a
// *Conn takes a buffer only once the socket has data; any other source
// holds one of a pool while its direction lasts.
func Relay(ctx context.Context, a, b net.Conn, o Options) (aToB, bToA int64, err error) {
	// Deadlines set while a protocol head was read must not end the stream.
	a.SetDeadline(time.Time{})
	b.SetDeadline(time.Time{})
	j := &join{a: closerOf(a), b: closerOf(b)}
	stop := context.AfterFunc(ctx, j.abort)
	defer stop()
	done := make(chan struct{})
	var errAB error
	go func() {
		aToB, errAB = j.copy(b, a, o.APending, o.AToB)
		close(done)
	}()
	bToA, errBA := j.copy(a, b, o.BPending, o.BToA)
	<-done
	a.Close()
	b.Close()
	if ctx.Err() != nil {
		return aToB, bToA, nil
	}
	return aToB, bToA, errors.Join(errAB, errBA)
}

// closerOf is what an abort closes for c: a *Conn's own connection, not
// the Conn, because ctx may end as Relay returns, and the abort then runs
// after the caller may have reset the Conn for another connection.
func closerOf(c net.Conn) io.Closer {
	if nc, ok := c.(*Conn); ok {
		return nc.TCPConn
	}
	return c
}

// join is the state both directions share.
type join struct {
	a, b io.Closer
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

type closeWriter interface{ CloseWrite() error }

// copy moves src to dst. On EOF it half-closes dst; on any other end it
// closes both connections so the other direction ends too.
func (j *join) copy(dst, src net.Conn, pending []byte, c Counter) (int64, error) {
	var n int64
	var err error
	if len(pending) > 0 {
		var w int
		w, err = dst.Write(pending)
		n += int64(w)
		count(c, w)
	}
	if err == nil {
		var m int64
		m, err = stream(dst, src, c)
		n += m
	}
	if err == nil {
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		} else {
			// Without a half-close the peer would never learn that
			// this direction ended.
			dst.Close()
		}
		return n, nil
	}
	if j.aborted.Load() {
		return n, nil
	}
	// Whatever made it out so far still reaches dst's peer: a FIN is queued
	// behind it before the close.
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	}
	j.abort()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		// The peer went away (or the connection was closed under the
		// relay): the data that could flow has flowed.
		return n, nil
	}
	return n, err
}

func count(c Counter, n int) {
	if c != nil && n > 0 {
		c.Add(float64(n))
	}
}

// stream copies until EOF (nil error) or an error.
func stream(dst, src net.Conn, c Counter) (int64, error) {
	if nc, ok := src.(*Conn); ok {
		return streamPooled(dst, nc, c)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			count(c, nw)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// streamPooled is stream for a *Conn source, whose reads take a buffer
// only once the socket has data.
func streamPooled(dst net.Conn, src *Conn, c Counter) (int64, error) {
	var n int64
	for {
		bp, nr, rerr := src.readPooled()
		if nr > 0 {
			nw, werr := dst.Write((*bp)[:nr])
			n += int64(nw)
			count(c, nw)
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

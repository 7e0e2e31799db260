// Package pipe joins two connections into one stream, the way every
// gefyra proxy relays TCP: one copy per direction, a half-close
// (CloseWrite) when a direction reaches EOF so the other can still answer,
// both connections torn down when a direction fails so nothing waits
// forever, both directions waited for, their errors joined.
//
// A *net.TCPConn is read and written through internal/netio (plain system
// calls, no wake-up of the runtime's monitor thread); two of them without
// counters are relayed by netio.Join (on Linux, by its event loop), whose
// idle connections hold no buffer. Other connections (the WireGuard tunnel's netstack) share a pool
// of buffers.
package pipe

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gefyra.dev/gefyra/internal/netio"
)

// Counter is told the bytes of one direction as they are written; a
// prometheus.Counter is one.
type Counter interface{ Add(float64) }

// Options are what some callers need beyond Join. The zero value is Join.
type Options struct {
	// APending and BPending are bytes already read from a (resp. b), for
	// example left in a bufio.Reader, that are written to b (resp. a)
	// before anything else.
	APending, BPending []byte
	// AToB and BToA, if not nil, are told the bytes of each direction as
	// they move, so a long connection shows while it lasts. The kernel's
	// splice cannot report progress: a counted direction is copied through
	// a buffer even between two TCP connections.
	AToB, BToA Counter
}

// Join copies a→b and b→a until both directions end or ctx is done, then
// closes both connections. It returns the bytes moved each way. A direction
// ending with EOF is not an error; nor is a peer going away with a reset or
// a broken pipe, nor anything after ctx is done. Join owns a and b: end it
// early through ctx (two TCP connections go to netio.Join, which may close
// them at once and relay duplicates of their descriptors).
func Join(ctx context.Context, a, b net.Conn) (aToB, bToA int64, err error) {
	return Options{}.Join(ctx, a, b)
}

// Join is the package's Join with o's pending bytes and counters.
func (o Options) Join(ctx context.Context, a, b net.Conn) (aToB, bToA int64, err error) {
	at, aTCP := a.(*net.TCPConn)
	bt, bTCP := b.(*net.TCPConn)
	if aTCP && bTCP && o.AToB == nil && o.BToA == nil {
		return netio.Join(ctx, netio.New(at), netio.New(bt), o.APending, o.BPending)
	}
	if aTCP {
		a = netio.New(at)
	}
	if bTCP {
		b = netio.New(bt)
	}
	// Deadlines set while a protocol head was read must not end the stream.
	a.SetDeadline(time.Time{})
	b.SetDeadline(time.Time{})
	j := &join{a: a, b: b}
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

// join is the state both directions share.
type join struct {
	a, b net.Conn
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
		if c != nil && w > 0 {
			c.Add(float64(w))
		}
	}
	if err == nil {
		var m int64
		m, err = copyStream(dst, src, c)
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
		// The peer went away (or the caller closed a connection): the
		// data that could flow has flowed.
		return n, nil
	}
	return n, err
}

// copyStream copies until EOF (nil error) or an error.
func copyStream(dst, src net.Conn, c Counter) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if c != nil && nw > 0 {
				c.Add(float64(nw))
			}
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

// bufSize is large enough that a user-space copy moves a full TCP window
// per system call pair.
const bufSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

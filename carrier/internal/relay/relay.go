// Package relay joins two connections: one copy per direction, a
// half-close (CloseWrite) when a direction ends, both directions waited
// for, errors joined. Between two *net.TCPConn the kernel moves the bytes
// (io.Copy uses splice).
package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"time"
)

type closeWriter interface{ CloseWrite() error }

// Join copies a→b and b→a until both directions end or ctx is done, then
// closes both. aPending and bPending are bytes already read from a (resp.
// b) that must be written to b (resp. a) first. It returns the bytes moved
// each way. A direction ending with EOF is not an error; a peer resetting
// after the other side is done is not either.
func Join(ctx context.Context, a, b net.Conn, aPending, bPending []byte) (aToB, bToA int64, err error) {
	a.SetDeadline(time.Time{})
	b.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() {
		a.Close()
		b.Close()
	})
	defer stop()
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := pipe(b, a, aPending)
		done <- result{n, err}
	}()
	bToA, errBA := pipe(a, b, bPending)
	r := <-done
	aToB = r.n
	a.Close()
	b.Close()
	if ctx.Err() != nil {
		return aToB, bToA, nil
	}
	return aToB, bToA, errors.Join(r.err, errBA)
}

// pipe copies src to dst and half-closes dst.
func pipe(dst, src net.Conn, pending []byte) (int64, error) {
	var n int64
	if len(pending) > 0 {
		w, err := dst.Write(pending)
		n += int64(w)
		if err != nil {
			src.Close()
			return n, err
		}
	}
	c, err := io.Copy(dst, src)
	n += c
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	if err != nil && (errors.Is(err, net.ErrClosed) || isReset(err)) {
		// The other direction closed both connections or the peer
		// reset after it was done: the data that could flow has flowed.
		err = nil
	}
	return n, err
}

func isReset(err error) bool {
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Err != nil && (errors.Is(ne.Err, errConnReset) || errors.Is(ne.Err, errBrokenPipe))
	}
	return false
}

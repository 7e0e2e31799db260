// Package pipe joins two connections into one stream, the way every
// gefyra proxy relays TCP: one copy per direction, a half-close
// (CloseWrite) when a direction reaches EOF so the other can still answer,
// both connections torn down when a direction fails so nothing waits
// forever, both directions waited for, their errors joined.
//
// A *net.TCPConn is read and written through internal/netio (plain system
// calls, no wake-up of the runtime's monitor thread); two of them without
// counters are relayed by netio.Join (on Linux, by its event loop), whose
// idle connections hold no buffer. Any other pair goes to netio.Relay, a
// goroutine per direction; a direction from another kind of connection
// (the WireGuard tunnel's netstack) holds a buffer of a pool while it
// lasts.
package pipe

import (
	"context"
	"net"

	"gefyra.dev/gefyra/internal/netio"
)

// Counter is told the bytes of one direction as they are written; a
// prometheus.Counter is one.
type Counter = netio.Counter

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
	return netio.Relay(ctx, a, b, netio.Options{APending: o.APending, BPending: o.BPending, AToB: o.AToB, BToA: o.BToA})
}

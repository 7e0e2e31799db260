package netio

import "context"

// GoJoin is Join with a goroutine per direction (Relay), also where the
// relay loop would take the pair, so the tests cover both.
func GoJoin(ctx context.Context, a, b *Conn, aPending, bPending []byte) (int64, int64, error) {
	return Relay(ctx, a, b, Options{APending: aPending, BPending: bPending})
}

// HasLoop reports whether Join uses the relay loop here.
func HasLoop() bool { return theLoop() != nil }

// LoopBusy reports whether the relay loop's goroutine is running.
var LoopBusy = loopBusy

//go:build !linux

package netio

import "context"

// loop is the relay loop of Linux; elsewhere Join uses a goroutine per
// direction.
type loop struct{}

func theLoop() *loop { return nil }

func loopJoin(context.Context, *loop, *Conn, *Conn, []byte, []byte) (int64, int64, error) {
	panic("netio: no relay loop on this platform")
}

func loopBusy() bool { return false }

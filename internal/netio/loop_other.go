//go:build !linux

package netio

import "context"

// Loop is the event loop of Linux; elsewhere there is none, and Join
// uses a goroutine per direction.
type Loop struct{}

// LoopEnv is the environment variable that turns the event loop of Linux
// off.
const LoopEnv = "GEFYRA_EVENT_LOOP"

// Shared returns nil: there is no event loop on this platform.
func Shared() *Loop { return nil }

func theLoop() *Loop { return nil }

func loopJoin(context.Context, *Loop, *Conn, *Conn, []byte, []byte) (int64, int64, error) {
	panic("netio: no relay loop on this platform")
}

func loopBusy() bool { return false }

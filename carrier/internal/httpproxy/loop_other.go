//go:build !linux

package httpproxy

import (
	"context"
	"net"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/internal/netio"
)

// handoff is a connection leaving the event loop of Linux; there is none
// elsewhere.
type handoff struct {
	fd, upFd int
	pending  []byte
	fresh    bool
}

type lpools struct{}

func (p *Proxy) serveOnLoop(context.Context, *netio.Loop, *net.TCPConn, func() *config.Listener) *handoff {
	panic("httpproxy: no event loop on this platform")
}

func (cc *clientConn) resume(context.Context, *handoff) bool { return true }

func (p *Proxy) pruneLoop(*config.Config) {}

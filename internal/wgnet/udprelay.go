package wgnet

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"gefyra.dev/gefyra/internal/pipe"
)

// UDP flow timeouts: a UDP flow has no end of its own, so a relayed flow
// ends when it has been quiet this long. DNS flows are one question and
// its answer (a resolver opens a new one per question), so they end soon.
const (
	UDPIdleTimeout = 30 * time.Second
	DNSIdleTimeout = 5 * time.Second
)

// UDPIdle is the idle timeout of a flow to port.
func UDPIdle(port uint16) time.Duration {
	if port == 53 {
		return DNSIdleTimeout
	}
	return UDPIdleTimeout
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// JoinUDP relays datagrams between a and b, two connected UDP flows (for
// example an accepted UDPRequest and a flow dialed on to its
// destination), one datagram per Write, until neither has carried a
// datagram for idle, ctx is done or either fails; then it closes both.
// aToB and bToA, if not nil, count the payload bytes each way. A quiet
// end, ctx's end and a closed connection are not errors.
func JoinUDP(ctx context.Context, a, b net.Conn, idle time.Duration, aToB, bToA pipe.Counter) error {
	var last atomic.Int64 // UnixNano of the last datagram either way
	last.Store(time.Now().UnixNano())
	closeBoth := func() {
		a.Close()
		b.Close()
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- copyDatagrams(b, a, idle, &last, aToB) }()
	go func() { errc <- copyDatagrams(a, b, idle, &last, bToA) }()
	err := <-errc
	closeBoth()
	<-errc // the other direction, ended by the close
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// copyDatagrams moves datagrams from src to dst until src has been quiet
// (both ways, per last) for idle, or an error.
func copyDatagrams(dst, src net.Conn, idle time.Duration, last *atomic.Int64, c pipe.Counter) error {
	buf := make([]byte, maxDatagram)
	for {
		deadline := time.Unix(0, last.Load()).Add(idle)
		if !time.Now().Before(deadline) {
			return nil
		}
		src.SetReadDeadline(deadline)
		n, err := src.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // the other direction may have moved meanwhile
			}
			return quietErr(err)
		}
		last.Store(time.Now().UnixNano())
		if _, err := dst.Write(buf[:n]); err != nil {
			return quietErr(err)
		}
		if c != nil {
			c.Add(float64(n))
		}
	}
}

// quietErr drops the errors that only mean the flow is over: a closed
// connection, or a destination port that answered "unreachable".
func quietErr(err error) error {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	return err
}

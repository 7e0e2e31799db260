package wgnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// maxInFlight bounds the TCP handshakes a TCPHandler decides about at once;
// SYNs beyond it are dropped (and retransmitted by the peer).
const maxInFlight = 1024

// TCPRequest is an incoming TCP connection, held at the SYN until the
// handler decides: Accept completes the handshake, Reject answers with a
// reset. A handler can so first check that it can serve the connection
// (e.g. dial where it goes) and refuse it cleanly if not.
type TCPRequest struct {
	// Local is the address the peer dialed (this endpoint's address and
	// a port); Remote is the peer's side.
	Local, Remote netip.AddrPort

	fr   *tcp.ForwarderRequest
	once sync.Once
}

// Accept completes the handshake and returns the connection.
func (r *TCPRequest) Accept() (net.Conn, error) {
	var c net.Conn
	err := errors.New("wgnet: TCP request already decided")
	r.once.Do(func() {
		var wq waiter.Queue
		ep, terr := r.fr.CreateEndpoint(&wq)
		if terr != nil {
			r.fr.Complete(true)
			err = fmt.Errorf("wgnet: accept %s: %v", r.Local, terr)
			return
		}
		r.fr.Complete(false)
		c, err = gonet.NewTCPConn(&wq, ep), nil
	})
	return c, err
}

// Reject answers the SYN with a reset: the peer's dial fails at once with
// "connection refused".
func (r *TCPRequest) Reject() {
	r.once.Do(func() { r.fr.Complete(true) })
}

// TCPHandler decides about a TCPRequest. It runs in a goroutine of its own
// and must call Accept or Reject before it returns (a request left
// undecided is rejected); what it does with an accepted connection
// afterwards is up to it.
type TCPHandler func(*TCPRequest)

// HandleTCP sends TCP connections to ports no Listener holds to h. A nil h
// restores the default: such connections are reset.
func (n *Net) HandleTCP(h TCPHandler) error {
	fs, ok := n.stack.(*fastStack)
	if !ok {
		return errors.New("wgnet: HandleTCP needs the batched stack")
	}
	fs.setTCPHandler(h)
	return nil
}

// installForwarder routes SYNs that no endpoint takes to forward. The stack
// does not allow changing this while packets flow, so it is done once at
// creation; without a handler forward resets, as the stack would.
func (s *fastStack) installForwarder() {
	fwd := tcp.NewForwarder(s.stack, 0, maxInFlight, s.forward)
	s.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
}

func (s *fastStack) setTCPHandler(h TCPHandler) {
	if h == nil {
		s.handler.Store(nil)
		return
	}
	s.handler.Store(&h)
}

func (s *fastStack) forward(fr *tcp.ForwarderRequest) {
	hp := s.handler.Load()
	if hp == nil {
		fr.Complete(true)
		return
	}
	id := fr.ID()
	r := &TCPRequest{
		Local:  netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort),
		Remote: netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort),
		fr:     fr,
	}
	(*hp)(r)
	// A handler that forgot to decide must not leave the SYN hanging.
	r.Reject()
}

func addrFrom(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

// fastStackHandler is the state HandleTCP adds to a fastStack.
type fastStackHandler struct {
	handler atomic.Pointer[TCPHandler]
}

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
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
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
	// Local is the address the peer dialed (this endpoint's address, or
	// any address on a forwarding stack, and a port); Remote is the
	// peer's side.
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

// UDPRequest is the first datagram of a new UDP flow (a pair of addresses
// no endpoint serves yet). Accept makes an endpoint for the flow; a flow
// not accepted is dropped, datagram by datagram.
type UDPRequest struct {
	// Local is the address the datagram was sent to, Remote its sender.
	Local, Remote netip.AddrPort

	fr *udp.ForwarderRequest
}

// Accept makes the flow's endpoint: the first datagram and every later one
// from Remote to Local arrive on the returned connection, and what is
// written to it goes to Remote, from Local. Closing it ends the flow; a
// later datagram starts a new request.
func (r *UDPRequest) Accept() (net.Conn, error) {
	var wq waiter.Queue
	ep, err := r.fr.CreateEndpoint(&wq)
	if err != nil {
		return nil, fmt.Errorf("wgnet: accept UDP flow %s -> %s: %v", r.Remote, r.Local, err)
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// UDPHandler decides about a UDPRequest. It runs on the stack's packet
// path, so it must decide at once (no dialing, no waiting): Accept and hand
// the connection to a goroutine, or return to drop the datagram.
type UDPHandler func(*UDPRequest)

// HandleTCP sends TCP connections to ports no Listener holds to h. A nil h
// restores the default: such connections are reset.
func (n *Net) HandleTCP(h TCPHandler) error {
	fs, ok := n.stack.(*fastStack)
	if !ok {
		return errors.New("wgnet: HandleTCP needs the batched stack")
	}
	fs.handlers.setTCP(h)
	return nil
}

// HandleUDP sends UDP datagrams that no endpoint takes to h. A nil h
// restores the default: they are dropped.
func (n *Net) HandleUDP(h UDPHandler) error {
	fs, ok := n.stack.(*fastStack)
	if !ok {
		return errors.New("wgnet: HandleUDP needs the batched stack")
	}
	fs.handlers.setUDP(h)
	return nil
}

// handlers routes the connections and datagrams that no endpoint of a
// stack takes to the TCPHandler and UDPHandler set at the time.
type handlers struct {
	tcp atomic.Pointer[TCPHandler]
	udp atomic.Pointer[UDPHandler]
}

// install routes SYNs and datagrams that no endpoint takes to h. The
// stack does not allow changing this while packets flow, so it is done
// once at creation; without a handler TCP resets, as the stack would, and
// UDP gets the stack's default treatment.
func (h *handlers) install(s *stack.Stack) {
	tfwd := tcp.NewForwarder(s, 0, maxInFlight, h.forwardTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tfwd.HandlePacket)
	ufwd := udp.NewForwarder(s, h.forwardUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		if h.udp.Load() == nil {
			return false
		}
		return ufwd.HandlePacket(id, pkt)
	})
}

func (h *handlers) setTCP(f TCPHandler) {
	if f == nil {
		h.tcp.Store(nil)
		return
	}
	h.tcp.Store(&f)
}

func (h *handlers) setUDP(f UDPHandler) {
	if f == nil {
		h.udp.Store(nil)
		return
	}
	h.udp.Store(&f)
}

func (h *handlers) forwardTCP(fr *tcp.ForwarderRequest) {
	hp := h.tcp.Load()
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

func (h *handlers) forwardUDP(fr *udp.ForwarderRequest) {
	hp := h.udp.Load()
	if hp == nil {
		return
	}
	id := fr.ID()
	(*hp)(&UDPRequest{
		Local:  netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort),
		Remote: netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort),
		fr:     fr,
	})
}

func addrFrom(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

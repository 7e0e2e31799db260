package wgnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// netStack is the TCP/IP stack behind the WireGuard device.
type netStack interface {
	tunDevice() tun.Device
	dialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error)
	dialUDP(ap netip.AddrPort) (net.Conn, error)
	listenTCP(ap netip.AddrPort) (net.Listener, error)
}

// stockStack is wireguard-go's own netstack TUN: one packet per Read and
// Write. It is kept as the reference the benchmarks compare against.
type stockStack struct {
	dev  tun.Device
	tnet *netstack.Net
}

func newStockStack(addr netip.Addr, mtu int) (*stockStack, error) {
	dev, tnet, err := netstack.CreateNetTUN([]netip.Addr{addr}, nil, mtu)
	if err != nil {
		return nil, err
	}
	return &stockStack{dev: dev, tnet: tnet}, nil
}

func (s *stockStack) tunDevice() tun.Device { return s.dev }

func (s *stockStack) dialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	c, err := s.tnet.DialContextTCPAddrPort(ctx, ap)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (s *stockStack) dialUDP(ap netip.AddrPort) (net.Conn, error) {
	c, err := s.tnet.DialUDPAddrPort(netip.AddrPort{}, ap)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (s *stockStack) listenTCP(ap netip.AddrPort) (net.Listener, error) {
	l, err := s.tnet.ListenTCPAddrPort(ap)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Tuning of the batched stack.
const (
	// batchSize is the most packets one Read hands to WireGuard (and so the
	// most it encrypts and sends with one sendmmsg).
	batchSize = 128
	// outQueueLen is the depth of the queue between the stack and
	// WireGuard, in packets or (GSO) segments of up to gsoMaxSize.
	outQueueLen = 4096
	// gsoMaxSize is the largest segment TCP builds before Read cuts it
	// into MTU-sized packets.
	gsoMaxSize = 1<<16 - 1
	// tcpBufferMax bounds TCP's send and receive buffers (auto-tuned).
	tcpBufferMax = 8 << 20
)

// fastStack is a gVisor stack behind a TUN device of its own that moves
// packets in batches (DESIGN "performance budget"):
//
//   - Read hands WireGuard every packet queued (up to batchSize), so
//     WireGuard encrypts and sends them together.
//   - The link endpoint declares host GSO, so TCP queues segments of up to
//     64 KiB, and Read cuts them into packets straight into WireGuard's
//     buffers (segmenter), headers and checksums included, as a NIC's TSO
//     would. (gVisor's own GSO cuts them in the stack instead: a packet
//     buffer, a clone of the payload and atomic reference counting shared
//     by two goroutines per packet, about a quarter of the sender's CPU.)
//   - Write feeds each batch WireGuard decrypted through gVisor's GRO, which
//     merges consecutive segments of a flow before TCP sees them. GRO's
//     merged packets carry no valid checksum, so the endpoint must declare
//     RX checksum offload or TCP drops them; that is sound here because
//     WireGuard's AEAD has already authenticated every byte.
type fastStack struct {
	stack *stack.Stack
	ep    *linkEndpoint
	dev   *fastTUN
	handlers
}

// linkEndpoint is a channel endpoint that remembers its dispatcher so
// inbound packets can go through GRO, and allows bigger GSO segments.
type linkEndpoint struct {
	*channel.Endpoint

	mu         sync.RWMutex // guards dispatcher
	dispatcher stack.NetworkDispatcher
}

func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	e.Endpoint.Attach(d)
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
}

func (e *linkEndpoint) networkDispatcher() stack.NetworkDispatcher {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher
}

func (*linkEndpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// newGStack returns a gVisor stack with the protocols and TCP tuning both
// of this package's stacks use. A promiscuous stack must not handle local
// traffic itself: it would take every source address for one of its own
// and drop the packet as a martian.
func newGStack(promiscuous bool) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        !promiscuous,
	})
	fail := func(what string, err tcpip.Error) (*stack.Stack, error) {
		s.Close()
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fail("enable TCP SACK", err)
	}
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: tcpBufferMax}
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); err != nil {
		return fail("set TCP receive buffer", err)
	}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcpBufferMax}
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd); err != nil {
		return fail("set TCP send buffer", err)
	}
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate); err != nil {
		return fail("enable TCP receive buffer auto-tuning", err)
	}
	return s, nil
}

// addNIC attaches ep as NIC 1 of s. With addr valid, the NIC has that
// address and routes every destination of its family. With promiscuous,
// the NIC takes packets for every address, answers from them (spoofing),
// and routes both families: the stack then terminates whatever reaches it,
// and the handlers see the address each flow was meant for.
func addNIC(s *stack.Stack, ep stack.LinkEndpoint, addr netip.Addr, promiscuous bool) error {
	if err := s.CreateNIC(1, ep); err != nil {
		return fmt.Errorf("create NIC: %v", err)
	}
	if addr.IsValid() {
		proto, empty := tcpip.NetworkProtocolNumber(ipv4.ProtocolNumber), header.IPv4EmptySubnet
		if addr.Is6() {
			proto, empty = ipv6.ProtocolNumber, header.IPv6EmptySubnet
		}
		pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix()}
		if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("add address: %v", err)
		}
		s.AddRoute(tcpip.Route{Destination: empty, NIC: 1})
	}
	if !promiscuous {
		return nil
	}
	if err := s.SetPromiscuousMode(1, true); err != nil {
		return fmt.Errorf("promiscuous mode: %v", err)
	}
	if err := s.SetSpoofing(1, true); err != nil {
		return fmt.Errorf("spoofing: %v", err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	return nil
}

func newFastStack(addr netip.Addr, mtu int, forwarding bool) (*fastStack, error) {
	s, err := newGStack(forwarding)
	if err != nil {
		return nil, err
	}
	ep := &linkEndpoint{Endpoint: channel.New(outQueueLen, uint32(mtu), "")}
	ep.LinkEPCapabilities = stack.CapabilityRXChecksumOffload
	ep.SupportedGSOKind = stack.HostGSOSupported
	fs := &fastStack{stack: s, ep: ep}
	fs.handlers.install(s)
	if err := addNIC(s, ep, addr, forwarding); err != nil {
		s.Close()
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	fs.dev = &fastTUN{ep: ep, stack: s, mtu: mtu, events: make(chan tun.Event, 1), ctx: ctx, cancel: cancel}
	fs.dev.events <- tun.EventUp
	return fs, nil
}

func (s *fastStack) tunDevice() tun.Device { return s.dev }

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	fa := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
	if ap.Addr().Is4() {
		return fa, ipv4.ProtocolNumber
	}
	return fa, ipv6.ProtocolNumber
}

func (s *fastStack) dialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	fa, pn := fullAddr(ap)
	c, err := gonet.DialContextTCP(ctx, s.stack, fa, pn)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (s *fastStack) dialUDP(ap netip.AddrPort) (net.Conn, error) {
	fa, pn := fullAddr(ap)
	c, err := gonet.DialUDP(s.stack, nil, &fa, pn)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (s *fastStack) listenTCP(ap netip.AddrPort) (net.Listener, error) {
	fa, pn := fullAddr(ap)
	l, err := gonet.ListenTCP(s.stack, fa, pn)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// fastTUN is the tun.Device WireGuard reads packets from and writes
// decrypted packets to.
type fastTUN struct {
	ep     *linkEndpoint
	stack  *stack.Stack
	mtu    int
	events chan tun.Event
	ctx    context.Context // done when closed
	cancel context.CancelFunc
	once   sync.Once

	// Read's state (WireGuard calls Read from one goroutine).
	pending *stack.PacketBuffer // a GSO segment Read has sent part of
	seg     segmenter
}

var groPool = sync.Pool{New: func() any {
	g := new(gro.GRO)
	g.Init(true)
	return g
}}

func (t *fastTUN) File() *os.File                      { return nil }
func (t *fastTUN) Name() (string, error)               { return "gefyra", nil }
func (t *fastTUN) MTU() (int, error)                   { return t.mtu, nil }
func (t *fastTUN) Events() <-chan tun.Event            { return t.events }
func (t *fastTUN) BatchSize() int                      { return batchSize }
func (t *fastTUN) String() string                      { return "gefyra netstack" }
func (t *fastTUN) closed() bool                        { return t.ctx.Err() != nil }
func (t *fastTUN) dispatcher() stack.NetworkDispatcher { return t.ep.networkDispatcher() }

// Read blocks for the first outbound packet, then takes every other one
// already queued, up to len(bufs). A TCP segment bigger than the MTU (GSO)
// becomes several packets; one that does not fit into bufs any more is
// continued by the next Read.
func (t *fastTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt := t.pending
	t.pending = nil
	if pkt == nil {
		if pkt = t.ep.ReadContext(t.ctx); pkt == nil {
			return 0, os.ErrClosed
		}
	}
	n := 0
	for pkt != nil {
		if pkt.GSOOptions.Type == stack.GSONone {
			if size := copyPacket(bufs[n][offset:], pkt); size > 0 {
				sizes[n] = size
				n++
			}
		} else {
			k, done := t.seg.split(pkt, bufs[n:], sizes[n:], offset)
			n += k
			if !done {
				t.pending = pkt
				break
			}
		}
		pkt.DecRef()
		if n == len(bufs) {
			break
		}
		pkt = t.ep.Read()
	}
	return n, nil
}

// copyPacket copies pkt into dst without allocating; 0 if it does not fit.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	size := pkt.Size()
	if size > len(dst) {
		return 0
	}
	return copyAt(dst[:size], pkt, 0)
}

// copyAt fills dst with pkt's bytes from offset from on and returns how
// many there were.
func copyAt(dst []byte, pkt *stack.PacketBuffer, from int) int {
	vl, off := pkt.AsViewList()
	off += from
	n := 0
	for v := vl.Front(); v != nil && n < len(dst); v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(dst[n:], s[off:])
		off = 0
	}
	return n
}

// segmenter cuts TCP segments bigger than the MTU, as gVisor's TCP builds
// them for a link with host GSO, into packets (what a NIC's TSO does):
// every packet gets the headers of the segment with its own sequence
// number, lengths and checksums; FIN and PSH stay on the last one. It
// also completes the checksum of segments that need no cutting (TCP
// leaves only the pseudo-header's sum in them), down to pure ACKs.
type segmenter struct {
	// off is how much of the pending segment's payload is sent already.
	off int
}

// split writes pkt's packets into bufs, continuing where the previous call
// stopped; done is false when bufs were too few for the rest.
func (g *segmenter) split(pkt *stack.PacketBuffer, bufs [][]byte, sizes []int, offset int) (n int, done bool) {
	ipLen := len(pkt.NetworkHeader().Slice())
	tcpLen := len(pkt.TransportHeader().Slice())
	hdrLen := ipLen + tcpLen
	payload := pkt.Size() - hdrLen
	mss := int(pkt.GSOOptions.MSS)
	if mss <= 0 || payload <= mss {
		mss = max(payload, 1)
	}
	for n < len(bufs) {
		seg := min(mss, payload-g.off)
		dst := bufs[n][offset:]
		if hdrLen+seg > len(dst) {
			g.off = 0
			return n, true // cannot happen with WireGuard's buffers; drop
		}
		p := dst[:hdrLen+seg]
		copyAt(p[:hdrLen], pkt, 0)
		copyAt(p[hdrLen:], pkt, hdrLen+g.off)
		first, last := g.off == 0, g.off+seg >= payload
		var src, dstAddr tcpip.Address
		switch p[0] >> 4 {
		case 4:
			ip := header.IPv4(p)
			ip.SetTotalLength(uint16(len(p)))
			if !first {
				ip.SetID(ip.ID() + uint16(g.off/mss))
			}
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
			src, dstAddr = ip.SourceAddress(), ip.DestinationAddress()
		case 6:
			ip := header.IPv6(p)
			ip.SetPayloadLength(uint16(len(p) - header.IPv6MinimumSize))
			src, dstAddr = ip.SourceAddress(), ip.DestinationAddress()
		default:
			g.off = 0
			return n, true
		}
		tcp := header.TCP(p[ipLen:])
		tcp.SetSequenceNumber(tcp.SequenceNumber() + uint32(g.off))
		flags := tcp.Flags()
		if !last {
			flags &^= header.TCPFlagFin | header.TCPFlagPsh
		}
		if !first {
			flags &^= header.TCPFlagCwr
		}
		tcp.SetFlags(uint8(flags))
		tcp.SetChecksum(0)
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dstAddr, uint16(len(tcp)))
		tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
		sizes[n] = len(p)
		n++
		g.off += seg
		if last {
			g.off = 0
			return n, true
		}
	}
	return n, false
}

// Write hands a batch of decrypted packets to the stack through GRO.
func (t *fastTUN) Write(bufs [][]byte, offset int) (int, error) {
	if t.closed() {
		return 0, os.ErrClosed
	}
	d := t.dispatcher()
	if d == nil {
		return len(bufs), nil
	}
	g := groPool.Get().(*gro.GRO)
	g.Dispatcher = d
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch p[0] >> 4 {
		case 4:
			proto = ipv4.ProtocolNumber
		case 6:
			proto = ipv6.ProtocolNumber
		default:
			continue // not IP: WireGuard does not pass such packets anyway
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		pkt.NetworkProtocolNumber = proto
		pkt.RXChecksumValidated = true
		g.Enqueue(pkt)
		pkt.DecRef()
	}
	g.Flush()
	g.Dispatcher = nil
	groPool.Put(g)
	return len(bufs), nil
}

func (t *fastTUN) Close() error {
	t.once.Do(func() {
		t.cancel()
		t.stack.RemoveNIC(1)
		t.stack.Close()
		t.ep.Close()
		t.stack.Wait()
		close(t.events)
	})
	return nil
}

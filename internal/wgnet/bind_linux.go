package wgnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// newBind is the UDP socket layer a Net uses unless Config.bind replaces
// it: udpBind on Linux.
func newBind() conn.Bind { return &udpBind{} }

// udpBind is WireGuard's UDP socket layer on Linux: one IPv4 and one IPv6
// socket on the same port, each sending and receiving up to
// conn.IdealBatchSize datagrams per system call (sendmmsg, recvmmsg), with
// UDP GSO on the way out and UDP GRO on the way in where the kernel has
// them. It replaces wireguard-go's StdNetBind for two reasons, both seen
// in CPU profiles of the tunnel's ends:
//
//   - StdNetBind's batches go through golang.org/x/net's ReadBatch and
//     WriteBatch, which enter recvmmsg and sendmmsg on the runtime's path
//     for system calls that may block. The sockets are non-blocking, and
//     on an idle process that path wakes the runtime's monitor thread, as
//     internal/netio explains for TCP: 8–12 % of stowaway's and the
//     agent's CPU per request on the bridge path, on its latency path
//     too. Here the calls are raw system calls inside the sockets'
//     syscall.RawConn callbacks, and a socket that is not ready makes the
//     callback return false so that the runtime's network poller waits.
//   - StdNetBind takes a fresh array of messages from a pool for every
//     call and resets all of its IdealBatchSize entries afterwards (9 % of
//     the receiving peer's CPU at full throughput). Here every receive
//     function and every sender owns its message, iovec, address and
//     control arrays, and a call fills only the entries it passes to the
//     kernel.
//
// Source addresses are not sticky (no IP_PKTINFO): replies leave by the
// kernel's route, which is what a tunnel end with one address needs.
type udpBind struct {
	smu     sync.Mutex // guards senders
	senders []*udpSender

	mu   sync.Mutex // guards the fields below
	open bool
	v4   *udpSocket // nil when closed or IPv4 is unavailable
	v6   *udpSocket // nil when closed or IPv6 is unavailable
}

var _ conn.Bind = (*udpBind)(nil)

// Limits of the kernel's UDP offloads.
const (
	// udpMaxSegments is the most datagrams one GSO send may carry and one
	// GRO datagram may hold (the kernel's UDP_MAX_SEGMENTS before 6.10 and
	// its UDP_GRO_CNT_MAX).
	udpMaxSegments = 64
	// A coalesced send's payload must fit one IP packet: 65535 less the
	// UDP header, and for IPv4 its header too (IPv6's payload length does
	// not count its own header).
	maxIPv4Payload = 1<<16 - 1 - 20 - 8
	maxIPv6Payload = 1<<16 - 1 - 8
	// socketBuffer is the send and receive buffer the sockets ask for
	// (more than net.core.[rw]mem_max allows only with CAP_NET_ADMIN), as
	// wireguard-go asks: a full batch of jumbo datagrams must fit.
	socketBuffer = 7 << 20
)

// Control message sizes: UDP_SEGMENT carries a uint16 (the kernel insists
// on exactly that length); UDP_GRO comes back as an int.
var (
	gsoCmsgLen   = unix.CmsgLen(2)
	gsoCmsgSpace = unix.CmsgSpace(2)
	groCmsgSpace = unix.CmsgSpace(4)
)

// udpSocket is one of the bind's sockets.
type udpSocket struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	is6  bool
	port uint16
	// gro: the kernel coalesces received datagrams (UDP_GRO is on), so a
	// datagram may hold several of the peer's, each gso_size long.
	gro bool
	// gso: sends may coalesce datagrams (UDP_SEGMENT); cleared for good
	// once the kernel refuses it.
	gso atomic.Bool
}

// Open opens the sockets on port (0: a free one, the same for both) and
// returns a receive function for each.
func (b *udpBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	var v4, v6 *udpSocket
	for tries := 0; ; tries++ {
		var err error
		v4, err = listenUDP("udp4", port)
		if err != nil && !errors.Is(err, syscall.EAFNOSUPPORT) {
			return nil, 0, err
		}
		p := port
		if v4 != nil {
			p = v4.port
		}
		v6, err = listenUDP("udp6", p)
		if err == nil || errors.Is(err, syscall.EAFNOSUPPORT) {
			break
		}
		if v4 != nil {
			v4.conn.Close()
		}
		// The port the kernel picked for IPv4 may be taken for IPv6:
		// pick another.
		if port == 0 && errors.Is(err, syscall.EADDRINUSE) && tries < 100 {
			continue
		}
		return nil, 0, err
	}
	var fns []conn.ReceiveFunc
	var actual uint16
	if v4 != nil {
		fns = append(fns, newUDPReceiver(v4).receiveIPv4)
		actual = v4.port
	}
	if v6 != nil {
		fns = append(fns, newUDPReceiver(v6).receiveIPv6)
		actual = v6.port
	}
	if len(fns) == 0 {
		return nil, 0, syscall.EAFNOSUPPORT
	}
	b.open, b.v4, b.v6 = true, v4, v6
	return fns, actual, nil
}

// listenUDP opens a socket of network ("udp4" or "udp6") on port of every
// address, with large buffers and the offloads the kernel has.
func listenUDP(network string, port uint16) (*udpSocket, error) {
	lc := net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) {
			s := int(fd)
			// Best effort: without CAP_NET_ADMIN the FORCE variants fail
			// and the plain ones are capped at the sysctl maximum.
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer)
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer)
			if network == "udp6" {
				// IPv4 has its own socket on the same port.
				err = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			}
		})
		return errors.Join(cerr, err)
	}}
	pc, err := lc.ListenPacket(context.Background(), network, ":"+strconv.Itoa(int(port)))
	if err != nil {
		return nil, err
	}
	c := pc.(*net.UDPConn)
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	s := &udpSocket{
		conn: c,
		rc:   rc,
		is6:  network == "udp6",
		port: uint16(c.LocalAddr().(*net.UDPAddr).Port),
	}
	err = rc.Control(func(fd uintptr) {
		// GSO needs nothing switched on: the option exists where the
		// kernel can do it (4.18 on).
		_, gsoErr := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		s.gso.Store(gsoErr == nil)
		// GRO only from 5.12 on, as wireguard-go has it: earlier kernels'
		// UDP GRO had bugs of its own.
		if kernelAtLeast(5, 12) {
			s.gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
		}
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// kernelAtLeast reports whether the running kernel's version is at least
// major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var v [2]int
	i := 0
	for _, c := range u.Release {
		if c >= '0' && c <= '9' {
			v[i] = v[i]*10 + int(c-'0')
			continue
		}
		if i++; i == len(v) {
			break
		}
	}
	return v[0] > major || v[0] == major && v[1] >= minor
}

// Close closes the sockets; their receive functions then return
// net.ErrClosed. The bind can be opened again.
func (b *udpBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, s := range []*udpSocket{b.v4, b.v6} {
		if s != nil {
			errs = append(errs, s.conn.Close())
		}
	}
	b.open, b.v4, b.v6 = false, nil, nil
	return errors.Join(errs...)
}

// SetMark sets SO_MARK (the firewall mark) on both sockets.
func (b *udpBind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range []*udpSocket{b.v4, b.v6} {
		if s == nil {
			continue
		}
		var serr error
		if err := s.rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK: %w", serr)
		}
	}
	return nil
}

// BatchSize is the most datagrams per receive and Send.
func (b *udpBind) BatchSize() int { return conn.IdealBatchSize }

// udpEndpoint is a peer's UDP address. It never changes once made, so
// one value can be handed out for every datagram from the same address.
type udpEndpoint struct {
	ap netip.AddrPort
	// scope is the IPv6 scope (interface index) of a zoned address.
	scope uint32
}

var _ conn.Endpoint = (*udpEndpoint)(nil)

// ParseEndpoint reads "ip:port" or "[ip6%zone]:port". An IPv4-mapped IPv6
// address is taken as the IPv4 address (the IPv6 socket is IPv6 only).
func (b *udpBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	e := &udpEndpoint{ap: ap}
	if zone := ap.Addr().Zone(); zone != "" {
		if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
			e.scope = uint32(n)
		} else {
			ifi, err := net.InterfaceByName(zone)
			if err != nil {
				return nil, fmt.Errorf("endpoint %s: zone: %w", s, err)
			}
			e.scope = uint32(ifi.Index)
		}
	}
	return e, nil
}

func (e *udpEndpoint) ClearSrc()           {}
func (e *udpEndpoint) SrcToString() string { return "" }
func (e *udpEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }
func (e *udpEndpoint) DstIP() netip.Addr   { return e.ap.Addr() }
func (e *udpEndpoint) DstToString() string { return e.ap.String() }

// DstToBytes is the address in binary, which WireGuard's cookies are
// made of.
func (e *udpEndpoint) DstToBytes() []byte {
	b, _ := e.ap.MarshalBinary()
	return b
}

// udpReceiver is the state of one socket's receive function.
type udpReceiver struct {
	s      *udpSocket
	readFn func(fd uintptr) bool // readFd, made once

	mu    sync.Mutex // serializes receive; guards the fields below
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // an IPv4 socket uses their first 16 bytes
	ctrl  []byte                  // groCmsgSpace per message, if gro
	// from, count: the messages handed to recvmmsg; got: how many it
	// filled; errno: its error.
	from, count, got int
	errno            syscall.Errno
	// eps are the endpoints handed out, by address, so that the same
	// address is the same value and receiving allocates nothing.
	eps map[sockKey]*udpEndpoint
}

// sockKey is a received source address.
type sockKey struct {
	addr  [16]byte
	port  uint16
	scope uint32
}

// maxCachedEndpoints bounds udpReceiver.eps; past it the map starts over.
const maxCachedEndpoints = 1024

func newUDPReceiver(s *udpSocket) *udpReceiver {
	n := conn.IdealBatchSize
	r := &udpReceiver{
		s:     s,
		msgs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		eps:   make(map[sockKey]*udpEndpoint),
	}
	if s.gro {
		r.ctrl = make([]byte, n*groCmsgSpace)
	}
	r.readFn = r.readFd
	return r
}

// receiveIPv4 and receiveIPv6 are the receive functions (their names are
// what wireguard-go's log calls them by).
func (r *udpReceiver) receiveIPv4(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return r.receive(bufs, sizes, eps)
}

func (r *udpReceiver) receiveIPv6(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return r.receive(bufs, sizes, eps)
}

// receive waits for datagrams and reads as many as are queued and fit.
// With GRO it reads coalesced datagrams into the last entries of bufs and
// splits them into the entries from the first on.
func (r *udpReceiver) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := min(len(bufs), len(sizes), len(eps), len(r.msgs))
	if n == 0 {
		return 0, nil
	}
	from := 0
	if r.s.gro {
		// A coalesced datagram splits into at most udpMaxSegments: read
		// so few that splitting the first ones cannot overwrite the
		// later ones before they are split.
		from = n - max(1, n/udpMaxSegments)
	}
	nameLen := uint32(unix.SizeofSockaddrInet4)
	if r.s.is6 {
		nameLen = unix.SizeofSockaddrInet6
	}
	for i := from; i < n; i++ {
		m := &r.msgs[i]
		m.Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		m.Hdr.Namelen = nameLen
		setIovec(&r.iovs[i], bufs[i])
		m.Hdr.Iov = &r.iovs[i]
		m.Hdr.SetIovlen(1)
		if r.ctrl != nil {
			m.Hdr.Control = &r.ctrl[i*groCmsgSpace]
			m.Hdr.SetControllen(groCmsgSpace)
		}
		m.Hdr.Flags = 0
		m.Len = 0
	}
	r.from, r.count, r.got, r.errno = from, n-from, 0, 0
	if err := r.s.rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	if !r.s.gro {
		for i := range r.got {
			sizes[i] = r.size(i)
			eps[i] = r.endpoint(i)
		}
		return r.got, nil
	}
	return r.split(bufs[:n], sizes, eps), nil
}

// split moves the datagrams read into bufs[r.from:] to the front, one
// per entry, cutting coalesced ones at their gso_size, and returns how
// many entries it filled.
func (r *udpReceiver) split(bufs [][]byte, sizes []int, eps []conn.Endpoint) int {
	out := 0
	for j := range r.got {
		i := r.from + j
		size := r.size(i)
		if size == 0 {
			continue
		}
		ep := r.endpoint(i)
		ctrl := r.ctrl[i*groCmsgSpace:][:groCmsgSpace]
		seg := groSegment(ctrl[:min(len(ctrl), int(r.msgs[i].Hdr.Controllen))])
		if seg <= 0 || seg > size {
			seg = size
		}
		// Entries up to this one's are free (read into nothing, or already
		// split); the next one holds an unsplit datagram, unless this is
		// the last.
		limit := i + 1
		if j == r.got-1 {
			limit = len(bufs)
		}
		src := bufs[i][:size]
		for off := 0; off < size && out < limit; off += seg {
			end := min(off+seg, size)
			// Where out == i the segment moves to the front of its own
			// buffer, over bytes already moved out (copy allows overlap).
			sizes[out] = copy(bufs[out], src[off:end])
			eps[out] = ep
			out++
		}
		// A peer that coalesced more than udpMaxSegments loses the rest.
	}
	return out
}

// size is the length of the datagram in message i, 0 if it did not fit.
func (r *udpReceiver) size(i int) int {
	m := &r.msgs[i]
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return 0
	}
	return int(m.Len)
}

func (r *udpReceiver) readFd(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall6(unix.SYS_RECVMMSG, fd,
			uintptr(unsafe.Pointer(&r.msgs[r.from])), uintptr(r.count), 0, 0, 0)
		switch errno {
		case 0:
			r.got = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // nothing queued: wait in the poller
		}
		r.errno = errno
		return true
	}
}

// endpoint is the sender of the datagram in message i.
func (r *udpReceiver) endpoint(i int) *udpEndpoint {
	var k sockKey
	sa := &r.names[i]
	if r.s.is6 {
		k.addr, k.scope = sa.Addr, sa.Scope_id
	} else {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		copy(k.addr[:], sa4.Addr[:])
	}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port)) // same offset in both
	k.port = uint16(p[0])<<8 | uint16(p[1])
	if e, ok := r.eps[k]; ok {
		return e
	}
	var ip netip.Addr
	if r.s.is6 {
		ip = netip.AddrFrom16(k.addr)
		if k.scope != 0 {
			zone := strconv.FormatUint(uint64(k.scope), 10)
			if ifi, err := net.InterfaceByIndex(int(k.scope)); err == nil {
				zone = ifi.Name
			}
			ip = ip.WithZone(zone)
		}
	} else {
		ip = netip.AddrFrom4([4]byte(k.addr[:4]))
	}
	if len(r.eps) >= maxCachedEndpoints {
		clear(r.eps)
	}
	e := &udpEndpoint{ap: netip.AddrPortFrom(ip, k.port), scope: k.scope}
	r.eps[k] = e
	return e
}

// groSegment finds UDP_GRO's gso_size in control messages; 0 if none.
func groSegment(ctrl []byte) int {
	for len(ctrl) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(ctrl) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO {
			data := ctrl[unix.CmsgLen(0):l]
			switch {
			case len(data) >= 4:
				return int(binary.NativeEndian.Uint32(data))
			case len(data) >= 2:
				return int(binary.NativeEndian.Uint16(data))
			}
			return 0
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(ctrl) {
			return 0
		}
		ctrl = ctrl[next:]
	}
	return 0
}

func setIovec(v *unix.Iovec, b []byte) {
	if len(b) == 0 {
		v.Base = nil
		v.SetLen(0)
		return
	}
	v.Base = &b[0]
	v.SetLen(len(b))
}

// udpSender holds the arrays of one Send at a time.
type udpSender struct {
	writeFn func(fd uintptr) bool // writeFd, made once

	msgs []unix.Mmsghdr
	iovs []unix.Iovec // one per datagram; a message takes consecutive ones
	// first is the index in the Send's bufs of each message's first
	// datagram.
	first []int
	ctrl  []byte // gsoCmsgSpace per message
	name  unix.RawSockaddrInet6
	// from, to: the messages left to send; errno: why sending stopped.
	from, to int
	errno    syscall.Errno
}

// getSender takes a sender off the free list (Send is called from many
// goroutines at once); putSender returns it.
func (b *udpBind) getSender() *udpSender {
	b.smu.Lock()
	if n := len(b.senders); n > 0 {
		s := b.senders[n-1]
		b.senders = b.senders[:n-1]
		b.smu.Unlock()
		return s
	}
	b.smu.Unlock()
	n := conn.IdealBatchSize
	s := &udpSender{
		msgs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		first: make([]int, n),
		ctrl:  make([]byte, n*gsoCmsgSpace),
	}
	s.writeFn = s.writeFd
	return s
}

func (b *udpBind) putSender(s *udpSender) {
	b.smu.Lock()
	b.senders = append(b.senders, s)
	b.smu.Unlock()
}

// Send sends bufs to ep, each one datagram, coalescing runs of equal size
// with GSO where the kernel can.
func (b *udpBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*udpEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	is6 := e.ap.Addr().Is6()
	b.mu.Lock()
	s, open := b.v4, b.open
	if is6 {
		s = b.v6
	}
	b.mu.Unlock()
	if s == nil {
		if !open {
			return net.ErrClosed
		}
		return syscall.EAFNOSUPPORT
	}
	snd := b.getSender()
	defer b.putSender(snd)
	snd.setName(e, is6)
	var errs error
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), len(snd.iovs))]
		bufs = bufs[len(chunk):]
		if err := s.send(snd, chunk); err != nil {
			var disabled conn.ErrUDPGSODisabled
			if !errors.As(err, &disabled) || disabled.RetryErr != nil {
				return err
			}
			errs = err // GSO is off now; what was sent without it arrived
		}
	}
	return errs
}

// setName makes the sender's destination address e.
func (snd *udpSender) setName(e *udpEndpoint, is6 bool) {
	port := e.ap.Port()
	if is6 {
		snd.name = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: e.ap.Addr().As16(), Scope_id: e.scope}
	} else {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&snd.name))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: e.ap.Addr().As4()}
	}
	p := (*[2]byte)(unsafe.Pointer(&snd.name.Port))
	p[0], p[1] = byte(port>>8), byte(port)
}

// send sends bufs (at most len(snd.iovs)) through s. If the kernel refuses
// a coalesced message for want of GSO, GSO goes off on s for good and the
// datagrams from that message on go again one by one; the error is then a
// conn.ErrUDPGSODisabled (wireguard-go logs it) with the retry's outcome.
func (s *udpSocket) send(snd *udpSender, bufs [][]byte) error {
	gso, retry := s.gso.Load(), false
	for {
		n := snd.prepare(bufs, gso, s.is6)
		snd.from, snd.to, snd.errno = 0, n, 0
		err := s.rc.Write(snd.writeFn)
		if err == nil && snd.errno != 0 {
			err = os.NewSyscallError("sendmmsg", snd.errno)
		}
		if retry {
			return conn.ErrUDPGSODisabled{RetryErr: err}
		}
		// EIO: the route's device cannot checksum for GSO; EINVAL: a
		// segment is too large for it, or the socket sends without
		// checksums. Either holds for the datagrams to come too.
		if snd.errno != syscall.EIO && snd.errno != syscall.EINVAL || snd.msgs[snd.from].Hdr.Control == nil {
			return err
		}
		s.gso.Store(false)
		bufs, gso, retry = bufs[snd.first[snd.from]:], false, true
	}
}

// prepare fills the messages for bufs, coalescing (if gso) each run of
// datagrams of one size, the last of which may be shorter, and returns
// how many messages there are.
func (snd *udpSender) prepare(bufs [][]byte, gso, is6 bool) int {
	maxPayload, nameLen := maxIPv4Payload, uint32(unix.SizeofSockaddrInet4)
	if is6 {
		maxPayload, nameLen = maxIPv6Payload, unix.SizeofSockaddrInet6
	}
	n := 0
	for i := 0; i < len(bufs); n++ {
		size := len(bufs[i])
		j, total := i+1, size
		if gso && size > 0 {
			for j < len(bufs) && j-i < udpMaxSegments {
				l := len(bufs[j])
				if l == 0 || l > size || total+l > maxPayload {
					break
				}
				total += l
				j++
				if l < size {
					break // a shorter datagram ends the run
				}
			}
		}
		for k := i; k < j; k++ {
			setIovec(&snd.iovs[k], bufs[k])
		}
		m := &snd.msgs[n]
		m.Hdr.Name = (*byte)(unsafe.Pointer(&snd.name))
		m.Hdr.Namelen = nameLen
		m.Hdr.Iov = &snd.iovs[i]
		m.Hdr.SetIovlen(j - i)
		m.Hdr.Control = nil
		m.Hdr.SetControllen(0)
		if j-i > 1 {
			c := snd.ctrl[n*gsoCmsgSpace:][:gsoCmsgSpace]
			h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			h.SetLen(gsoCmsgLen)
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(size))
			m.Hdr.Control = &c[0]
			m.Hdr.SetControllen(gsoCmsgSpace)
		}
		m.Hdr.Flags = 0
		m.Len = 0
		snd.first[n] = i
		i = j
	}
	return n
}

func (snd *udpSender) writeFd(fd uintptr) bool {
	for snd.from < snd.to {
		n, _, errno := syscall.RawSyscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&snd.msgs[snd.from])), uintptr(snd.to-snd.from), 0, 0, 0)
		switch errno {
		case 0:
			if n == 0 {
				return false // nothing went: wait until the socket can send
			}
			snd.from += int(n)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the send buffer is full: wait in the poller
		}
		snd.errno = errno
		return true
	}
	return true
}

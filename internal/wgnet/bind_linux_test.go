package wgnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// testBind is an open udpBind with its receive functions.
type testBind struct {
	*udpBind
	port uint16
	fns  []conn.ReceiveFunc
}

func openBind(t testing.TB) *testBind {
	t.Helper()
	b := newBind().(*udpBind)
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if b.v4 == nil {
		t.Skip("no IPv4")
	}
	return &testBind{udpBind: b, port: port, fns: fns}
}

func (tb *testBind) endpoint(t testing.TB, ip string) conn.Endpoint {
	t.Helper()
	ep, err := tb.ParseEndpoint(net.JoinHostPort(ip, strconv.Itoa(int(tb.port))))
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// rxPacket is a received datagram and the address it came from.
type rxPacket struct {
	data []byte
	from string
}

// collect runs every receive function of tb, as wireguard-go does, until
// the bind is closed, and passes on each datagram.
func (tb *testBind) collect(t testing.TB) <-chan rxPacket {
	ch := make(chan rxPacket, 4096)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, fn := range tb.fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := tb.BatchSize()
			bufs, sizes, eps := make([][]byte, n), make([]int, n), make([]conn.Endpoint, n)
			for i := range bufs {
				bufs[i] = make([]byte, 1<<16-1)
			}
			for {
				got, err := fn(bufs, sizes, eps)
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						t.Errorf("receive: %v", err)
					}
					return
				}
				for i := range got {
					if sizes[i] == 0 {
						continue
					}
					select {
					case ch <- rxPacket{bytes.Clone(bufs[i][:sizes[i]]), eps[i].DstToString()}:
					case <-done:
						return
					}
				}
			}
		}()
	}
	t.Cleanup(func() {
		close(done)
		tb.Close()
		wg.Wait()
	})
	return ch
}

// packet is datagram seq of a test, size bytes that say which it is.
func packet(seq, size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(seq*7 + i)
	}
	if size >= 4 {
		binary.BigEndian.PutUint32(p, uint32(seq))
	}
	return p
}

// expect receives len(want) datagrams from ch and checks them, in order,
// and their source.
func expect(t *testing.T, ch <-chan rxPacket, want [][]byte, from string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i, w := range want {
		select {
		case p := <-ch:
			if !bytes.Equal(p.data, w) {
				t.Fatalf("datagram %d: got %d bytes %x…, want %d bytes %x…", i, len(p.data), head(p.data), len(w), head(w))
			}
			if p.from != from {
				t.Fatalf("datagram %d from %s, want %s", i, p.from, from)
			}
		case <-timeout:
			t.Fatalf("received %d of %d datagrams", i, len(want))
		}
	}
	select {
	case p := <-ch:
		t.Fatalf("an extra datagram of %d bytes", len(p.data))
	case <-time.After(20 * time.Millisecond):
	}
}

func head(b []byte) []byte { return b[:min(len(b), 8)] }

func repeat(n, size int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = size
	}
	return out
}

// loopbacks are the address families to test: IPv6 only where the
// machine has it.
func loopbacks(t *testing.T) []string {
	out := []string{"127.0.0.1"}
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err == nil {
		c.Close()
		out = append(out, "::1")
	} else {
		t.Logf("no IPv6 loopback: %v", err)
	}
	return out
}

func TestBindBatches(t *testing.T) {
	a, b := openBind(t), openBind(t)
	if a.port == b.port {
		t.Fatalf("both binds on port %d", a.port)
	}
	ra, rb := a.collect(t), b.collect(t)
	tests := []struct {
		name  string
		sizes []int
	}{
		{"one", []int{148}},
		{"equal and a short last", append(repeat(100, 1452), 300)},
		{"a full batch", repeat(conn.IdealBatchSize, 1452)},
		{"more than a batch", repeat(300, 200)},
		{"jumbo past the payload limit", append(repeat(20, 8952), 1000)},
		{"shrinking", []int{1000, 900, 800, 800, 800, 700, 1200, 1200}},
		{"mixed", []int{60, 1452, 1452, 200, 1452, 1452, 1452, 1452, 32, 32, 9000, 1}},
		{"tiny", repeat(100, 1)},
		{"the largest", []int{maxIPv4Payload, maxIPv4Payload}},
	}
	seq := 0
	for _, ip := range loopbacks(t) {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/%s", ip, tt.name), func(t *testing.T) {
				for _, dir := range []struct {
					from, to *testBind
					rx       <-chan rxPacket
				}{{a, b, rb}, {b, a, ra}} {
					bufs := make([][]byte, len(tt.sizes))
					for i, size := range tt.sizes {
						seq++
						bufs[i] = packet(seq, size)
					}
					if err := dir.from.Send(bufs, dir.to.endpoint(t, ip)); err != nil {
						t.Fatal(err)
					}
					expect(t, dir.rx, bufs, net.JoinHostPort(ip, strconv.Itoa(int(dir.from.port))))
				}
			})
		}
	}
}

// groSocket is a plain UDP socket with UDP_GRO on, to see what a bind
// sends as the kernel has it.
func groSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, _ := c.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) })
	if serr != nil {
		t.Skipf("no UDP GRO: %v", serr)
	}
	return c
}

// readGRO reads one datagram from c and its gso_size (0 if none).
func readGRO(t *testing.T, c *net.UDPConn) ([]byte, int) {
	t.Helper()
	buf, oob := make([]byte, 1<<16), make([]byte, 128)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, _, _, err := c.ReadMsgUDP(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_UDP && m.Header.Type == unix.UDP_GRO {
			return buf[:n], int(binary.NativeEndian.Uint16(m.Data))
		}
	}
	return buf[:n], 0
}

func TestBindSendCoalesces(t *testing.T) {
	a := openBind(t)
	if !a.v4.gso.Load() {
		t.Skip("the kernel has no UDP GSO")
	}
	c := groSocket(t)
	ep, err := a.ParseEndpoint(c.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	// 40 of 1000 bytes and a short one make one datagram; 100 of 700
	// make two, split at udpMaxSegments.
	tests := []struct {
		name  string
		sizes []int
		want  []int // datagram sizes on the wire
		seg   []int // and their gso_size (0: not coalesced)
	}{
		{"a run and a short last", append(repeat(40, 1000), 10), []int{40010}, []int{1000}},
		{"more than the kernel's segments", repeat(100, 700), []int{64 * 700, 36 * 700}, []int{700, 700}},
		{"a larger one starts a new run", []int{500, 500, 600, 600}, []int{1000, 1200}, []int{500, 600}},
		{"alone", []int{1452}, []int{1452}, []int{0}},
	}
	seq := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bufs := make([][]byte, len(tt.sizes))
			var all []byte
			for i, size := range tt.sizes {
				seq++
				bufs[i] = packet(seq, size)
				all = append(all, bufs[i]...)
			}
			if err := a.Send(bufs, ep); err != nil {
				t.Fatal(err)
			}
			var got []byte
			for i := range tt.want {
				d, seg := readGRO(t, c)
				if len(d) != tt.want[i] || seg != tt.seg[i] {
					t.Errorf("datagram %d: %d bytes, gso_size %d; want %d, %d", i, len(d), seg, tt.want[i], tt.seg[i])
				}
				got = append(got, d...)
			}
			if !bytes.Equal(got, all) {
				t.Error("the datagrams do not carry what was sent")
			}
		})
	}
}

// sendGSO sends the concatenation of bufs from c to to as one datagram
// that the kernel segments at seg bytes.
func sendGSO(t *testing.T, c *net.UDPConn, to netip.AddrPort, seg int, bufs [][]byte) {
	t.Helper()
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))
	if _, _, err := c.WriteMsgUDPAddrPort(bytes.Join(bufs, nil), oob, to); err != nil {
		t.Skipf("cannot send with UDP GSO: %v", err)
	}
}

func TestBindReceiveSplits(t *testing.T) {
	b := openBind(t)
	if !b.v4.gro {
		t.Skip("the kernel has no UDP GRO")
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.port)
	from := c.LocalAddr().String()
	recv := b.fns[0] // IPv4's

	tests := []struct {
		name  string
		sizes []int
		batch int // receive buffers
		want  int // datagrams received: the rest do not fit
	}{
		{"equal and a short last", append(repeat(30, 1200), 77), conn.IdealBatchSize, 31},
		{"exactly the segment size", repeat(10, 1452), conn.IdealBatchSize, 10},
		{"fills a small batch", repeat(20, 100), 8, 8},
		{"one buffer", repeat(5, 100), 1, 1},
	}
	seq := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bufs := make([][]byte, len(tt.sizes))
			for i, size := range tt.sizes {
				seq++
				bufs[i] = packet(seq, size)
			}
			sendGSO(t, c, to, tt.sizes[0], bufs)
			rbufs, sizes, eps := make([][]byte, tt.batch), make([]int, tt.batch), make([]conn.Endpoint, tt.batch)
			for i := range rbufs {
				rbufs[i] = make([]byte, 1<<16-1)
			}
			n, err := recv(rbufs, sizes, eps)
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.want {
				t.Fatalf("received %d datagrams, want %d", n, tt.want)
			}
			for i := range n {
				if !bytes.Equal(rbufs[i][:sizes[i]], bufs[i]) {
					t.Fatalf("datagram %d: %d bytes %x…, want %d bytes %x…", i, sizes[i], head(rbufs[i]), len(bufs[i]), head(bufs[i]))
				}
				if eps[i].DstToString() != from {
					t.Fatalf("datagram %d from %s, want %s", i, eps[i].DstToString(), from)
				}
			}
		})
	}
}

func TestBindGSOFallback(t *testing.T) {
	a, b := openBind(t), openBind(t)
	if !a.v4.gso.Load() {
		t.Skip("the kernel has no UDP GSO")
	}
	rb := b.collect(t)
	// Without UDP checksums the kernel refuses GSO (EINVAL), as it does
	// (EIO) where the device cannot checksum.
	var serr error
	a.v4.rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) })
	if serr != nil {
		t.Fatal(serr)
	}
	bufs := [][]byte{packet(1, 500), packet(2, 300), packet(3, 300), packet(4, 300), packet(5, 100)}
	ep := b.endpoint(t, "127.0.0.1")
	err := a.Send(bufs, ep)
	var disabled conn.ErrUDPGSODisabled
	if !errors.As(err, &disabled) || disabled.RetryErr != nil {
		t.Fatalf("Send = %v, want conn.ErrUDPGSODisabled without a RetryErr", err)
	}
	if a.v4.gso.Load() {
		t.Error("GSO still on")
	}
	from := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(a.port)))
	expect(t, rb, bufs, from)
	if err := a.Send(bufs, ep); err != nil {
		t.Fatalf("Send without GSO: %v", err)
	}
	expect(t, rb, bufs, from)
}

func TestBindEndpoints(t *testing.T) {
	b := newBind()
	tests := []struct {
		name, in, want string // want "": an error
	}{
		{"IPv4", "127.0.0.1:51820", "127.0.0.1:51820"},
		{"IPv6", "[::1]:5", "[::1]:5"},
		{"IPv4-mapped", "[::ffff:10.0.0.1]:7", "10.0.0.1:7"},
		{"numeric zone", "[fe80::1%1]:9", "[fe80::1%1]:9"},
		{"port 0", "10.1.2.3:0", "10.1.2.3:0"},
		{"no port", "127.0.0.1", ""},
		{"a name", "localhost:51820", ""},
		{"port out of range", "127.0.0.1:65536", ""},
		{"unknown zone", "[fe80::1%no-such-if0]:9", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep, err := b.ParseEndpoint(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ParseEndpoint(%q) = %s, want an error", tt.in, ep.DstToString())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ep.DstToString(); got != tt.want {
				t.Errorf("DstToString = %q, want %q", got, tt.want)
			}
			ap := netip.MustParseAddrPort(tt.want)
			if ep.DstIP() != ap.Addr() {
				t.Errorf("DstIP = %s, want %s", ep.DstIP(), ap.Addr())
			}
			wantBytes, _ := ap.MarshalBinary()
			if !bytes.Equal(ep.DstToBytes(), wantBytes) {
				t.Errorf("DstToBytes = %x, want %x", ep.DstToBytes(), wantBytes)
			}
			ep.ClearSrc()
			if ep.SrcToString() != "" || ep.SrcIP().IsValid() {
				t.Errorf("source %q %s, want none", ep.SrcToString(), ep.SrcIP())
			}
		})
	}
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"127.0.0.1:51820", "[::1]:5", "[::ffff:10.0.0.1]:7", "[fe80::1%1]:9", "1.2.3.4", ":", "[::1%]:1"} {
		f.Add(s)
	}
	b := newBind()
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := b.ParseEndpoint(s)
		if err != nil {
			return
		}
		again, err := b.ParseEndpoint(ep.DstToString())
		if err != nil {
			t.Fatalf("ParseEndpoint(%q) gave %q, which does not parse: %v", s, ep.DstToString(), err)
		}
		if again.DstToString() != ep.DstToString() || !bytes.Equal(again.DstToBytes(), ep.DstToBytes()) {
			t.Fatalf("%q: %q then %q", s, ep.DstToString(), again.DstToString())
		}
	})
}

func TestBindCloseUnblocksReceive(t *testing.T) {
	b := openBind(t)
	errc := make(chan error, len(b.fns))
	for _, fn := range b.fns {
		go func() {
			bufs, sizes, eps := [][]byte{make([]byte, 1500)}, make([]int, 1), make([]conn.Endpoint, 1)
			_, err := fn(bufs, sizes, eps)
			errc <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // let them wait
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for range b.fns {
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("receive after Close = %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("receive still waiting after Close")
		}
	}
	if err := b.Send([][]byte{{1}}, b.endpoint(t, "127.0.0.1")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close = %v, want net.ErrClosed", err)
	}
}

func TestBindReopen(t *testing.T) {
	a := openBind(t)
	if _, _, err := a.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Fatalf("second Open = %v, want conn.ErrBindAlreadyOpen", err)
	}
	port := a.port
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	fns, got, err := a.Open(port)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	if got != port {
		t.Fatalf("reopened on port %d, want %d", got, port)
	}
	a.fns = fns
	ra := a.collect(t)
	b := openBind(t)
	// Both families answer on the one port.
	for i, ip := range loopbacks(t) {
		bufs := [][]byte{packet(i, 100)}
		if err := b.Send(bufs, a.endpoint(t, ip)); err != nil {
			t.Fatal(err)
		}
		expect(t, ra, bufs, net.JoinHostPort(ip, strconv.Itoa(int(b.port))))
	}
}

func TestBindConcurrentSends(t *testing.T) {
	a, b := openBind(t), openBind(t)
	rb := b.collect(t)
	const senders, sends, batch = 4, 25, 16
	ep := b.endpoint(t, "127.0.0.1")
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range sends {
				bufs := make([][]byte, batch)
				for j := range bufs {
					bufs[j] = packet((s*sends+i)*batch+j, 200)
				}
				if err := a.Send(bufs, ep); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	seen := make(map[uint32]bool)
	timeout := time.After(10 * time.Second)
	for len(seen) < senders*sends*batch {
		select {
		case p := <-rb:
			seq := binary.BigEndian.Uint32(p.data)
			if seen[seq] || !bytes.Equal(p.data, packet(int(seq), 200)) {
				t.Fatalf("datagram %d duplicated or damaged", seq)
			}
			seen[seq] = true
		case <-timeout:
			t.Fatalf("received %d of %d datagrams", len(seen), senders*sends*batch)
		}
	}
}

func TestBindSetMark(t *testing.T) {
	b := openBind(t)
	if err := b.SetMark(42); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skip("setting SO_MARK needs CAP_NET_ADMIN")
		}
		t.Fatal(err)
	}
	for _, s := range []*udpSocket{b.v4, b.v6} {
		if s == nil {
			continue
		}
		var mark int
		var gerr error
		s.rc.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
		if gerr != nil || mark != 42 {
			t.Errorf("SO_MARK = %d, %v; want 42", mark, gerr)
		}
	}
}

// TestBindNoAllocs: a batch out and back in allocates nothing once the
// sender's arrays exist and the peer's endpoint is known.
func TestBindNoAllocs(t *testing.T) {
	a, b := openBind(t), openBind(t)
	ep := b.endpoint(t, "127.0.0.1")
	out := make([][]byte, 16)
	for i := range out {
		out[i] = packet(i, 1400)
	}
	n := b.BatchSize()
	bufs, sizes, eps := make([][]byte, n), make([]int, n), make([]conn.Endpoint, n)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16-1)
	}
	roundTrip := func() {
		if err := a.Send(out, ep); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(out); {
			m, err := b.fns[0](bufs, sizes, eps)
			if err != nil {
				t.Fatal(err)
			}
			got += m
		}
	}
	roundTrip()
	if allocs := testing.AllocsPerRun(100, roundTrip); allocs != 0 {
		t.Errorf("%v allocations per batch, want 0", allocs)
	}
}

// BenchmarkBind sends batches of WireGuard-sized datagrams from one bind
// to another over loopback and receives them: this package's bind against
// wireguard-go's.
func BenchmarkBind(b *testing.B) {
	for _, bc := range []struct {
		name string
		bind func() conn.Bind
	}{{"bind=std", conn.NewDefaultBind}, {"bind=linux", newBind}} {
		for _, size := range []int{1452, 148} {
			b.Run(fmt.Sprintf("%s/size=%d", bc.name, size), func(b *testing.B) {
				tx, rx := bc.bind(), bc.bind()
				if _, _, err := tx.Open(0); err != nil {
					b.Fatal(err)
				}
				defer tx.Close()
				fns, port, err := rx.Open(0)
				if err != nil {
					b.Fatal(err)
				}
				defer rx.Close()
				ep, err := tx.ParseEndpoint(fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					b.Fatal(err)
				}
				const batch = 64
				out := make([][]byte, batch)
				for i := range out {
					// Room behind each, as in wireguard-go's buffers:
					// StdNetBind coalesces into it.
					out[i] = append(make([]byte, 0, 1<<16-1), packet(i, size)...)
				}
				n := rx.BatchSize()
				bufs, sizes, eps := make([][]byte, n), make([]int, n), make([]conn.Endpoint, n)
				for i := range bufs {
					bufs[i] = make([]byte, 1<<16-1)
				}
				b.SetBytes(batch * int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if err := tx.Send(out, ep); err != nil {
						b.Fatal(err)
					}
					for got := 0; got < batch; {
						m, err := fns[0](bufs, sizes, eps)
						if err != nil {
							b.Fatal(err)
						}
						got += m
					}
				}
			})
		}
	}
}

package wgnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// wire moves packets between two batched stacks' TUN devices, the way
// WireGuard does (Read a batch, Write it to the other side), and checks
// every packet on the way as a kernel receiving it would: the stacks
// themselves trust their input (RX checksum offload), so only this check
// sees a packet the segmenter got wrong.
type wire struct {
	mtu, batch int
	wg         sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	bad     []string
	packets int
	fins    int
	largest int
}

func (w *wire) pump(from, to *fastTUN) {
	defer w.wg.Done()
	const offset = 16 // WireGuard reads behind room for its header
	bufs := make([][]byte, w.batch)
	for i := range bufs {
		bufs[i] = make([]byte, offset+1<<16)
	}
	sizes := make([]int, w.batch)
	for {
		n, err := from.Read(bufs, sizes, offset)
		if err != nil {
			return
		}
		out := make([][]byte, 0, n)
		for i := 0; i < n; i++ {
			p := bufs[i][offset : offset+sizes[i]]
			w.check(p)
			out = append(out, bufs[i][:offset+sizes[i]])
		}
		if _, err := to.Write(out, offset); err != nil {
			return
		}
	}
}

func (w *wire) fail(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.bad) < 10 {
		w.bad = append(w.bad, fmt.Sprintf(format, args...))
	}
}

func (w *wire) check(p []byte) {
	if len(p) > w.mtu {
		w.fail("packet of %d bytes, MTU %d", len(p), w.mtu)
	}
	var src, dst tcpip.Address
	var proto uint8
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || !ip.IsChecksumValid() || int(ip.TotalLength()) != len(p) {
			w.fail("bad IPv4 header % x", p[:header.IPv4MinimumSize])
			return
		}
		src, dst, proto, l4 = ip.SourceAddress(), ip.DestinationAddress(), ip.Protocol(), ip.Payload()
	case 6:
		ip := header.IPv6(p)
		if !ip.IsValid(len(p)) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(p) {
			w.fail("bad IPv6 header % x", p[:header.IPv6MinimumSize])
			return
		}
		src, dst, proto, l4 = ip.SourceAddress(), ip.DestinationAddress(), uint8(ip.NextHeader()), ip.Payload()
	default:
		w.fail("not IP: % x", p[:1])
		return
	}
	if proto != uint8(header.TCPProtocolNumber) {
		return
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(l4)))
	if checksum.Checksum(l4, xsum) != 0xffff {
		w.fail("bad TCP checksum in a packet of %d bytes", len(p))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.packets++
	w.largest = max(w.largest, len(p))
	if header.TCP(l4).Flags().Contains(header.TCPFlagFin) {
		w.fins++
	}
}

// TestSegmentation sends bulk data between two batched stacks wired
// directly together: TCP hands the link segments of up to 64 KiB, which
// must leave as valid packets of at most the MTU, also when one Read has
// room for only part of a segment.
func TestSegmentation(t *testing.T) {
	tests := []struct {
		name       string
		a, b       string
		mtu, batch int
	}{
		{name: "IPv4 default MTU", a: "10.7.0.1", b: "10.7.0.2", mtu: DefaultMTU, batch: batchSize},
		{name: "IPv4 minimum MTU, short batches", a: "10.7.0.1", b: "10.7.0.2", mtu: MinMTU, batch: 3},
		{name: "IPv4 jumbo MTU", a: "10.7.0.1", b: "10.7.0.2", mtu: 8920, batch: batchSize},
		{name: "IPv6 default MTU, short batches", a: "fd07::1", b: "fd07::2", mtu: DefaultMTU, batch: 5},
		{name: "IPv6 jumbo MTU", a: "fd07::1", b: "fd07::2", mtu: 8920, batch: batchSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := newFastStack(netip.MustParseAddr(tt.a), tt.mtu, false)
			if err != nil {
				t.Fatal(err)
			}
			b, err := newFastStack(netip.MustParseAddr(tt.b), tt.mtu, false)
			if err != nil {
				a.dev.Close()
				t.Fatal(err)
			}
			w := &wire{mtu: tt.mtu, batch: tt.batch}
			w.wg.Add(2)
			go w.pump(a.dev, b.dev)
			go w.pump(b.dev, a.dev)
			defer func() {
				a.dev.Close()
				b.dev.Close()
				w.wg.Wait()
			}()

			const size = 4 << 20
			sum, err := sendThrough(a, b, netip.MustParseAddr(tt.b), size)
			if err != nil {
				t.Fatal(err)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, b := range w.bad {
				t.Error(b)
			}
			if !sum {
				t.Error("the data arrived changed")
			}
			// Every byte went in full-sized packets but the last of each
			// segment; a stack that sent MTU-sized segments itself (no
			// GSO) would pass too, so the size is checked as well.
			if min := size / tt.mtu; w.packets < min {
				t.Errorf("%d TCP packets, want at least %d", w.packets, min)
			}
			if w.largest < tt.mtu-100 {
				t.Errorf("largest packet %d bytes, want near the MTU %d", w.largest, tt.mtu)
			}
			if w.fins < 2 {
				t.Errorf("%d FINs, want both sides' (at least 2)", w.fins)
			}
		})
	}
}

// sendThrough sends size random bytes from a to b's address over TCP and
// reports whether b received them unchanged; both sides then close.
func sendThrough(a, b *fastStack, to netip.Addr, size int) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := b.listenTCP(netip.AddrPortFrom(to, 7000))
	if err != nil {
		return false, err
	}
	defer l.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, c)
		c.Close()
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		res <- r
	}()
	c, err := a.dialTCP(ctx, netip.AddrPortFrom(to, 7000))
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	if _, err := io.Copy(c, io.TeeReader(io.LimitReader(rand.Reader, int64(size)), h)); err != nil {
		return false, fmt.Errorf("send: %w", err)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		return false, errors.New("the receiver did not finish")
	}
	if r.err != nil {
		return false, r.err
	}
	if r.n != int64(size) {
		return false, fmt.Errorf("received %d bytes, want %d", r.n, size)
	}
	// The receiver's FIN, so both FINs cross the wire.
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return false, err
	}
	return bytes.Equal(r.sum[:], h.Sum(nil)), nil
}

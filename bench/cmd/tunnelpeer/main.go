// Package main is command tunnelpeer: one end of the benchmark's bulk transfer, run by
// the harness inside a network namespace (ip netns exec). With -tunnel it
// is a wgnet endpoint (userspace WireGuard on gVisor's netstack) and the
// transfer runs inside the tunnel; without it the transfer is plain TCP
// over the namespace's interface.
//
// The server accepts one connection and reads its first byte: 'S' means
// the client sends -bytes bytes, 'R' that the server does. When the
// transfer is done, each side prints one JSON line with the bytes moved,
// the wall time of the transfer and its own CPU time (user+system, whole
// process). With -cpuprofile FILE it writes a CPU profile of the transfer
// to FILE.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	"gefyra.dev/gefyra/internal/wgnet"
)

// Result is the line each side prints.
type Result struct {
	Role   string `json:"role"`
	Sender bool   `json:"sender"`
	// Acked is false when the sender got no acknowledgement within 5s of
	// its half-close (the receiver's numbers still stand).
	Acked      bool    `json:"acked"`
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tunnelpeer:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tunnelpeer", flag.ContinueOnError)
	role := fs.String("role", "", "server or client")
	listen := fs.String("listen", "", "server: TCP address to listen on (inside the tunnel with -tunnel)")
	connect := fs.String("connect", "", "client: TCP address to connect to")
	dir := fs.String("dir", "S", "client: S = client sends, R = server sends")
	size := fs.Int64("bytes", 256<<20, "bytes to move")
	tunnel := fs.Bool("tunnel", false, "run the transfer inside a wgnet tunnel")
	key := fs.String("key", "", "-tunnel: this end's private key (base64)")
	peer := fs.String("peer", "", "-tunnel: the other end's public key (base64)")
	peerEndpoint := fs.String("peer-endpoint", "", "-tunnel: the other end's UDP address")
	udpPort := fs.Int("udp-port", 51820, "-tunnel: UDP port to listen on")
	addr := fs.String("addr", "", "-tunnel: this end's tunnel address")
	peerAddr := fs.String("peer-addr", "", "-tunnel: the other end's tunnel address")
	mtu := fs.Int("mtu", wgnet.DefaultMTU, "-tunnel: tunnel MTU")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the transfer to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *role != "server" && *role != "client" {
		return errors.New("-role must be server or client")
	}
	if *dir != "S" && *dir != "R" {
		return errors.New("-dir must be S or R")
	}
	if *size <= 0 {
		return errors.New("-bytes must be positive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	listenFn := func(a string) (net.Listener, error) { return net.Listen("tcp", a) }
	dialFn := func(ctx context.Context, a string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", a)
	}
	if *tunnel {
		n, err := endpoint(*key, *peer, *peerEndpoint, *addr, *peerAddr, *udpPort, *mtu)
		if err != nil {
			return err
		}
		defer n.Close()
		listenFn = func(a string) (net.Listener, error) { return n.Listen("tcp", a) }
		dialFn = func(ctx context.Context, a string) (net.Conn, error) { return n.DialContext(ctx, "tcp", a) }
	}

	var c net.Conn
	var sends bool
	var err error
	if *role == "server" {
		l, err := listenFn(*listen)
		if err != nil {
			return err
		}
		defer l.Close()
		fmt.Fprintln(stdout, "ready")
		go func() { <-ctx.Done(); l.Close() }()
		c, err = l.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		var cmd [1]byte
		if _, err := io.ReadFull(c, cmd[:]); err != nil {
			return fmt.Errorf("read the direction: %w", err)
		}
		sends = cmd[0] == 'R'
	} else {
		for {
			c, err = dialFn(ctx, *connect)
			if err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("dial %s: %w", *connect, err)
		}
		if _, err := c.Write([]byte(*dir)); err != nil {
			return err
		}
		sends = *dir == "S"
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()

	var prof *os.File
	if *cpuProfile != "" {
		if prof, err = os.Create(*cpuProfile); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer prof.Close()
		if err := pprof.StartCPUProfile(prof); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
	}
	n, elapsed, err := transfer(c, sends, *size)
	if prof != nil {
		pprof.StopCPUProfile()
		if cerr := prof.Close(); cerr != nil {
			return fmt.Errorf("-cpuprofile: %w", cerr)
		}
	}
	acked := true
	if errors.Is(err, errNoAck) {
		acked, err = false, nil
	}
	if err != nil {
		return err
	}
	if n != *size {
		return fmt.Errorf("moved %d bytes, want %d", n, *size)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return err
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return json.NewEncoder(stdout).Encode(Result{Role: *role, Sender: sends, Bytes: n, Seconds: elapsed.Seconds(), CPUSeconds: cpu.Seconds(), Acked: acked})
}

func endpoint(key, peer, peerEndpoint, addr, peerAddr string, port, mtu int) (*wgnet.Net, error) {
	priv, err := wgnet.ParseKey(key)
	if err != nil {
		return nil, fmt.Errorf("-key: %w", err)
	}
	pub, err := wgnet.ParseKey(peer)
	if err != nil {
		return nil, fmt.Errorf("-peer: %w", err)
	}
	ep, err := netip.ParseAddrPort(peerEndpoint)
	if err != nil {
		return nil, fmt.Errorf("-peer-endpoint: %w", err)
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("-addr: %w", err)
	}
	pa, err := netip.ParseAddr(peerAddr)
	if err != nil {
		return nil, fmt.Errorf("-peer-addr: %w", err)
	}
	return wgnet.New(wgnet.Config{
		PrivateKey: priv, ListenPort: port, Address: a, MTU: mtu,
		Peers: []wgnet.Peer{{PublicKey: pub, AllowedIPs: []netip.Prefix{netip.PrefixFrom(pa, pa.BitLen())}, Endpoint: ep}},
	})
}

// transfer moves size bytes over c and returns how long that took: for
// the receiver from the direction byte to the last byte of data (the
// measurement), for the sender until the receiver acknowledged them.
//
// The end is a handshake that keeps both processes, and with -tunnel their
// userspace network stacks, alive until the other side has everything it
// waits for; a stack that goes away takes the segments it has not sent yet
// with it (unlike the kernel, which keeps sending after a process exits):
//
//  1. the receiver reads exactly size bytes and answers with one byte;
//  2. the sender reads that acknowledgement, then half-closes;
//  3. the receiver waits for that FIN, the proof that the acknowledgement
//     arrived, before it exits; the sender waits briefly for the
//     receiver's FIN in turn, so its own FIN is not cut off either.
func transfer(c net.Conn, sends bool, size int64) (int64, time.Duration, error) {
	start := time.Now()
	var ack [1]byte
	buf := make([]byte, 256<<10)
	if sends {
		n, err := io.CopyBuffer(c, io.LimitReader(zeros{}, size), buf)
		if err != nil {
			return n, time.Since(start), err
		}
		// The receiver's clock is the measurement; a lost acknowledgement
		// is reported, not fatal.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			return n, time.Since(start), errNoAck
		}
		elapsed := time.Since(start)
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			return n, elapsed, err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, c)
		return n, elapsed, nil
	}
	n, err := io.CopyBuffer(io.Discard, io.LimitReader(c, size), buf)
	elapsed := time.Since(start)
	if err != nil {
		return n, elapsed, err
	}
	if n < size {
		return n, elapsed, fmt.Errorf("the sender closed after %d of %d bytes", n, size)
	}
	ack[0] = 'K'
	if _, err := c.Write(ack[:]); err != nil {
		return n, elapsed, err
	}
	// The sender's FIN follows the acknowledgement's arrival. Anything
	// else, or no FIN in time, leaves the sender to report the loss.
	c.SetReadDeadline(time.Now().Add(6 * time.Second))
	io.Copy(io.Discard, c)
	return n, elapsed, nil
}

var errNoAck = errors.New("no acknowledgement from the receiver")

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

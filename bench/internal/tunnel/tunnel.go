// Package tunnel measures bulk TCP throughput between two network
// namespaces the benchmark creates and removes: plain TCP over a veth
// pair, and the same transfer inside a wgnet WireGuard tunnel between two
// tunnelpeer processes, one in each namespace. Only the two veths get
// addresses (10.251.0.1/30 and 10.251.0.2/30); nothing else on the host
// changes. Profile repeats a transfer with CPU profiles of both peers.
package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gefyra.dev/gefyra/bench/internal/profile"
	"gefyra.dev/gefyra/bench/internal/report"
	"gefyra.dev/gefyra/internal/wgnet"
)

// Names of what Setup creates.
const (
	NSA   = "gefyra-bench-a"
	NSB   = "gefyra-bench-b"
	VethA = "gfbench-a"
	VethB = "gfbench-b"
	AddrA = "10.251.0.1"
	AddrB = "10.251.0.2"
	// Tunnel addresses live only inside the userspace stacks.
	TunA = "10.251.1.1"
	TunB = "10.251.1.2"
)

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Setup creates both namespaces and the veth pair between them, removing
// leftovers of an earlier run first. Call Teardown afterwards, also when
// Setup fails.
func Setup(ctx context.Context) error {
	Teardown()
	steps := [][]string{
		{"netns", "add", NSA},
		{"netns", "add", NSB},
		{"link", "add", VethA, "netns", NSA, "type", "veth", "peer", "name", VethB, "netns", NSB},
		{"-n", NSA, "addr", "add", AddrA + "/30", "dev", VethA},
		{"-n", NSB, "addr", "add", AddrB + "/30", "dev", VethB},
		{"-n", NSA, "link", "set", "lo", "up"},
		{"-n", NSB, "link", "set", "lo", "up"},
		{"-n", NSA, "link", "set", VethA, "up"},
		{"-n", NSB, "link", "set", VethB, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// SetMTU sets both veths' MTU.
func SetMTU(ctx context.Context, mtu int) error {
	if err := ip(ctx, "-n", NSA, "link", "set", VethA, "mtu", fmt.Sprint(mtu)); err != nil {
		return err
	}
	return ip(ctx, "-n", NSB, "link", "set", VethB, "mtu", fmt.Sprint(mtu))
}

// Teardown deletes both namespaces (which deletes the veths in them).
// Missing ones are not an error.
func Teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ns := range []string{NSA, NSB} {
		exec.CommandContext(ctx, "ip", "netns", "del", ns).Run()
	}
}

// Run is one transfer's setting.
type Run struct {
	// Peer is the tunnelpeer binary.
	Peer string
	// Tunnel selects the wgnet tunnel; false is plain TCP over the veth.
	Tunnel bool
	// MTU of the tunnel (Tunnel only).
	MTU int
	// Upload: the client in NSA sends to the server in NSB; false is the
	// other way.
	Upload bool
	// Bytes to move.
	Bytes int64
	// SenderProfile and ReceiverProfile, when set, are files the sending
	// and the receiving peer write a CPU profile of the transfer to
	// (tunnelpeer -cpuprofile).
	SenderProfile, ReceiverProfile string
}

// Result is one transfer's outcome.
type Result struct {
	Bytes   int64
	Seconds float64
	// CPUSeconds is both peers' CPU time together.
	CPUSeconds float64
	// LostAck: the receiver's one-byte acknowledgement of the end never
	// reached the sender (within 5s).
	LostAck bool
}

// MBps is the throughput in MB/s (10^6 bytes).
func (r Result) MBps() float64 { return float64(r.Bytes) / r.Seconds / 1e6 }

// CPUPerGB is CPU seconds (both peers) per GB moved.
func (r Result) CPUPerGB() float64 { return r.CPUSeconds / (float64(r.Bytes) / 1e9) }

type peerResult struct {
	Sender     bool    `json:"sender"`
	Acked      bool    `json:"acked"`
	Bytes      int64   `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpu_seconds"`
}

// Transfer runs one transfer between the namespaces.
func Transfer(ctx context.Context, r Run) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	dir := "R"
	if r.Upload {
		dir = "S"
	}
	common := []string{"-bytes", fmt.Sprint(r.Bytes)}
	srvArgs := append([]string{"-role", "server"}, common...)
	cliArgs := append([]string{"-role", "client", "-dir", dir}, common...)
	cliProf, srvProf := r.SenderProfile, r.ReceiverProfile
	if !r.Upload {
		cliProf, srvProf = srvProf, cliProf
	}
	if cliProf != "" {
		cliArgs = append(cliArgs, "-cpuprofile", cliProf)
	}
	if srvProf != "" {
		srvArgs = append(srvArgs, "-cpuprofile", srvProf)
	}
	if r.Tunnel {
		ka, err := wgnet.GeneratePrivateKey()
		if err != nil {
			return Result{}, err
		}
		kb, err := wgnet.GeneratePrivateKey()
		if err != nil {
			return Result{}, err
		}
		mtu := fmt.Sprint(r.MTU)
		srvArgs = append(srvArgs, "-tunnel", "-listen", ":5001", "-key", kb.String(), "-peer", ka.PublicKey().String(),
			"-peer-endpoint", AddrA+":51820", "-addr", TunB, "-peer-addr", TunA, "-mtu", mtu)
		cliArgs = append(cliArgs, "-tunnel", "-connect", TunB+":5001", "-key", ka.String(), "-peer", kb.PublicKey().String(),
			"-peer-endpoint", AddrB+":51820", "-addr", TunA, "-peer-addr", TunB, "-mtu", mtu)
	} else {
		srvArgs = append(srvArgs, "-listen", AddrB+":5001")
		cliArgs = append(cliArgs, "-connect", AddrB+":5001")
	}
	srv := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", NSB, r.Peer}, srvArgs...)...)
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var srvErr bytes.Buffer
	srv.Stderr = &srvErr
	stdout, err := srv.StdoutPipe()
	if err != nil {
		return Result{}, err
	}
	if err := srv.Start(); err != nil {
		return Result{}, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		srv.Wait()
		return Result{}, fmt.Errorf("tunnelpeer server did not start: %s", bytes.TrimSpace(srvErr.Bytes()))
	}
	cli := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", NSA, r.Peer}, cliArgs...)...)
	cli.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var cliErr bytes.Buffer
	cli.Stderr = &cliErr
	cliOut, err := cli.Output()
	if err != nil {
		return Result{}, fmt.Errorf("tunnelpeer client: %w: %s", err, bytes.TrimSpace(cliErr.Bytes()))
	}
	if !sc.Scan() {
		srv.Wait()
		return Result{}, fmt.Errorf("tunnelpeer server: no result: %s", bytes.TrimSpace(srvErr.Bytes()))
	}
	// The server prints its result before it exits; its profile is
	// complete only once it has.
	if err := srv.Wait(); err != nil {
		return Result{}, fmt.Errorf("tunnelpeer server: %w: %s", err, bytes.TrimSpace(srvErr.Bytes()))
	}
	var c, s peerResult
	if err := json.Unmarshal(cliOut, &c); err != nil {
		return Result{}, fmt.Errorf("tunnelpeer client output %q: %w", cliOut, err)
	}
	if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
		return Result{}, fmt.Errorf("tunnelpeer server output %q: %w", sc.Text(), err)
	}
	if c.Bytes != r.Bytes || s.Bytes != r.Bytes {
		return Result{}, errors.New("tunnelpeer: byte counts differ")
	}
	// The receiver's time covers delivery.
	recv, send := s, c
	if !r.Upload {
		recv, send = c, s
	}
	return Result{Bytes: r.Bytes, Seconds: recv.Seconds, CPUSeconds: c.CPUSeconds + s.CPUSeconds, LostAck: !send.Acked}, nil
}

// Profile repeats r once with both peers taking CPU profiles into dir, as
// name-sender.cpu.pprof and name-receiver.cpu.pprof, and returns the
// flat and cumulative `go tool pprof -top` views of each (run in the
// module at root), titled "CPU of the sending peer, <setting>, <view>".
// The run is not a measurement; its result is dropped.
func Profile(ctx context.Context, r Run, dir, name, setting, root string) ([]report.Profile, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	r.SenderProfile = filepath.Join(dir, name+"-sender.cpu.pprof")
	r.ReceiverProfile = filepath.Join(dir, name+"-receiver.cpu.pprof")
	if _, err := Transfer(ctx, r); err != nil {
		return nil, err
	}
	var out []report.Profile
	for _, p := range []struct{ who, file string }{{"sending", r.SenderProfile}, {"receiving", r.ReceiverProfile}} {
		v, err := profile.Views(ctx, root, p.file, fmt.Sprintf("CPU of the %s peer, %s", p.who, setting))
		if err != nil {
			return nil, err
		}
		out = append(out, v...)
	}
	return out, nil
}

package netns

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"

	"gefyra.dev/gefyra/cli/internal/agent/route"
)

// inNewNetns runs f on a thread of its own in a new network namespace
// with a link "eth0" (a TUN device) at 10.200.0.1/24, which stands for
// the container's interface on the Docker network.
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (a network namespace, CAP_NET_ADMIN)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		fd, err := tun.Open("eth0")
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(fd)
		link, err := netlink.LinkByName("eth0")
		if err == nil {
			err = netlink.LinkSetUp(link)
		}
		if err == nil {
			err = netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 200, 0, 1), Mask: net.CIDRMask(24, 32)}})
		}
		if err != nil {
			t.Error(err)
			return
		}
		f()
	}()
	<-done
}

// agentAddrs is what the test's Docker DNS says about the agent.
type agentAddrs struct {
	mu   sync.Mutex
	addr netip.Addr
}

func (a *agentAddrs) set(s string) {
	a.mu.Lock()
	a.addr = netip.MustParseAddr(s)
	a.mu.Unlock()
}

func (a *agentAddrs) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if host != "gefyra-agent" || !a.addr.IsValid() {
		return nil, nil
	}
	return []netip.Addr{a.addr}, nil
}

func TestRoutesFollowTheAgent(t *testing.T) {
	inNewNetns(t, func() {
		nets := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.244.0.0/16")}
		proc := t.TempDir()
		os.Mkdir(filepath.Join(proc, "4242"), 0o755) // the developer's container
		var agent agentAddrs
		agent.set("10.200.0.2")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Run keeps to its goroutine, here the namespace's thread; the
		// test looks from another goroutine, so it asks the namespace
		// through a file descriptor of it.
		ns, err := netnsFD()
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(ns)
		go lookAt(t, ns, nets, &agent, proc, cancel)
		err = Run(ctx, Options{Agent: "gefyra-agent", Networks: nets, Lookup: agent.lookup, Interval: 50 * time.Millisecond,
			ExitWhenAlone: true, Proc: proc})
		if err != nil {
			t.Error(err)
		}
		if ctx.Err() != nil {
			t.Error("Run did not end when alone")
		}
	})
}

func netnsFD() (int, error) {
	return unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// lookAt checks, from a thread of its own in the namespace ns, that the
// routes go via the agent and follow it, then lets Run end by removing
// the other process from proc.
func lookAt(t *testing.T, ns int, nets []netip.Prefix, agent *agentAddrs, proc string, cancel context.CancelFunc) {
	runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
	if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
		t.Errorf("setns: %v", err)
		cancel()
		return
	}
	wait := func(what string, ok func() bool) bool {
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Errorf("timed out waiting for %s", what)
				cancel()
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
		return true
	}
	via := func(want string) func() bool {
		return func() bool {
			for _, ip := range []string{"10.100.1.1", "10.244.3.3"} {
				gw, _, err := route.Lookup(netip.MustParseAddr(ip))
				if err != nil || gw != netip.MustParseAddr(want) {
					return false
				}
			}
			return true
		}
	}
	if !wait("the routes via the agent", via("10.200.0.2")) {
		return
	}
	agent.set("10.200.0.7") // the agent was made anew
	if !wait("the routes to follow the agent", via("10.200.0.7")) {
		return
	}
	os.Remove(filepath.Join(proc, "4242"))
}

// A container that ended before the holder first looked must not leave
// the holder behind: after the grace it ends anyway.
func TestExitWhenNobodyCame(t *testing.T) {
	inNewNetns(t, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := Run(ctx, Options{Agent: "10.200.0.2", Networks: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
			ExitWhenAlone: true, AloneGrace: 200 * time.Millisecond, Proc: t.TempDir()})
		if err != nil || ctx.Err() != nil {
			t.Errorf("Run = %v (ctx %v), want it to end by itself", err, ctx.Err())
		}
	})
}

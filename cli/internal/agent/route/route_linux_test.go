package route

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
)

// inNewNetns runs f on a thread of its own in a new network namespace
// (which ends with the thread), so nothing here touches the machine's
// routes.
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
		f()
	}()
	<-done
}

func TestRoutes(t *testing.T) {
	inNewNetns(t, func() {
		fd, err := tun.Open("rt0")
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(fd)
		cluster := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.244.0.0/16")}
		if err := Device("rt0", 1400, cluster); err != nil {
			t.Error(err)
			return
		}
		link, err := netlink.LinkByName("rt0")
		if err != nil {
			t.Error(err)
			return
		}
		if a := link.Attrs(); a.MTU != 1400 || a.Flags&net.FlagUp == 0 {
			t.Errorf("rt0: MTU %d, flags %v", a.MTU, a.Flags)
		}
		via := func(ip string) (gw netip.Addr, dev int, ok bool) {
			gw, dev, err := Lookup(netip.MustParseAddr(ip))
			return gw, dev, err == nil
		}
		if gw, dev, ok := via("10.244.3.3"); !ok || dev != link.Attrs().Index || gw.IsValid() {
			t.Errorf("10.244.3.3 goes via %v dev %d (%v), want dev rt0", gw, dev, ok)
		}
		// Device again is harmless (the routes are replaced).
		if err := Device("rt0", 0, cluster); err != nil {
			t.Error(err)
		}

		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 200, 0, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
			t.Error(err)
			return
		}
		if err := Pin(netip.MustParseAddr("10.96.3.3")); err != nil {
			t.Error(err)
		}
		gw := netip.MustParseAddr("10.200.0.2")
		if err := Via(gw, cluster); err != nil {
			t.Error(err)
			return
		}
		tests := []struct {
			name   string
			ip     string
			wantGw netip.Addr
		}{
			{name: "a Service address goes via the gateway", ip: "10.96.3.4", wantGw: gw},
			{name: "a Pod address too", ip: "10.244.0.9", wantGw: gw},
			{name: "the pinned address stays", ip: "10.96.3.3"},
		}
		for _, tt := range tests {
			if got, _, ok := via(tt.ip); !ok || got != tt.wantGw {
				t.Errorf("%s: %s goes via %v (%v), want %v", tt.name, tt.ip, got, ok, tt.wantGw)
			}
		}
		if err := Via(gw, []netip.Prefix{netip.MustParsePrefix("fd00::/64")}); err == nil {
			t.Error("an IPv6 network via an IPv4 gateway accepted")
		}

		if err := Remove(cluster); err != nil {
			t.Error(err)
		}
		if err := Remove(cluster); err != nil {
			t.Errorf("removing twice: %v", err)
		}
		if _, _, ok := via("10.244.0.9"); ok {
			t.Error("10.244.0.9 is still routed")
		}
		if err := Device("nosuch0", 0, cluster); err == nil {
			t.Error("a missing device accepted")
		}
	})
}

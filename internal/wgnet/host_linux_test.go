package wgnet

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a thread of its own in a new network namespace, so
// the TUN devices, addresses and routes of a test touch nothing else. The
// thread ends with f (it is never unlocked), and the namespace with it.
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for a network namespace)")
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

func TestHostTerminatesRoutedFlows(t *testing.T) {
	inNewNetns(t, func() {
		h, err := NewHost("gft0", 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer h.Close()
		var wg sync.WaitGroup
		defer wg.Wait()
		h.HandleTCP(func(r *TCPRequest) {
			c, err := r.Accept()
			if err != nil {
				t.Error(err)
				return
			}
			wg.Go(func() {
				defer c.Close()
				fmt.Fprintf(c, "%s from %s", r.Local, r.Remote.Addr())
			})
		})
		h.HandleUDP(func(r *UDPRequest) {
			c, err := r.Accept()
			if err != nil {
				t.Error(err)
				return
			}
			wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 100)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := c.Read(buf)
				if err == nil {
					fmt.Fprintf(c, "%s got %s", r.Local, buf[:n])
				}
			})
		})
		link, err := netlink.LinkByName(h.Name())
		if err != nil {
			t.Error(err)
			return
		}
		addr := &netlink.Addr{IPNet: netlink.NewIPNet(net.IPv4(10, 200, 0, 1))}
		for _, step := range []func() error{
			func() error { return netlink.LinkSetUp(link) },
			func() error { return netlink.AddrAdd(link, addr) },
			func() error {
				return netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixNet(netip.MustParsePrefix("10.96.0.0/16"))})
			},
		} {
			if err := step(); err != nil {
				t.Error(err)
				return
			}
		}

		c, err := net.DialTimeout("tcp", "10.96.0.10:80", 5*time.Second)
		if err != nil {
			t.Error(err)
			return
		}
		got, err := io.ReadAll(c)
		c.Close()
		if want := "10.96.0.10:80 from 10.200.0.1"; err != nil || string(got) != want {
			t.Errorf("TCP: got %q, %v; want %q", got, err, want)
		}

		u, err := net.Dial("udp", "10.96.0.10:53")
		if err != nil {
			t.Error(err)
			return
		}
		defer u.Close()
		u.SetDeadline(time.Now().Add(5 * time.Second))
		u.Write([]byte("q"))
		buf := make([]byte, 100)
		n, err := u.Read(buf)
		if want := "10.96.0.10:53 got q"; err != nil || string(buf[:n]) != want {
			t.Errorf("UDP: got %q, %v; want %q", buf[:n], err, want)
		}

		// Close removes the device, and the route with it.
		h.Close()
		if _, err := netlink.LinkByName("gft0"); err == nil {
			t.Error("the device outlived Close")
		}
	})
}

func TestNewHostRejects(t *testing.T) {
	tests := []struct {
		name string
		dev  string
		mtu  int
	}{
		{name: "no name", dev: "", mtu: 0},
		{name: "long name", dev: "a-very-long-device-name", mtu: 0},
		{name: "small MTU", dev: "gft1", mtu: 500},
		{name: "big MTU", dev: "gft1", mtu: 70000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if h, err := NewHost(tt.dev, tt.mtu); err == nil {
				h.Close()
				t.Fatalf("NewHost(%q, %d) succeeded", tt.dev, tt.mtu)
			}
		})
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

package wgnet

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// HostMTU is the MTU of a Host's device when none is given. The device
// only carries packets between the kernel and the Host's own stack (the
// flows are terminated there), so it can take whatever the kernel's other
// links bring without fragmenting.
const HostMTU = 65520

// Host is this package's TCP/IP stack on a kernel TUN device instead of
// WireGuard: it terminates every TCP connection and UDP flow the kernel
// routes into the device, whatever its destination, and hands them to its
// TCPHandler and UDPHandler with the address they were meant for (the
// agent carries them on through the tunnel). Opening the device needs
// CAP_NET_ADMIN and /dev/net/tun; bringing it up and routing into it is
// left to the caller. The device goes away with Close.
type Host struct {
	name  string
	fd    int
	stack *stack.Stack
	handlers

	once sync.Once
}

// NewHost creates the TUN device name (it must not exist yet) and a stack
// on it. mtu 0 means HostMTU.
func NewHost(name string, mtu int) (*Host, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("wgnet: device name %q: want 1-%d characters", name, unix.IFNAMSIZ-1)
	}
	if mtu == 0 {
		mtu = HostMTU
	}
	if mtu < MinMTU || mtu > HostMTU {
		return nil, fmt.Errorf("wgnet: device MTU %d out of range [%d, %d]", mtu, MinMTU, HostMTU)
	}
	fd, err := tun.Open(name)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("wgnet: create TUN device %s: %w (it needs CAP_NET_ADMIN)", name, err)
		}
		return nil, fmt.Errorf("wgnet: create TUN device %s: %w", name, err)
	}
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{fd}, MTU: uint32(mtu), PacketDispatchMode: fdbased.Readv})
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("wgnet: TUN device %s: %w", name, err)
	}
	s, err := newGStack(true)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("wgnet: %w", err)
	}
	h := &Host{name: name, fd: fd, stack: s}
	// Before the NIC: it starts reading the device at once.
	h.handlers.install(s)
	if err := addNIC(s, ep, netip.Addr{}, true); err != nil {
		s.Close()
		unix.Close(fd)
		return nil, fmt.Errorf("wgnet: %w", err)
	}
	return h, nil
}

// Name is the TUN device's name.
func (h *Host) Name() string { return h.name }

// HandleTCP sends every TCP connection that reaches the device to f; nil
// resets them.
func (h *Host) HandleTCP(f TCPHandler) { h.handlers.setTCP(f) }

// HandleUDP sends every new UDP flow that reaches the device to f; nil
// drops them.
func (h *Host) HandleUDP(f UDPHandler) { h.handlers.setUDP(f) }

// Close stops the stack and removes the device (and with it the kernel's
// routes through it). Accepted connections fail from then on.
func (h *Host) Close() error {
	h.once.Do(func() {
		h.stack.RemoveNIC(1) // stops reading the device
		h.stack.Close()
		h.stack.Wait()
		unix.Close(h.fd)
	})
	return nil
}

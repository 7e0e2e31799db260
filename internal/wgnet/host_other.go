//go:build !linux

package wgnet

import "errors"

// HostMTU is the MTU of a Host's device when none is given.
const HostMTU = 65520

// Host is this package's TCP/IP stack on a kernel TUN device; it exists
// on Linux only.
type Host struct{}

// NewHost fails: TUN devices of this kind are Linux's.
func NewHost(name string, mtu int) (*Host, error) {
	return nil, errors.New("wgnet: a TUN device host needs Linux")
}

// Name is the TUN device's name.
func (h *Host) Name() string { return "" }

// HandleTCP does nothing.
func (h *Host) HandleTCP(TCPHandler) {}

// HandleUDP does nothing.
func (h *Host) HandleUDP(UDPHandler) {}

// Close does nothing.
func (h *Host) Close() error { return nil }

//go:build !linux

package route

import (
	"errors"
	"net/netip"
)

var errNotLinux = errors.New("route: kernel routes are set on Linux only")

// Device fails: see the package doc.
func Device(dev string, mtu int, networks []netip.Prefix) error { return errNotLinux }

// Via fails: see the package doc.
func Via(gw netip.Addr, networks []netip.Prefix) error { return errNotLinux }

// Remove fails: see the package doc.
func Remove(networks []netip.Prefix) error { return errNotLinux }

// Pin fails: see the package doc.
func Pin(ip netip.Addr) error { return errNotLinux }

// Lookup fails: see the package doc.
func Lookup(ip netip.Addr) (netip.Addr, int, error) { return netip.Addr{}, 0, errNotLinux }

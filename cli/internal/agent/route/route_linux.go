package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
)

// Device sets the MTU of the link named dev, brings it up and routes
// networks into it, replacing any route to the same networks.
func Device(dev string, mtu int, networks []netip.Prefix) error {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("route: device %s: %w", dev, err)
	}
	if mtu > 0 {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("route: set the MTU of %s: %w", dev, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("route: bring %s up: %w", dev, err)
	}
	for _, p := range networks {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(p), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route: %s dev %s: %w", p, dev, err)
		}
	}
	return nil
}

// Via routes networks to the gateway gw (an address on a directly
// connected network), replacing any route to the same networks.
func Via(gw netip.Addr, networks []netip.Prefix) error {
	for _, p := range networks {
		if p.Addr().Is4() != gw.Is4() {
			return fmt.Errorf("route: %s via %s: not the same address family", p, gw)
		}
		r := &netlink.Route{Dst: ipNet(p), Gw: gw.AsSlice()}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route: %s via %s: %w", p, gw, err)
		}
	}
	return nil
}

// Remove deletes the routes to networks; one that is not there is fine.
func Remove(networks []netip.Prefix) error {
	var errs []error
	for _, p := range networks {
		err := netlink.RouteDel(&netlink.Route{Dst: ipNet(p)})
		if err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("route: remove %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// Pin routes ip as it is routed now with a host route of its own, so that
// a route to a network holding ip added later does not capture it (the
// tunnel's own UDP packets to stowaway must never be routed into the
// tunnel).
func Pin(ip netip.Addr) error {
	rs, err := netlink.RouteGet(ip.AsSlice())
	if err != nil {
		return fmt.Errorf("route: look up the route to %s: %w", ip, err)
	}
	if len(rs) == 0 {
		return fmt.Errorf("route: no route to %s", ip)
	}
	r := &netlink.Route{Dst: ipNet(netip.PrefixFrom(ip, ip.BitLen())), LinkIndex: rs[0].LinkIndex, Gw: rs[0].Gw}
	if r.Gw == nil {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("route: pin %s: %w", ip, err)
	}
	return nil
}

// Lookup returns the gateway and device index the kernel routes ip by
// (gw is zero for a directly connected destination).
func Lookup(ip netip.Addr) (gw netip.Addr, linkIndex int, err error) {
	rs, err := netlink.RouteGet(ip.AsSlice())
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("route: look up the route to %s: %w", ip, err)
	}
	if len(rs) == 0 {
		return netip.Addr{}, 0, fmt.Errorf("route: no route to %s", ip)
	}
	if g, ok := netip.AddrFromSlice(rs[0].Gw); ok {
		gw = g.Unmap()
	}
	return gw, rs[0].LinkIndex, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

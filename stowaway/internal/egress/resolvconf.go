package egress

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
)

// FromResolvConf reads what a Pod's resolv.conf (as kubelet writes it for
// dnsPolicy ClusterFirst) says about the cluster: its DNS server, the first
// nameserver, and its domain, from the search list kubelet makes of it
// (NAMESPACE.svc.DOMAIN svc.DOMAIN DOMAIN). Either is zero if the file
// does not say.
func FromResolvConf(b []byte) (dns netip.Addr, domain string) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil && !dns.IsValid() && a.Zone() == "" {
				dns = a.Unmap()
			}
		case "search":
			domain = ""
			for _, s := range f[1:] {
				if d, ok := strings.CutPrefix(strings.TrimSuffix(s, "."), "svc."); ok && d != "" {
					domain = d
					break
				}
			}
		}
	}
	return dns, domain
}

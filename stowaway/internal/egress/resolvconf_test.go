package egress

import (
	"net/netip"
	"testing"
)

func TestFromResolvConf(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantDNS    string
		wantDomain string
	}{
		{
			name:       "a Pod's",
			in:         "search gefyra.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
			wantDNS:    "10.96.0.10",
			wantDomain: "cluster.local",
		},
		{
			name:       "another domain, two servers",
			in:         "nameserver 10.0.0.10\nnameserver 10.0.0.11\nsearch ns.svc.corp.example svc.corp.example corp.example\n",
			wantDNS:    "10.0.0.10",
			wantDomain: "corp.example",
		},
		{name: "a host's", in: "# generated\nnameserver 192.168.1.1\nsearch lan\n", wantDNS: "192.168.1.1"},
		{name: "empty", in: ""},
		{name: "garbage", in: "nameserver not-an-ip\nsearch svc.\n"},
		{name: "IPv6", in: "nameserver fd00::a\nsearch svc.cluster.local.\n", wantDNS: "fd00::a", wantDomain: "cluster.local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dns, domain := FromResolvConf([]byte(tt.in))
			var want netip.Addr
			if tt.wantDNS != "" {
				want = netip.MustParseAddr(tt.wantDNS)
			}
			if dns != want || domain != tt.wantDomain {
				t.Fatalf("got %v %q, want %v %q", dns, domain, want, tt.wantDomain)
			}
		})
	}
}

func FuzzFromResolvConf(f *testing.F) {
	f.Add([]byte("search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\n"))
	f.Add([]byte("nameserver fd00::a%eth0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dns, domain := FromResolvConf(b)
		if dns.IsValid() && dns.Zone() != "" {
			t.Fatalf("a DNS server with a zone: %s", dns)
		}
		if domain != "" && (domain[0] == '.' || domain[len(domain)-1] == '.') {
			t.Fatalf("domain %q", domain)
		}
	})
}

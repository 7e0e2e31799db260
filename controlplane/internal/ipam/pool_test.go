package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

func TestNewPool(t *testing.T) {
	tests := []struct {
		name    string
		cidr    string
		wantErr string
	}{
		{name: "ipv4 /24", cidr: "10.213.0.0/24"},
		{name: "ipv4 /30", cidr: "10.213.0.0/30"},
		{name: "ipv6", cidr: "fd00:6ef:7a::/112"},
		{name: "unmasked", cidr: "10.213.0.7/24"},
		{name: "too small", cidr: "10.213.0.0/31", wantErr: "too small"},
		{name: "too large", cidr: "10.0.0.0/8", wantErr: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPool(netip.MustParsePrefix(tt.cidr))
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("NewPool(%s) = %v; want error %q", tt.cidr, err, tt.wantErr)
			}
		})
	}
}

func TestPoolNext(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("10.213.0.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Stowaway(); got != netip.MustParseAddr("10.213.0.1") {
		t.Fatalf("stowaway = %s", got)
	}
	used := map[netip.Addr]bool{}
	var got []string
	for {
		a, err := p.Next(used)
		if err != nil {
			if !strings.Contains(err.Error(), "exhausted") {
				t.Fatalf("unexpected error %v", err)
			}
			break
		}
		used[a] = true
		got = append(got, a.String())
	}
	// .0 network, .1 stowaway, .7 broadcast: clients get .2 to .6.
	if want := "10.213.0.2 10.213.0.3 10.213.0.4 10.213.0.5 10.213.0.6"; strings.Join(got, " ") != want {
		t.Fatalf("allocated %v; want %s", got, want)
	}
	delete(used, netip.MustParseAddr("10.213.0.4"))
	if a, _ := p.Next(used); a != netip.MustParseAddr("10.213.0.4") {
		t.Fatalf("freed address not reused: got %s", a)
	}
}

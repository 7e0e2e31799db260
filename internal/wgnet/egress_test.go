package wgnet

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseEgressInfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "full", in: `{"networks":["10.96.0.0/12","10.244.0.0/16"],"dns":"10.96.0.10","clusterDomain":"cluster.local"}`},
		{name: "networks only", in: `{"networks":["fd00::/108"]}`},
		{name: "no networks", in: `{"networks":[]}`, wantErr: "no networks"},
		{name: "host bits set", in: `{"networks":["10.96.0.1/12"]}`, wantErr: "not a network address"},
		{name: "everything", in: `{"networks":["0.0.0.0/0"]}`, wantErr: "every address"},
		{name: "dns outside", in: `{"networks":["10.96.0.0/12"],"dns":"8.8.8.8"}`, wantErr: "outside the networks"},
		{name: "bad domain", in: `{"networks":["10.96.0.0/12"],"clusterDomain":"cluster..local"}`, wantErr: "not a DNS name"},
		{name: "unknown field", in: `{"networks":["10.96.0.0/12"],"dnz":"x"}`, wantErr: "unknown field"},
		{name: "trailing", in: `{"networks":["10.96.0.0/12"]} {}`, wantErr: "trailing"},
		{name: "not a prefix", in: `{"networks":["10.96.0.0"]}`, wantErr: "egress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEgressInfo([]byte(tt.in))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("ParseEgressInfo: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("ParseEgressInfo: %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestEgressInfoSearchDomains(t *testing.T) {
	e := EgressInfo{Networks: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}, ClusterDomain: "cluster.local"}
	if got, want := e.SearchDomains("shop"), []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("SearchDomains(shop) = %q, want %q", got, want)
	}
	if got := (EgressInfo{}).SearchDomains("shop"); got != nil {
		t.Errorf("without a domain: %q", got)
	}
	if !e.Contains(netip.MustParseAddr("10.100.1.1")) || e.Contains(netip.MustParseAddr("10.122.0.1")) {
		t.Error("Contains is wrong")
	}
}

func FuzzParseEgressInfo(f *testing.F) {
	f.Add([]byte(`{"networks":["10.96.0.0/12","10.244.0.0/16"],"dns":"10.96.0.10","clusterDomain":"cluster.local"}`))
	f.Add([]byte(`{"networks":["fd00::/108"],"dns":"fd00::a"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEgressInfo(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseEgressInfo(out)
		if err != nil {
			t.Fatalf("%s: reparse: %v", out, err)
		}
		if !slices.Equal(again.Networks, e.Networks) || again.DNS != e.DNS || again.ClusterDomain != e.ClusterDomain {
			t.Fatalf("round trip changed %+v to %+v", e, again)
		}
	})
}

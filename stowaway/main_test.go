package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEgressInfo(t *testing.T) {
	dir := t.TempDir()
	podConf := filepath.Join(dir, "pod")
	os.WriteFile(podConf, []byte("search gefyra.svc.corp.example svc.corp.example corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"), 0o644)
	missing := filepath.Join(dir, "missing")
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name                      string
		networks, dns, domain, rc string
		want                      string // fmt of the info, "" for none
		wantErr                   string
	}{
		{name: "off", rc: podConf},
		{name: "from the Pod's resolv.conf", networks: "10.96.0.0/12, 10.244.0.0/16", rc: podConf,
			want: "[10.96.0.0/12 10.244.0.0/16] 10.96.0.10 corp.example"},
		{name: "given", networks: "10.96.0.0/12", dns: "10.96.0.53", domain: "cluster.local.", rc: podConf,
			want: "[10.96.0.0/12] 10.96.0.53 cluster.local"},
		{name: "a DNS server outside the networks is added", networks: "10.244.0.0/16", rc: podConf,
			want: "[10.244.0.0/16 10.96.0.10/32] 10.96.0.10 corp.example"},
		{name: "no resolv.conf", networks: "10.96.0.0/12", rc: missing, want: "[10.96.0.0/12] invalid IP cluster.local"},
		{name: "host bits are masked", networks: "10.96.0.1/12", rc: missing, want: "[10.96.0.0/12] invalid IP cluster.local"},
		{name: "bad network", networks: "10.96.0.0", rc: podConf, wantErr: "--egress-networks"},
		{name: "bad DNS", networks: "10.96.0.0/12", dns: "kube-dns", rc: podConf, wantErr: "--cluster-dns"},
		{name: "bad domain", networks: "10.96.0.0/12", domain: "a..b", rc: podConf, wantErr: "not a DNS name"},
		{name: "everything", networks: "0.0.0.0/0", rc: podConf, wantErr: "every address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := egressInfo(tt.networks, tt.dns, tt.domain, tt.rc, log)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("egressInfo: %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if info != nil {
				got = fmt.Sprintf("%v %v %s", info.Networks, info.DNS, info.ClusterDomain)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

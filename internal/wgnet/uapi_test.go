package wgnet

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseIpcGet(t *testing.T) {
	k1, k2 := Key{1}, Key{2}
	in := "private_key=" + Key{9}.hex() + "\nlisten_port=51820\n" +
		"public_key=" + k1.hex() + "\npreshared_key=" + Key{}.hex() + "\nprotocol_version=1\nendpoint=127.0.0.1:4000\n" +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\n" +
		"public_key=" + k2.hex() + "\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n"
	port, peers, err := parseIpcGet(in)
	if err != nil {
		t.Fatal(err)
	}
	if port != 51820 {
		t.Errorf("port %d", port)
	}
	want := []PeerStats{
		{PublicKey: k1, Endpoint: netip.MustParseAddrPort("127.0.0.1:4000"), LastHandshake: time.Unix(1700000000, 5), TxBytes: 10, RxBytes: 20},
		{PublicKey: k2},
	}
	if len(peers) != len(want) {
		t.Fatalf("%d peers, want %d", len(peers), len(want))
	}
	for i := range want {
		if peers[i].PublicKey != want[i].PublicKey || peers[i].Endpoint != want[i].Endpoint ||
			!peers[i].LastHandshake.Equal(want[i].LastHandshake) || peers[i].RxBytes != want[i].RxBytes || peers[i].TxBytes != want[i].TxBytes {
			t.Errorf("peer %d = %+v, want %+v", i, peers[i], want[i])
		}
	}

	bad := []struct{ name, in string }{
		{name: "no equals", in: "listen_port\n"},
		{name: "bad port", in: "listen_port=x\n"},
		{name: "bad key", in: "public_key=zz\n"},
		{name: "short key", in: "public_key=0102\n"},
		{name: "bad counter", in: "public_key=" + k1.hex() + "\nrx_bytes=-1\n"},
		{name: "bad endpoint", in: "public_key=" + k1.hex() + "\nendpoint=nowhere\n"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := parseIpcGet(tt.in); err == nil {
				t.Fatal("accepted bad input")
			}
		})
	}
}

func FuzzParseIpcGet(f *testing.F) {
	f.Add("listen_port=1\npublic_key=" + Key{1}.hex() + "\nrx_bytes=3\nlast_handshake_time_sec=4\n")
	f.Add("")
	f.Add("=\n=")
	f.Fuzz(func(t *testing.T, s string) {
		parseIpcGet(s) // must not panic or hang
	})
}

func TestPeersConfig(t *testing.T) {
	k1, k2, k3 := Key{1}, Key{2}, Key{3}
	p1 := Peer{PublicKey: k1, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}, Endpoint: netip.MustParseAddrPort("127.0.0.1:1000"), PersistentKeepalive: 25 * time.Second}
	p2 := Peer{PublicKey: k2, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}}
	moved := p1
	moved.Endpoint = netip.MustParseAddrPort("127.0.0.1:2000")
	tests := []struct {
		name string
		old  map[Key]Peer
		next []Peer
		want []string // substrings expected in order
		none bool     // want no text at all
	}{
		{name: "add", next: []Peer{p1}, want: []string{"public_key=" + k1.hex(), "endpoint=127.0.0.1:1000", "persistent_keepalive_interval=25", "replace_allowed_ips=true", "allowed_ip=10.0.0.1/32"}},
		{name: "unchanged", old: map[Key]Peer{k1: p1}, next: []Peer{p1}, none: true},
		{name: "remove", old: map[Key]Peer{k1: p1, k3: {PublicKey: k3}}, next: []Peer{p1}, want: []string{"public_key=" + k3.hex() + "\nremove=true"}},
		{name: "endpoint moved", old: map[Key]Peer{k1: p1}, next: []Peer{moved}, want: []string{"endpoint=127.0.0.1:2000"}},
		{name: "add beside", old: map[Key]Peer{k1: p1}, next: []Peer{p1, p2}, want: []string{"public_key=" + k2.hex()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := peersConfig(tt.old, tt.next)
			if err != nil {
				t.Fatal(err)
			}
			if tt.none {
				if got != "" {
					t.Fatalf("got %q, want nothing", got)
				}
				return
			}
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("%q lacks %q (in order)", got, w)
				}
				rest = rest[i+len(w):]
			}
			if tt.name == "add beside" && strings.Contains(got, k1.hex()) {
				t.Fatalf("unchanged peer touched: %q", got)
			}
		})
	}
}

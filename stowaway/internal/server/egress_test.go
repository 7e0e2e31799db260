package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/stowaway/internal/config"
	"gefyra.dev/gefyra/stowaway/internal/egress"
)

// mapDialer dials the loopback server that stands for a cluster address.
type mapDialer map[string]string

func (m mapDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	to, ok := m[address]
	if !ok {
		to = "127.0.0.1:1"
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

func TestEgress(t *testing.T) {
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "web") })}
	go hs.Serve(web)
	defer hs.Close()

	info := wgnet.EgressInfo{Networks: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}, DNS: netip.MustParseAddr("10.96.0.10"), ClusterDomain: "cluster.local"}
	key, _ := wgnet.GeneratePrivateKey()
	srv, err := New(Options{PrivateKey: key, RelayAddr: "127.0.0.1:0", Registry: prometheus.NewRegistry(),
		Log: slog.New(slog.DiscardHandler), Egress: &info, EgressDialer: mapDialer{"10.96.5.5:80": web.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	dev := newDeveloper("dev1", "10.122.0.2")
	if err := srv.Update(config.Config{Peers: []config.Peer{dev.peer()}}); err != nil {
		t.Fatal(err)
	}
	n, err := wgnet.New(wgnet.Config{PrivateKey: dev.key, Address: dev.addr, Peers: []wgnet.Peer{{
		PublicKey:  srv.Net.PublicKey(),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.122.0.0/16"), netip.MustParsePrefix("10.96.0.0/16")},
		Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(srv.Net.ListenPort())),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}}
	get := func(url string) (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	t.Run("the announcement", func(t *testing.T) {
		got, err := get("http://10.122.0.1" + wgnet.EgressInfoPath)
		want := `{"networks":["10.96.0.0/16"],"dns":"10.96.0.10","clusterDomain":"cluster.local"}` + "\n"
		if err != nil || got != want {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	})
	t.Run("a Service through the egress", func(t *testing.T) {
		got, err := get("http://10.96.5.5/")
		if err != nil || got != "web" {
			t.Fatalf("got %q, %v", got, err)
		}
		if c := testutil.ToFloat64(srv.Egress.ConnectionsCounter("dev1", egress.ProtoTCP)); c != 1 {
			t.Fatalf("dev1's egress connections: %v", c)
		}
	})
	t.Run("stowaway's own free ports refuse, uncounted", func(t *testing.T) {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		if c, err := n.DialContext(dctx, "tcp", "10.122.0.1:1"); err == nil {
			c.Close()
			t.Fatal("accepted")
		}
		if dctx.Err() != nil {
			t.Fatal("timed out instead of refused")
		}
		if c := testutil.ToFloat64(srv.Egress.RefusedCounter(egress.ProtoTCP, egress.ReasonNotAllowed)); c != 0 {
			t.Fatalf("counted as an egress refusal: %v", c)
		}
	})
	t.Run("a peer that is gone gets no egress", func(t *testing.T) {
		if err := srv.Update(config.Config{}); err != nil {
			t.Fatal(err)
		}
		if _, err := get("http://10.96.5.5/"); err == nil {
			t.Fatal("answered")
		}
	})
}

func TestEgressRejectsTunnelAddress(t *testing.T) {
	key, _ := wgnet.GeneratePrivateKey()
	info := wgnet.EgressInfo{Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	if _, err := New(Options{PrivateKey: key, Registry: prometheus.NewRegistry(), Egress: &info}); err == nil {
		t.Fatal("egress networks holding the tunnel address accepted")
	}
}

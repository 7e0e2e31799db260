package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/dns/dnsmessage"

	"gefyra.dev/gefyra/internal/pipe"
	"gefyra.dev/gefyra/internal/wgnet"
)

// envNetns marks the child process that runs a test in a network
// namespace of its own.
const envNetns = "GEFYRA_AGENT_TEST_NETNS"

// inNetns reruns the test named name in a child process in a new network
// namespace, where it may make devices and routes that touch nothing
// else; it reports whether the caller is that child (and should go on).
func inNetns(t *testing.T, name string) bool {
	t.Helper()
	if os.Getenv(envNetns) != "" {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			t.Fatalf("loopback: %v", err)
		}
		return true
	}
	if os.Getuid() != 0 {
		t.Skip("needs root (a network namespace, CAP_NET_ADMIN)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envNetns+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a network namespace: %v\n%s", name, err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("%s did not pass in its network namespace:\n%s", name, out)
	}
	return false
}

// cluster is what stands for the cluster in these tests: a forwarding
// WireGuard endpoint at stowaway's tunnel address that announces the
// networks and carries each flow for them on to a loopback server that
// stands for the address (anything else is refused), as stowaway's egress
// does.
type cluster struct {
	net   *wgnet.Net
	info  wgnet.EgressInfo
	addrs map[string]string // "tcp 10.96.5.5:80" -> loopback address
	wg    sync.WaitGroup
}

func newCluster(t *testing.T, announce bool) *cluster {
	t.Helper()
	key := mustKey(t)
	n, err := wgnet.New(wgnet.Config{PrivateKey: key, Address: DefaultStowawayAddress, Forwarding: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{net: n, addrs: map[string]string{}, info: wgnet.EgressInfo{
		Networks: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}, DNS: netip.MustParseAddr("10.96.0.10"), ClusterDomain: "cluster.local"}}
	t.Cleanup(func() { n.Close(); c.wg.Wait() })
	if !announce {
		return c
	}
	ln, err := n.Listen("tcp", fmt.Sprintf(":%d", wgnet.EgressInfoPort))
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != wgnet.EgressInfoPath {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(c.info)
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	n.HandleTCP(func(r *wgnet.TCPRequest) {
		to, ok := c.addrs["tcp "+r.Local.String()]
		if !ok {
			r.Reject()
			return
		}
		up, err := net.Dial("tcp", to)
		if err != nil {
			r.Reject()
			return
		}
		conn, err := r.Accept()
		if err != nil {
			up.Close()
			return
		}
		pipe.Join(context.Background(), conn, up)
	})
	n.HandleUDP(func(r *wgnet.UDPRequest) {
		to, ok := c.addrs["udp "+r.Local.String()]
		if !ok {
			return
		}
		conn, err := r.Accept()
		if err != nil {
			return
		}
		c.wg.Go(func() {
			up, err := net.Dial("udp", to)
			if err != nil {
				conn.Close()
				return
			}
			wgnet.JoinUDP(context.Background(), conn, up, time.Second, nil, nil)
		})
	})
	return c
}

// agentFor runs an agent with an egress device as a peer of c.
func (c *cluster) agentFor(t *testing.T, dev string) (*Agent, func()) {
	t.Helper()
	key := mustKey(t)
	addr := netip.MustParseAddr("10.122.0.2")
	if err := c.net.SetPeers([]wgnet.Peer{{PublicKey: key.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, 32)}}}); err != nil {
		t.Fatal(err)
	}
	return runAgent(t, Config{
		PrivateKey:   key,
		Address:      addr,
		Stowaway:     Stowaway{Endpoint: fmt.Sprintf("127.0.0.1:%d", c.net.ListenPort()), PublicKey: c.net.PublicKey()},
		EgressDevice: dev,
	})
}

// dnsServer answers A questions for names on a loopback UDP port.
func dnsServer(t *testing.T, names map[string]netip.Addr) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			hdr := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError}
			ip, ok := names[q.Name.String()]
			if ok {
				hdr.RCode = dnsmessage.RCodeSuccess
			}
			b := dnsmessage.NewBuilder(nil, hdr)
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if ok && q.Type == dnsmessage.TypeA {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: ip.As4()})
			}
			out, _ := b.Finish()
			pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestEgressThroughTUN runs the whole egress path on the developer's
// side: the kernel routes a client's TCP and UDP for the cluster's
// networks into the agent's TUN device, and the agent carries them
// through the tunnel to where they were meant to go. The client is this
// process, with an address of its own on the loopback device.
func TestEgressThroughTUN(t *testing.T) {
	if !inNetns(t, "TestEgressThroughTUN") {
		return
	}
	lo, _ := netlink.LinkByName("lo")
	if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 200, 0, 1), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, true)
	web := httpServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "web %s", r.URL.Path) })
	c.addrs["tcp 10.96.5.5:80"] = web
	c.addrs["udp 10.96.0.10:53"] = dnsServer(t, map[string]netip.Addr{"web.shop.svc.cluster.local.": netip.MustParseAddr("10.96.5.5")})
	a, stop := c.agentFor(t, "gfe0")
	waitFor(t, "the egress ready", func() bool { return a.Status().Egress.State == EgressReady })
	if s := a.Status().Egress; !slices.Equal(s.Networks, c.info.Networks) || s.DNS != c.info.DNS || s.ClusterDomain != "cluster.local" || s.Device != "gfe0" {
		t.Fatalf("egress status %+v", s)
	}

	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", "10.96.0.10:53")
	}}
	t.Run("a cluster name resolves through the cluster DNS over UDP", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got, err := resolver.LookupHost(ctx, "web.shop.svc.cluster.local")
		if err != nil || !slices.Equal(got, []string{"10.96.5.5"}) {
			t.Fatalf("got %v, %v", got, err)
		}
		if _, err := resolver.LookupHost(ctx, "nothing.shop.svc.cluster.local"); err == nil {
			t.Fatal("a missing name resolved")
		}
	})
	t.Run("HTTP reaches the Service", func(t *testing.T) {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get("http://10.96.5.5/items")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "web /items" {
			t.Fatalf("got %q", b)
		}
	})
	t.Run("an address the cluster refuses is refused here", func(t *testing.T) {
		before := a.Status().Egress.Failed
		conn, err := net.DialTimeout("tcp", "10.96.9.9:80", 10*time.Second)
		if err == nil {
			conn.Close()
			t.Fatal("accepted")
		}
		if !strings.Contains(err.Error(), "refused") {
			t.Fatalf("got %v, want connection refused", err)
		}
		if got := a.Status().Egress.Failed; got != before+1 {
			t.Fatalf("failed connections %d, want %d", got, before+1)
		}
	})
	if s := a.Status().Egress; s.Connections < 3 {
		t.Errorf("egress connections %d, want at least 3 (2 DNS flows, 1 HTTP)", s.Connections)
	}

	stop()
	if _, err := netlink.LinkByName("gfe0"); err == nil {
		t.Error("the device outlived the agent")
	}
}

// TestEgressUnavailable: a stowaway without an egress leaves the agent
// without a device, saying why, and everything else working.
func TestEgressUnavailable(t *testing.T) {
	if !inNetns(t, "TestEgressUnavailable") {
		return
	}
	c := newCluster(t, false)
	a, _ := c.agentFor(t, "gfe1")
	waitFor(t, "the egress found unavailable", func() bool { return a.Status().Egress.State == EgressUnavailable })
	if s := a.Status(); !strings.Contains(s.Egress.Error, "without --egress-networks") || !s.Up {
		t.Fatalf("status %+v", s)
	}
	if _, err := netlink.LinkByName("gfe1"); err == nil {
		t.Error("a device was made")
	}
}

func httpServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

package localagent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/cli/internal/clitest"
	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/cli/internal/state"
	"gefyra.dev/gefyra/internal/ociimage"
	"gefyra.dev/gefyra/internal/pipe"
	"gefyra.dev/gefyra/internal/wgnet"
)

func TestNetnsCommandAndDNS(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("10.244.0.0/16")}
	got := NetnsCommand("gefyra-agent", nets, true)
	want := []string{"agent", "netns", "--agent", "gefyra-agent", "--network", "10.96.0.0/12", "--network", "10.244.0.0/16", "--exit-when-alone"}
	if !slices.Equal(got, want) {
		t.Fatalf("NetnsCommand = %q, want %q", got, want)
	}
	eg := agent.EgressStatus{State: agent.EgressReady, Networks: nets, DNS: netip.MustParseAddr("10.96.0.10"), ClusterDomain: "cluster.local"}
	servers, search, opts := DNSConfig(eg, "shop")
	if !slices.Equal(servers, []string{"10.96.0.10"}) || !slices.Equal(search, []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}) ||
		!slices.Equal(opts, []string{"ndots:5"}) {
		t.Fatalf("DNSConfig = %q %q %q", servers, search, opts)
	}
	if s, _, _ := DNSConfig(agent.EgressStatus{}, "shop"); s != nil {
		t.Fatalf("DNSConfig without a DNS server = %q", s)
	}
	dual := agent.EgressStatus{Networks: append(slices.Clone(nets), netip.MustParsePrefix("fd00:10:96::/112"))}
	if got := Networks(dual); !slices.Equal(got, nets) {
		t.Fatalf("Networks = %v, want the IPv4 ones %v", got, nets)
	}
}

// clusterStandIn stands for stowaway and the cluster behind it: a
// forwarding WireGuard endpoint on this machine (reached from the test's
// Docker network at its gateway) that announces 10.96.0.0/16 and carries
// TCP for 10.96.5.5:80 and DNS for 10.96.0.10:53 to servers on loopback,
// as stowaway's egress carries them into the cluster.
type clusterStandIn struct {
	net      *wgnet.Net
	endpoint string
	wg       sync.WaitGroup
}

const clusterWeb = `{"name":"cluster-web"}`

func startClusterStandIn(t *testing.T, eng *local.Engine) *clusterStandIn {
	t.Helper()
	ctx := context.Background()
	if _, err := eng.EnsureNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := eng.NetworkInfo(ctx)
	if err != nil || info.Gateway == "" {
		t.Fatalf("network %s has no gateway: %+v %v", eng.Network(), info, err)
	}
	key, _ := wgnet.GeneratePrivateKey()
	n, err := wgnet.New(wgnet.Config{PrivateKey: key, Address: agent.DefaultStowawayAddress, Forwarding: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &clusterStandIn{net: n, endpoint: fmt.Sprintf("%s:%d", info.Gateway, n.ListenPort())}
	t.Cleanup(func() { n.Close(); c.wg.Wait() })

	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ws := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, clusterWeb) })}
	go ws.Serve(web)
	t.Cleanup(func() { ws.Close() })
	dns := dnsStandIn(t, "web.shop.svc.cluster.local.", [4]byte{10, 96, 5, 5})

	ln, err := n.Listen("tcp", fmt.Sprintf(":%d", wgnet.EgressInfoPort))
	if err != nil {
		t.Fatal(err)
	}
	is := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(wgnet.EgressInfo{Networks: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
			DNS: netip.MustParseAddr("10.96.0.10"), ClusterDomain: "cluster.local"})
	})}
	go is.Serve(ln)
	t.Cleanup(func() { is.Close() })
	n.HandleTCP(func(r *wgnet.TCPRequest) {
		if r.Local.String() != "10.96.5.5:80" {
			r.Reject()
			return
		}
		up, err := net.Dial("tcp", web.Addr().String())
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
		if r.Local.String() != "10.96.0.10:53" {
			return
		}
		conn, err := r.Accept()
		if err != nil {
			return
		}
		c.wg.Go(func() {
			up, err := net.Dial("udp", dns)
			if err != nil {
				conn.Close()
				return
			}
			wgnet.JoinUDP(context.Background(), conn, up, time.Second, nil, nil)
		})
	})
	return c
}

// egressImage is world/testimages/egress as an image.
func egressImage(t *testing.T, eng *local.Engine) string {
	t.Helper()
	bin := clitest.GoBuild(t, "world/testimages/egress")
	tag := "gefyra.dev/test-egress:" + clitest.RandomName("t")
	tarball := filepath.Join(t.TempDir(), "egress.tar")
	if _, err := ociimage.Build(ociimage.Spec{Tag: tag, Files: []ociimage.File{{Src: bin, Dst: "/egress"}}, Entrypoint: []string{"/egress"}}, tarball); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := eng.LoadImage(ctx, tarball); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeImage(t, tag) })
	return tag
}

// TestRunInNetns runs the local side of the egress in real Docker: the
// agent container with its TUN device, a local container in the network
// namespace of its holder, and a client in it that calls a "cluster"
// Service by its short, namespaced and full name. The cluster is a
// stand-in on this machine behind a real WireGuard tunnel, so the answers
// prove the requests went through the tunnel (the machine's own routes
// know nothing of the stand-in's addresses).
func TestRunInNetns(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the agent container's TUN device needs a Docker host that grants CAP_NET_ADMIN; run as root")
	}
	eng := clitest.Docker(t)
	cs := startClusterStandIn(t, eng)
	img := egressImage(t, eng)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	key, _ := wgnet.GeneratePrivateKey()
	if err := cs.net.SetPeers([]wgnet.Peer{{PublicKey: key.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.122.0.2/32")}}}); err != nil {
		t.Fatal(err)
	}
	ag := &Agent{Engine: eng, Name: clitest.RandomName("gefyra-agent-t-"), Binary: clitest.GefyraBinary(t),
		State: state.Open(t.TempDir(), "test"), Context: "test", Labels: clitest.TestLabels}
	_, err := ag.Start(ctx, agent.Config{PrivateKey: key, Address: netip.MustParseAddr("10.122.0.2"),
		Stowaway: agent.Stowaway{Endpoint: cs.endpoint, PublicKey: cs.net.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ag.WaitUp(ctx, nil); err != nil {
		t.Fatal(err)
	}
	eg, err := ag.Egress(ctx, 30*time.Second)
	if err != nil || eg.State != agent.EgressReady {
		logs, _ := eng.Logs(ctx, ag.ContainerName(), 20)
		t.Fatalf("egress %+v, %v; the agent's log:\n%s", eg, err, logs)
	}

	name := clitest.RandomName("dev-")
	c, err := ag.RunInNetns(ctx, local.RunSpec{Name: name, Image: img, Cmd: []string{"serve"}, Namespace: "shop", Labels: clitest.TestLabels,
		Ports: []local.PortBinding{{HostIP: "127.0.0.1", ContainerPort: 8080, Protocol: "tcp"}}}, eg)
	if err != nil {
		t.Fatal(err)
	}
	holder, ok, err := eng.Inspect(ctx, NetnsName(name))
	if err != nil || !ok || !holder.Running() || holder.Role != local.RoleNetns {
		t.Fatalf("holder %+v, %v, %v", holder, ok, err)
	}
	if c.NetworkOf != holder.Name || c.IP == "" || c.IP != holder.IP {
		t.Fatalf("container %+v, want the holder's address %s", c, holder.IP)
	}

	t.Run("the container calls the cluster by name through the tunnel", func(t *testing.T) {
		urls := []string{"http://web", "http://web.shop", "http://web.shop.svc.cluster.local", "http://10.96.5.5"}
		out, err := eng.Exec(ctx, name, append([]string{"/egress", "get"}, urls...))
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for i, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var r struct {
				URL    string `json:"url"`
				Status int    `json:"status"`
				Body   string `json:"body"`
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil || r.URL != urls[i] || r.Status != 200 || strings.TrimSpace(r.Body) != clusterWeb {
				t.Errorf("%s: %s", urls[i], line)
			}
		}
	})
	t.Run("the container's resolver is the cluster's", func(t *testing.T) {
		out, err := eng.Exec(ctx, name, []string{"/egress", "get", "http://" + name + ":8080/"})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		s, err := ag.Status(ctx)
		if err != nil || s.Egress.Connections < 2 {
			t.Fatalf("the agent's egress %+v, %v: want DNS and HTTP flows counted", s.Egress, err)
		}
	})
	t.Run("others on the network reach the container by name, and the published port", func(t *testing.T) {
		other := clitest.RandomName("other-")
		if _, err := eng.Run(ctx, local.RunSpec{Name: other, Image: img, Cmd: []string{"sleep"}, Labels: clitest.TestLabels}); err != nil {
			t.Fatal(err)
		}
		out, err := eng.Exec(ctx, other, []string{"/egress", "get", "http://" + name + ":8080/"})
		if err != nil || !strings.Contains(string(out), `\"client\":\"`) {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	t.Run("a taken name fails before anything is made", func(t *testing.T) {
		if _, err := ag.RunInNetns(ctx, local.RunSpec{Name: name, Image: img, Cmd: []string{"serve"}, Labels: clitest.TestLabels}, eg); err == nil {
			t.Fatal("a second container of the same name started")
		}
		if _, ok, _ := eng.Inspect(ctx, NetnsName(name)); !ok {
			t.Fatal("the first container's holder is gone")
		}
	})
	t.Run("with --rm the holder goes with the container", func(t *testing.T) {
		rm := clitest.RandomName("rm-")
		if _, err := ag.RunInNetns(ctx, local.RunSpec{Name: rm, Image: img, Cmd: []string{"sleep"}, AutoRemove: true, Labels: clitest.TestLabels}, eg); err != nil {
			t.Fatal(err)
		}
		if err := eng.Signal(ctx, rm, "TERM"); err != nil {
			t.Fatal(err)
		}
		clitest.Eventually(t, 30*time.Second, "both containers removed", func() error {
			for _, n := range []string{rm, NetnsName(rm)} {
				if _, ok, err := eng.Inspect(ctx, n); err != nil || ok {
					return fmt.Errorf("%s is still there (%v)", n, err)
				}
			}
			return nil
		})
	})
	t.Run("a holder left behind is replaced", func(t *testing.T) {
		if err := eng.Remove(ctx, name); err != nil {
			t.Fatal(err)
		}
		if _, err := ag.RunInNetns(ctx, local.RunSpec{Name: name, Image: img, Cmd: []string{"serve"}, Labels: clitest.TestLabels}, eg); err != nil {
			t.Fatal(err)
		}
	})
}

// dnsStandIn answers the A question for name with ip on a loopback UDP
// port, and every other question with NXDOMAIN.
func dnsStandIn(t *testing.T, name string, ip [4]byte) string {
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
			found := q.Name.String() == name
			hdr := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError}
			if found {
				hdr.RCode = dnsmessage.RCodeSuccess
			}
			b := dnsmessage.NewBuilder(nil, hdr)
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if found && q.Type == dnsmessage.TypeA {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: ip})
			}
			out, _ := b.Finish()
			pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr().String()
}

package xds_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/controlplane/internal/auth"
	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/controlplane/internal/translate"
	"gefyra.dev/gefyra/controlplane/internal/xds"
	"gefyra.dev/gefyra/internal/bridge"
	"gefyra.dev/gefyra/internal/credential"
	"gefyra.dev/gefyra/internal/xdsclient"
)

const audience = "gefyra-xds"

// testServer is an xDS server on 127.0.0.1:0 that reviews tokens with the
// real API server.
type testServer struct {
	*xds.Server
	addr    string
	reg     *prometheus.Registry
	signer  *credential.Signer
	changes chan struct{}
}

func startServer(t *testing.T, ttl time.Duration) *testServer {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := credential.NewSigner(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String(), reg: prometheus.NewRegistry(), signer: signer, changes: make(chan struct{}, 1)}
	logOut := slog.DiscardHandler
	if os.Getenv("GEFYRA_TEST_LOG") != "" {
		logOut = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	s, err := xds.New(xds.Config{
		Listener:      ln,
		Translate:     translate.Options{RelayAddress: "10.96.0.20:8833", Signer: signer, CredentialTTL: ttl},
		Authenticator: &auth.Reviewer{Client: k8s, Audiences: []string{audience}},
		Policy:        auth.Policy{StowawayNamespace: "gefyra", StowawayServiceAccount: "gefyra-stowaway"},
		OnChange: func() {
			select {
			case ts.changes <- struct{}{}:
			default:
			}
		},
		Log:      slog.New(logOut),
		Registry: ts.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("xDS server: %v", err)
		}
	})
	return ts
}

func wgKey(t *testing.T) string {
	t.Helper()
	var k [32]byte
	rand.Read(k[:])
	return base64.StdEncoding.EncodeToString(k[:])
}

// shopModel has mount shop/web with the given Pods and one bridge to dev1.
func shopModel(t *testing.T, pods ...string) *model.Model {
	t.Helper()
	mt := model.Mount{Namespace: "shop", Name: "web-deployment-app", Kind: "Deployment", Workload: "web", Container: "app",
		Ports:    []model.Port{{Name: "http", Port: 8080, Protocol: "TCP"}},
		Fallback: []netip.Addr{netip.MustParseAddr("10.244.0.9")}}
	for _, p := range pods {
		mt.Pods = append(mt.Pods, model.Pod{Namespace: "shop", Name: p, IP: netip.MustParseAddr("10.244.0.5")})
	}
	m := &model.Model{
		Mounts: []model.Mount{mt},
		Bridges: []model.Bridge{{Namespace: "shop", Name: "b1", Mount: mt.Name, Client: "dev1",
			ClientAddress: netip.MustParseAddr("10.122.0.2"), Ports: []bridge.PortMapping{{Remote: 8080, Local: 8155}}}},
		Clients:  []model.Client{{Name: "dev1", User: "dev1", PublicKey: wgKey(t), Address: netip.MustParseAddr("10.122.0.2")}},
		Stowaway: model.Stowaway{Address: netip.MustParseAddr("10.122.0.1"), CIDR: netip.MustParsePrefix("10.122.0.0/24")},
	}
	m.Sort()
	return m
}

func tokenFile(t *testing.T, token string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// node runs the xDS client carrier and stowaway use, recording every
// delivery; reject, when it returns an error, NACKs.
type node struct {
	mu     sync.Mutex // guards the fields below
	got    []map[string][]proto.Message
	reject func(map[string][]proto.Message) error
}

func (n *node) last() map[string][]proto.Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.got) == 0 {
		return nil
	}
	return n.got[len(n.got)-1]
}

func runNode(t *testing.T, addr, id, token string, types []string, n *node) {
	t.Helper()
	cl, err := xdsclient.New(xdsclient.Config{
		Server: addr, NodeID: id, Types: types, TokenFile: tokenFile(t, token),
		InitialWait: 5 * time.Second, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}, func(res map[string][]proto.Message) error {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.reject != nil {
			if err := n.reject(res); err != nil {
				return err
			}
		}
		cp := map[string][]proto.Message{}
		for k, v := range res {
			cp[k] = append([]proto.Message(nil), v...)
		}
		n.got = append(n.got, cp)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func bridgeCredential(res map[string][]proto.Message) string {
	for _, m := range res[resource.ClusterType] {
		c := m.(*clusterv3.Cluster)
		if md := c.GetMetadata().GetFilterMetadata()[translate.MetadataKey]; md != nil {
			return md.GetFields()["credential"].GetStringValue()
		}
	}
	return ""
}

func TestCarrierAndStowawayGetTheirConfiguration(t *testing.T) {
	p := pod(t, "shop", "web-1", "web")
	ts := startServer(t, time.Hour)
	m := shopModel(t, "web-1")
	if err := ts.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	carrier, stowaway := &node{}, &node{}
	runNode(t, ts.addr, "shop/web-1", podToken(t, p), translate.Types(translate.KindCarrier), carrier)
	runNode(t, ts.addr, "gefyra/stowaway", saToken(t, "gefyra", "gefyra-stowaway", []string{audience}), translate.Types(translate.KindStowaway), stowaway)

	eventually(t, 10*time.Second, "carrier and stowaway acknowledge", func() error {
		nodes := ts.Nodes()
		for _, id := range []string{"shop/web-1", "gefyra/stowaway"} {
			if nodes[id].Bridges["shop/b1"] != translate.BridgeFingerprint(&m.Bridges[0]) {
				return errors.New(id + " has not acknowledged bridge shop/b1")
			}
			if !nodes[id].Connected {
				return errors.New(id + " is not connected")
			}
		}
		return nil
	})
	res := carrier.last()
	if len(res[resource.ListenerType]) != 1 || len(res[resource.RouteType]) != 1 || len(res[resource.ClusterType]) != 2 || len(res[resource.EndpointType]) != 1 {
		t.Fatalf("carrier got %d listeners, %d routes, %d clusters, %d endpoints", len(res[resource.ListenerType]),
			len(res[resource.RouteType]), len(res[resource.ClusterType]), len(res[resource.EndpointType]))
	}
	cred := bridgeCredential(res)
	rts := stowaway.last()[resource.RuntimeType]
	if len(rts) != 2 {
		t.Fatalf("stowaway got %d runtimes, want 2 (keys, client)", len(rts))
	}
	var pemKey string
	for _, r := range rts {
		if rt := r.(*runtimev3.Runtime); rt.GetName() == "credential-keys" {
			pemKey = rt.GetLayer().GetFields()["credentialKeys"].GetListValue().GetValues()[0].GetStringValue()
		}
	}
	pub, err := ts.signer.PublicKeyPEM()
	if err != nil || pub != pemKey {
		t.Fatalf("stowaway's key %q, want the signer's %q (%v)", pemKey, pub, err)
	}
	key, err := parsePublicKey(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := credential.NewVerifier([]crypto.PublicKey{key})
	if err := v.Verify([]byte(cred), "shop/b1"); err != nil {
		t.Fatalf("carrier's credential: %v", err)
	}

	if got := metricValue(t, ts.reg, "gefyra_controlplane_xds_connected_nodes", "carrier"); got != 1 {
		t.Errorf("connected carriers %v", got)
	}
	if got := histogramCount(t, ts.reg, "gefyra_controlplane_xds_push_latency_seconds"); got < 2 {
		t.Errorf("push latency observed %d times, want at least 2", got)
	}

	// A changed rule reaches carrier on its open stream.
	m2 := shopModel(t, "web-1")
	m2.Clients = m.Clients
	m2.Bridges[0].Rules = []bridge.Rule{{Headers: []bridge.HeaderMatch{{Name: "x-user", Type: bridge.Exact, Value: "dev1"}}}}
	if err := ts.Publish(context.Background(), m2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "carrier gets the rule", func() error {
		nodes := ts.Nodes()
		if nodes["shop/web-1"].Bridges["shop/b1"] != translate.BridgeFingerprint(&m2.Bridges[0]) {
			return errors.New("not acknowledged")
		}
		return nil
	})
	if !strings.Contains(routesOf(carrier.last()), "x-user") {
		t.Fatal("the delivered routes do not hold the new rule")
	}
}

func TestCredentialsAreRenewed(t *testing.T) {
	p := pod(t, "shop", "web-2", "web")
	// A 3s lifetime: renewed every 1.5s (whole seconds in the JWT).
	ts := startServer(t, 3*time.Second)
	if err := ts.Publish(context.Background(), shopModel(t, "web-2")); err != nil {
		t.Fatal(err)
	}
	carrier := &node{}
	runNode(t, ts.addr, "shop/web-2", podToken(t, p), translate.Types(translate.KindCarrier), carrier)
	var first string
	eventually(t, 10*time.Second, "carrier gets a credential", func() error {
		if first = bridgeCredential(carrier.last()); first == "" {
			return errors.New("none yet")
		}
		return nil
	})
	eventually(t, 15*time.Second, "carrier gets a new credential", func() error {
		if c := bridgeCredential(carrier.last()); c == first || c == "" {
			return errors.New("same credential")
		}
		return nil
	})
}

func TestRefusedStreams(t *testing.T) {
	web := pod(t, "shop", "web-3", "web")
	other := pod(t, "shop", "web-4", "web")
	gefyraPod := pod(t, "gefyra", "stowaway", "other")
	ts := startServer(t, time.Hour)
	if err := ts.Publish(context.Background(), shopModel(t, "web-3", "web-4")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		token  string
		header string // raw authorization value, overrides token
		node   string
		want   codes.Code
	}{
		{name: "no token", node: "shop/web-3", want: codes.Unauthenticated},
		{name: "garbage token", token: "not-a-token", node: "shop/web-3", want: codes.Unauthenticated},
		{name: "basic auth", header: "Basic dXNlcjpwYXNz", node: "shop/web-3", want: codes.Unauthenticated},
		{name: "token for another audience", token: saToken(t, "shop", "web", []string{"somebody-else"}), node: "shop/web-3", want: codes.Unauthenticated},
		{name: "another Pod's token", token: podToken(t, other), node: "shop/web-3", want: codes.PermissionDenied},
		{name: "token bound to no Pod", token: saToken(t, "shop", "web", nil), node: "shop/web-3", want: codes.PermissionDenied},
		{name: "carrier claims stowaway", token: podToken(t, web), node: "gefyra/stowaway", want: codes.PermissionDenied},
		{name: "Pod named like stowaway's node", token: podToken(t, gefyraPod), node: "gefyra/stowaway", want: codes.PermissionDenied},
		{name: "stowaway claims a Pod", token: saToken(t, "gefyra", "gefyra-stowaway", []string{audience}), node: "shop/web-3", want: codes.PermissionDenied},
		{name: "not namespace/pod", token: podToken(t, web), node: "web-3", want: codes.PermissionDenied},
		{name: "own Pod", token: podToken(t, web), node: "shop/web-3", want: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := tt.header
			if header == "" && tt.token != "" {
				header = "Bearer " + tt.token
			}
			code, got := rawStream(t, ts.addr, header, tt.node)
			if code != tt.want {
				t.Fatalf("code %v, want %v", code, tt.want)
			}
			if tt.want != codes.OK && got != nil {
				t.Fatalf("a refused stream got %d resources", len(got.GetResources()))
			}
		})
	}
	if got := metricValue(t, ts.reg, "gefyra_controlplane_xds_streams_refused_total", "Unauthenticated"); got != 4 {
		t.Errorf("refused unauthenticated streams counted %v, want 4", got)
	}
	if got := metricValue(t, ts.reg, "gefyra_controlplane_xds_streams_refused_total", "PermissionDenied"); got != 6 {
		t.Errorf("refused forbidden streams counted %v, want 6", got)
	}
}

// rawStream opens an ADS stream, asks for listeners as node and returns the
// stream's status code (OK if it got a response) and the response.
func rawStream(t *testing.T, addr, authorization, nodeID string) (codes.Code, *discoveryv3.DiscoveryResponse) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if authorization != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
	}
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return status.Code(err), nil
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: nodeID}, TypeUrl: resource.ListenerType}); err != nil && !errors.Is(err, context.Canceled) {
		_, err = st.Recv()
		return status.Code(err), nil
	}
	resp, err := st.Recv()
	if err != nil {
		return status.Code(err), nil
	}
	return codes.OK, resp
}

func TestNackIsRecorded(t *testing.T) {
	p := pod(t, "shop", "web-5", "web")
	ts := startServer(t, time.Hour)
	m := shopModel(t, "web-5")
	if err := ts.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	carrier := &node{reject: func(res map[string][]proto.Message) error {
		if strings.Contains(routesOf(res), "x-nack") {
			return errors.New(`route configuration "port-8080": header x-nack is not supported`)
		}
		return nil
	}}
	runNode(t, ts.addr, "shop/web-5", podToken(t, p), translate.Types(translate.KindCarrier), carrier)
	good := translate.BridgeFingerprint(&m.Bridges[0])
	eventually(t, 10*time.Second, "carrier acknowledges", func() error {
		if ts.Nodes()["shop/web-5"].Bridges["shop/b1"] != good {
			return errors.New("not yet")
		}
		return nil
	})

	bad := shopModel(t, "web-5")
	bad.Clients = m.Clients
	bad.Bridges[0].Rules = []bridge.Rule{{Headers: []bridge.HeaderMatch{{Name: "x-nack", Type: bridge.Exact, Value: "1"}}}}
	if err := ts.Publish(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the rejection is recorded", func() error {
		st := ts.Nodes()["shop/web-5"]
		if !strings.Contains(st.Rejected, "x-nack is not supported") {
			return errors.New("no rejection")
		}
		if len(st.RejectedBridges) != 1 || st.RejectedBridges[0] != "shop/b1" {
			return errors.New("rejected bridges " + strings.Join(st.RejectedBridges, ","))
		}
		if st.Bridges["shop/b1"] != good {
			return errors.New("the acknowledged state changed")
		}
		return nil
	})
	stw, reason, msg := xds.Condition(bad, &bad.Bridges[0], ts.Nodes(), translate.DefaultStowawayNodeID)
	if stw != "False" || reason != xds.ReasonRejected || !strings.Contains(msg, "carrier in Pod shop/web-5 rejected its configuration: ") {
		t.Fatalf("condition %s %s %q", stw, reason, msg)
	}
	if got := metricValue(t, ts.reg, "gefyra_controlplane_xds_push_errors_total", "nack"); got < 1 {
		t.Errorf("push errors (nack) %v", got)
	}

	// Fixed: acknowledged again, the rejection is gone.
	if err := ts.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the rejection clears", func() error {
		if st := ts.Nodes()["shop/web-5"]; st.Rejected != "" {
			return errors.New("still rejected: " + st.Rejected)
		}
		return nil
	})
}

func TestTranslateErrorKeepsLastGood(t *testing.T) {
	p := pod(t, "shop", "web-6", "web")
	ts := startServer(t, time.Hour)
	m := shopModel(t, "web-6")
	if err := ts.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	carrier := &node{}
	runNode(t, ts.addr, "shop/web-6", podToken(t, p), translate.Types(translate.KindCarrier), carrier)
	eventually(t, 10*time.Second, "carrier acknowledges", func() error {
		if ts.Nodes()["shop/web-6"].Version == "" {
			return errors.New("not yet")
		}
		return nil
	})
	before := ts.Nodes()["shop/web-6"].Version
	broken := shopModel(t, "web-6")
	broken.Bridges[0].Rules = []bridge.Rule{{}} // a rule without a condition
	if err := ts.Publish(context.Background(), broken); err == nil {
		t.Fatal("a model that cannot be translated was published")
	}
	if got := metricValue(t, ts.reg, "gefyra_controlplane_translate_errors_total", ""); got != 1 {
		t.Errorf("translate errors %v", got)
	}
	time.Sleep(200 * time.Millisecond) // nothing may arrive; an arrival would change the version
	if after := ts.Nodes()["shop/web-6"].Version; after != before {
		t.Fatalf("version moved from %s to %s after a failed translation", before, after)
	}
}

// TestOnlyChangesAreSent: a rule change reaches the carriers of its
// bridge's mount as new routes alone, with the credential they had; the
// carriers of another mount and a model published twice send nothing.
func TestOnlyChangesAreSent(t *testing.T) {
	ids := []string{"shop/web-7", "shop/web-8", "shop/api-7"}
	ts := startServer(t, time.Hour)
	m := shopModel(t, "web-7", "web-8")
	api := m.Mounts[0]
	api.Name, api.Workload, api.Pods = "api-deployment-app", "api", []model.Pod{{Namespace: "shop", Name: "api-7", IP: netip.MustParseAddr("10.244.0.6")}}
	m.Mounts = append(m.Mounts, api)
	b2 := m.Bridges[0]
	b2.Name, b2.Mount = "b2", api.Name
	m.Bridges = append(m.Bridges, b2)
	m.Sort()
	if err := ts.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*node{}
	for _, id := range ids {
		ns, name, _ := strings.Cut(id, "/")
		nodes[id] = &node{}
		runNode(t, ts.addr, id, podToken(t, pod(t, ns, name, "web")), translate.Types(translate.KindCarrier), nodes[id])
	}
	acked := func(m *model.Model, ids ...string) {
		t.Helper()
		eventually(t, 10*time.Second, "carriers acknowledge", func() error {
			got := ts.Nodes()
			for _, id := range ids {
				for _, b := range m.Bridges {
					if fp, ok := got[id].Bridges[b.Key()]; ok && fp != translate.BridgeFingerprint(&b) {
						return errors.New(id + " has an old " + b.Key())
					}
				}
				if len(got[id].Bridges) != 1 {
					return errors.New(id + " has not acknowledged")
				}
			}
			return nil
		})
	}
	acked(m, ids...)
	pushes := func() map[string]float64 {
		out := map[string]float64{}
		for _, typ := range []string{"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"} {
			out[typ] = metricValue(t, ts.reg, "gefyra_controlplane_xds_pushes_total", typ)
		}
		return out
	}
	deliveries := func(id string) int {
		nodes[id].mu.Lock()
		defer nodes[id].mu.Unlock()
		return len(nodes[id].got)
	}
	before, apiBefore, cred := pushes(), deliveries("shop/api-7"), bridgeCredential(nodes["shop/web-7"].last())

	m2 := *m
	m2.Bridges = slices.Clone(m.Bridges)
	m2.Bridges[0].Rules = []bridge.Rule{{Headers: []bridge.HeaderMatch{{Name: "x-user", Type: bridge.Exact, Value: "carol"}}}}
	for range 2 {
		if err := ts.Publish(context.Background(), &m2); err != nil {
			t.Fatal(err)
		}
	}
	acked(&m2, "shop/web-7", "shop/web-8")
	time.Sleep(200 * time.Millisecond) // anything else sent would arrive in this time
	after := pushes()
	want := map[string]float64{"Cluster": 0, "ClusterLoadAssignment": 0, "Listener": 0, "RouteConfiguration": 2}
	for typ, n := range want {
		if d := after[typ] - before[typ]; d != n {
			t.Errorf("%s responses: %v, want %v", typ, d, n)
		}
	}
	if got := deliveries("shop/api-7"); got != apiBefore {
		t.Errorf("the carrier of another mount got %d deliveries", got-apiBefore)
	}
	for _, id := range ids[:2] {
		res := nodes[id].last()
		if !strings.Contains(routesOf(res), "carol") {
			t.Errorf("%s: the new rule is not in its routes", id)
		}
		if c := bridgeCredential(res); c != cred {
			t.Errorf("%s: the credential changed with a rule", id)
		}
	}
}

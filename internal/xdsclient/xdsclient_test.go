package xdsclient_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/internal/xdsclient"
)

const node = "demo/carrier-0"

// controlPlane is a real go-control-plane ADS server with a snapshot cache.
type controlPlane struct {
	addr  string
	cache cachev3.SnapshotCache
	srv   *grpc.Server

	mu       sync.Mutex // guards the fields below
	requests []*discoveryv3.DiscoveryRequest
	tokens   []string
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port of a stopped server may take a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{addr: ln.Addr().String(), cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	cb := serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, _ int64, _ string) error {
			md, _ := metadata.FromIncomingContext(ctx)
			cp.mu.Lock()
			cp.tokens = append(cp.tokens, strings.Join(md.Get("authorization"), ","))
			cp.mu.Unlock()
			return nil
		},
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			cp.mu.Lock()
			cp.requests = append(cp.requests, proto.Clone(r).(*discoveryv3.DiscoveryRequest))
			cp.mu.Unlock()
			return nil
		},
	}
	cp.srv = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.srv, serverv3.NewServer(context.Background(), cp.cache, cb))
	go cp.srv.Serve(ln)
	t.Cleanup(cp.srv.Stop)
	return cp
}

func (cp *controlPlane) set(t *testing.T, version string, clusters, listeners []string) {
	t.Helper()
	res := map[resourcev3.Type][]types.Resource{}
	for _, c := range clusters {
		res[resourcev3.ClusterType] = append(res[resourcev3.ClusterType], &clusterv3.Cluster{Name: c})
	}
	for _, l := range listeners {
		res[resourcev3.ListenerType] = append(res[resourcev3.ListenerType], &listenerv3.Listener{Name: l})
	}
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
}

// waitRequest waits for a request the server got that satisfies ok.
func (cp *controlPlane) waitRequest(t *testing.T, what string, ok func(*discoveryv3.DiscoveryRequest) bool) *discoveryv3.DiscoveryRequest {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		cp.mu.Lock()
		for _, r := range cp.requests {
			if ok(r) {
				cp.mu.Unlock()
				return r
			}
		}
		cp.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("server never got %s", what)
	return nil
}

// update is what the callback was given: names per type.
type update map[string][]string

func names(res map[string][]proto.Message) update {
	u := update{}
	for t, msgs := range res {
		u[t] = []string{}
		for _, m := range msgs {
			switch r := m.(type) {
			case *clusterv3.Cluster:
				u[t] = append(u[t], r.GetName())
			case *listenerv3.Listener:
				u[t] = append(u[t], r.GetName())
			}
		}
		sort.Strings(u[t])
	}
	return u
}

func (u update) String() string {
	return "clusters=" + strings.Join(u[resourcev3.ClusterType], ",") + " listeners=" + strings.Join(u[resourcev3.ListenerType], ",")
}

func next(t *testing.T, ch <-chan update) update {
	t.Helper()
	select {
	case u := <-ch:
		return u
	case <-time.After(10 * time.Second):
		t.Fatal("no update delivered")
	}
	return nil
}

// waitUpdate consumes deliveries until one is want. Types arrive in
// separate responses, so a delivery may repeat what the consumer has.
func waitUpdate(t *testing.T, ch <-chan update, want string) {
	t.Helper()
	var got []string
	deadline := time.After(10 * time.Second)
	for {
		select {
		case u := <-ch:
			if u.String() == want {
				return
			}
			got = append(got, u.String())
		case <-deadline:
			t.Fatalf("never delivered %q; got %q", want, got)
		}
	}
}

func TestClient(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("token-one\n"), 0o600)

	updates := make(chan update, 10)
	cl, err := xdsclient.New(xdsclient.Config{
		Server: cp.addr, NodeID: node, TokenFile: tokenFile,
		Types:      []string{resourcev3.ClusterType, resourcev3.ListenerType},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}, func(res map[string][]proto.Message) error {
		u := names(res)
		for _, c := range u[resourcev3.ClusterType] {
			if c == "bad" {
				return errors.New("cluster bad: invalid regex")
			}
		}
		updates <- u
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// Initial config: both types in one delivery.
	cp.set(t, "v1", []string{"fallback"}, []string{"http"})
	if got := next(t, updates).String(); got != "clusters=fallback listeners=http" {
		t.Fatalf("initial: %s", got)
	}
	cp.waitRequest(t, "ACK of v1", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetVersionInfo() == "v1" && r.GetResponseNonce() != "" && r.GetErrorDetail() == nil && r.GetTypeUrl() == resourcev3.ClusterType
	})

	// Update.
	cp.set(t, "v2", []string{"bridge-a", "fallback"}, []string{"http"})
	waitUpdate(t, updates, "clusters=bridge-a,fallback listeners=http")

	// NACK: reported with the reason and the last good version; nothing
	// delivered.
	cp.set(t, "v3", []string{"bad"}, []string{"http"})
	nack := cp.waitRequest(t, "NACK of v3", func(r *discoveryv3.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
	if nack.GetVersionInfo() != "v2" || !strings.Contains(nack.GetErrorDetail().GetMessage(), "invalid regex") || nack.GetTypeUrl() != resourcev3.ClusterType {
		t.Fatalf("NACK %v", nack)
	}
	// The listeners of v3 were fine on their own: ACKed.
	cp.waitRequest(t, "ACK of v3 listeners", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetVersionInfo() == "v3" && r.GetTypeUrl() == resourcev3.ListenerType && r.GetErrorDetail() == nil && r.GetResponseNonce() != ""
	})

	// The next good update builds on the last good one.
	cp.set(t, "v4", []string{"bridge-b", "fallback"}, []string{"http", "tcp"})
	waitUpdate(t, updates, "clusters=bridge-b,fallback listeners=http,tcp")
	time.Sleep(50 * time.Millisecond)
	for len(updates) > 0 {
		<-updates
	}

	// Server restart: nothing is delivered while it is away; the client
	// reconnects with the rotated token and gets the new server's config.
	// The token is rotated before the server goes away: a reconnect
	// attempt may read the file at any moment after the stream breaks.
	if err := os.WriteFile(tokenFile, []byte("token-two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp.srv.Stop()
	waitFor(t, "disconnect", func() bool { return !cl.Connected() })
	select {
	case u := <-updates:
		t.Fatalf("delivered while the server was away: %s", u)
	case <-time.After(100 * time.Millisecond):
	}
	cp2 := startControlPlane(t, cp.addr)
	cp2.set(t, "v5", []string{"fallback"}, []string{"http"})
	waitUpdate(t, updates, "clusters=fallback listeners=http")
	first := cp2.waitRequest(t, "the reconnect's first request", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == resourcev3.ListenerType && r.GetResponseNonce() == ""
	})
	if first.GetVersionInfo() != "v4" || first.GetNode().GetId() != node {
		t.Fatalf("reconnect announced version %q node %q, want v4 %s", first.GetVersionInfo(), first.GetNode().GetId(), node)
	}
	cp.mu.Lock()
	tok1 := cp.tokens
	cp.mu.Unlock()
	cp2.mu.Lock()
	tok2 := cp2.tokens
	cp2.mu.Unlock()
	if len(tok1) == 0 || tok1[0] != "Bearer token-one" || len(tok2) == 0 || tok2[0] != "Bearer token-two" {
		t.Fatalf("tokens %q then %q", tok1, tok2)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUnreadableTokenRetries(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "v1", []string{"c"}, nil)
	tokenFile := filepath.Join(t.TempDir(), "token")
	updates := make(chan update, 1)
	cl, err := xdsclient.New(xdsclient.Config{
		Server: cp.addr, NodeID: node, TokenFile: tokenFile, Types: []string{resourcev3.ClusterType},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	}, func(res map[string][]proto.Message) error { updates <- names(res); return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cl.Run(ctx)
	time.Sleep(100 * time.Millisecond)
	if cl.Connected() {
		t.Fatal("connected without a token")
	}
	os.WriteFile(tokenFile, []byte("late"), 0o600) // the kubelet projects it late
	if got := next(t, updates); len(got[resourcev3.ClusterType]) != 1 {
		t.Fatalf("got %v", got)
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  xdsclient.Config
	}{
		{name: "no server", cfg: xdsclient.Config{NodeID: "n", Types: []string{"t"}}},
		{name: "no node", cfg: xdsclient.Config{Server: "s:1", Types: []string{"t"}}},
		{name: "no types", cfg: xdsclient.Config{Server: "s:1", NodeID: "n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := xdsclient.New(tt.cfg, nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestTypesWithoutResourcesStillComplete(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.set(t, "v1", []string{"only-a-cluster"}, nil)
	updates := make(chan update, 1)
	cl, err := xdsclient.New(xdsclient.Config{
		Server: cp.addr, NodeID: node, InitialWait: 300 * time.Millisecond,
		Types: []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType},
	}, func(res map[string][]proto.Message) error { updates <- names(res); return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cl.Run(ctx)
	if got := next(t, updates); got.String() != "clusters=only-a-cluster listeners=" || len(got) != 4 {
		t.Fatalf("got %v", got)
	}
}

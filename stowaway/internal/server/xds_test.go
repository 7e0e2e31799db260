package server

import (
	"context"
	"net"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"gefyra.dev/gefyra/internal/wire"
	"gefyra.dev/gefyra/internal/xdsclient"
	"gefyra.dev/gefyra/stowaway/internal/config"
)

// TestConfigOverXDS: a real go-control-plane ADS server sends stowaway its
// config as Runtime resources; an invalid update is refused and the last
// good config stays.
func TestConfigOverXDS(t *testing.T) {
	if config.TypeURL != resourcev3.RuntimeType {
		t.Fatalf("TypeURL %s is not go-control-plane's Runtime type", config.TypeURL)
	}
	w := newWorld(t)
	dev := newDeveloper("alice", "10.122.0.2")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	snapshots := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(context.Background(), snapshots, nil))
	go gs.Serve(ln)
	defer gs.Stop()

	const node = "gefyra/stowaway"
	set := func(version string, res ...types.Resource) {
		t.Helper()
		snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{resourcev3.RuntimeType: res})
		if err != nil {
			t.Fatal(err)
		}
		if err := snapshots.SetSnapshot(context.Background(), node, snap); err != nil {
			t.Fatal(err)
		}
	}
	client, err := config.ToResource("client/alice", config.Config{
		Peers:   []config.Peer{dev.peer()},
		Bridges: []config.Bridge{{Name: "demo/alice", Peer: "alice", Ports: []config.Port{{Target: 8155}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := config.ToResource("stowaway", config.Config{CredentialKeys: []string{pemPublic(t, w.ed.Public())}})
	if err != nil {
		t.Fatal(err)
	}
	set("1", client, keys)

	applied := make(chan error, 16)
	xc, err := xdsclient.New(xdsclient.Config{Server: ln.Addr().String(), NodeID: node, Types: []string{config.TypeURL}},
		func(res map[string][]proto.Message) error {
			err := w.srv.XDSCallback(res)
			applied <- err
			return err
		})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- xc.Run(ctx) }()
	defer func() { cancel(); <-done }()

	wait := func() error {
		t.Helper()
		select {
		case err := <-applied:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("no xDS update")
		}
		return nil
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	w.run(dev, "10.122.0.1/32", 8155)
	h := wire.Header{Bridge: "demo/alice", Port: 8155, Credential: w.token(w.ed, "demo/alice", time.Minute)}
	c, err := w.carrier(h)
	if err != nil {
		t.Fatalf("after the xDS config: %v", err)
	}
	if got := get(t, c, "/x"); got != "alice:8155 /x payload" {
		t.Fatalf("body %q", got)
	}
	c.Close()

	// A second resource names the same peer: the update is refused whole.
	dup, _ := config.ToResource("client/alice-again", config.Config{Peers: []config.Peer{dev.peer()}})
	set("2", client, keys, dup)
	if err := wait(); err == nil {
		t.Fatal("duplicate peer accepted")
	}
	c, err = w.carrier(h)
	if err != nil {
		t.Fatalf("old config lost after a refused update: %v", err)
	}
	c.Close()

	// The bridge goes away.
	// (The refused update may be delivered again before the next one.)
	set("3", keys, &runtimev3.Runtime{Name: "client/alice", Layer: &structpb.Struct{}})
	for wait() != nil {
	}
	if _, err := w.carrier(h); refusedCode(err) != wire.CodeUnknownBridge {
		t.Fatalf("removed bridge: %v", err)
	}
}

package xds

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var spec = Spec{HTTPAddr: "127.0.0.1:8080", TCPAddr: "127.0.0.1:8081", Backend: "127.0.0.1:9000", Relay: "127.0.0.1:9001", BridgeHeader: "x-forwarded-access-token", BridgeRegex: "john.*"}

func TestResourcesBadInput(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Spec)
	}{
		{name: "no port", mod: func(s *Spec) { s.HTTPAddr = "127.0.0.1" }},
		{name: "port out of range", mod: func(s *Spec) { s.TCPAddr = "127.0.0.1:70000" }},
		{name: "empty backend", mod: func(s *Spec) { s.Backend = "" }},
		{name: "bad relay", mod: func(s *Spec) { s.Relay = "x:y" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec
			tc.mod(&s)
			if _, err := Resources(s); err == nil {
				t.Fatal("want an error")
			}
			if _, err := Start(context.Background(), s); err == nil {
				t.Fatal("Start: want an error")
			}
		})
	}
}

// TestServesListeners asks the running ADS server for listeners as
// carrier's node would and checks both listeners arrive.
func TestServesListeners(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	cc, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: NodeID}, TypeUrl: resourcev3.ListenerType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Resources) != 2 {
		t.Fatalf("got %d listeners, want 2", len(resp.Resources))
	}
}

// Package xdsclient is the xDS client carrier and stowaway share: one
// Aggregated Discovery Service stream (state of the world) for a node ID,
// subscribed to a fixed set of type URLs with wildcard subscriptions.
//
// Each update is handed to a callback as the complete set of resources of
// every subscribed type. The first delivery waits until every type has
// answered once (a server may stay silent about a type it has nothing of:
// go-control-plane's snapshot cache answers only the types a snapshot
// names, even with an empty list; after InitialWait the silent types count
// as empty), so the consumer does not start from half a configuration.
// A nil error from the callback ACKs the update; an error NACKs it with
// the error's text and the last version that was accepted, and the
// consumer is expected to keep what it had. When the server goes away the
// last accepted resources stay with the consumer (nothing is delivered)
// and the client reconnects with capped, jittered exponential backoff,
// telling the server the versions it has.
//
// Authentication is per stream: when TokenFile is set, it is read on every
// connect (a projected ServiceAccount token is rotated on disk) and sent as
// "authorization: Bearer <token>" metadata.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Callback receives every subscribed type's resources, keyed by type URL.
// It must not keep the map past its return without copying it.
type Callback func(resources map[string][]proto.Message) error

// Config configures a Client.
type Config struct {
	// Server is the ADS server's address, e.g. "gefyra-controlplane.gefyra.svc:18000".
	Server string
	// NodeID identifies this node to the server (carrier: namespace/pod).
	NodeID string
	// NodeCluster and NodeMetadata are sent in the Node as well; optional.
	NodeCluster  string
	NodeMetadata map[string]any
	// Types are the type URLs to subscribe to.
	Types []string
	// TokenFile, if set, holds a bearer token read on every connect.
	TokenFile string
	// Credentials secure the connection; nil means plaintext.
	Credentials credentials.TransportCredentials
	// InitialWait bounds how long the first delivery waits for types that
	// have not answered (a server may stay silent about a type it has no
	// resources of); they are then delivered empty. Default 2s.
	InitialWait time.Duration
	// MinBackoff and MaxBackoff bound the wait between connects;
	// defaults 200ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	Log                    *slog.Logger
	// OnConnect, if set, is told when a stream opens (true) or ends (false).
	OnConnect func(connected bool)
}

// Client keeps one ADS stream open.
type Client struct {
	cfg  Config
	cb   Callback
	node *corev3.Node
	log  *slog.Logger

	// Accepted state; only the Run goroutine touches it.
	accepted map[string][]proto.Message
	versions map[string]string // last ACKed version per type
	seen     map[string]bool   // types heard from at least once

	mu        sync.Mutex // guards connected
	connected bool
}

// New returns a client; Run starts it.
func New(cfg Config, cb Callback) (*Client, error) {
	if cfg.Server == "" || cfg.NodeID == "" || len(cfg.Types) == 0 {
		return nil, errors.New("xdsclient: Server, NodeID and Types are required")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.InitialWait <= 0 {
		cfg.InitialWait = 2 * time.Second
	}
	node := &corev3.Node{Id: cfg.NodeID, Cluster: cfg.NodeCluster, UserAgentName: "gefyra"}
	if cfg.NodeMetadata != nil {
		md, err := structpb.NewStruct(cfg.NodeMetadata)
		if err != nil {
			return nil, fmt.Errorf("xdsclient: node metadata: %w", err)
		}
		node.Metadata = md
	}
	return &Client{
		cfg: cfg, cb: cb, node: node, log: cfg.Log,
		accepted: map[string][]proto.Message{},
		versions: map[string]string{},
		seen:     map[string]bool{},
	}, nil
}

// Connected reports whether a stream is open now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.connected = v
	c.mu.Unlock()
	if c.cfg.OnConnect != nil {
		c.cfg.OnConnect(v)
	}
}

// Run keeps the stream open until ctx is done; it returns nil then, or an
// error if the client cannot be set up at all.
func (c *Client) Run(ctx context.Context) error {
	creds := c.cfg.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	cc, err := grpc.NewClient(c.cfg.Server, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("xdsclient: %w", err)
	}
	defer cc.Close()
	backoff := c.cfg.MinBackoff
	for ctx.Err() == nil {
		start := time.Now()
		healthy, err := c.stream(ctx, cc)
		if ctx.Err() != nil {
			return nil
		}
		if healthy || time.Since(start) > c.cfg.MaxBackoff {
			backoff = c.cfg.MinBackoff
		}
		// Full jitter between half and all of the current step.
		wait := backoff/2 + rand.N(backoff/2+1)
		c.log.Warn("xDS stream ended, reconnecting", "server", c.cfg.Server, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
	return nil
}

type pendingResponse struct {
	typeURL, version, nonce string
	resources               []proto.Message
}

// stream runs one ADS stream; healthy reports that it got a response.
func (c *Client) stream(ctx context.Context, cc *grpc.ClientConn) (healthy bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.cfg.TokenFile != "" {
		tok, err := os.ReadFile(c.cfg.TokenFile)
		if err != nil {
			return false, fmt.Errorf("reading token: %w", err)
		}
		sctx = metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
	st, err := ads.StreamAggregatedResources(sctx, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	for _, t := range c.cfg.Types {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: t, VersionInfo: c.versions[t]}); err != nil {
			return false, err
		}
	}
	c.setConnected(true)
	defer c.setConnected(false)
	c.log.Info("xDS stream open", "server", c.cfg.Server, "node", c.cfg.NodeID)

	subscribed := map[string]bool{}
	for _, t := range c.cfg.Types {
		subscribed[t] = true
	}
	type received struct {
		resp *discoveryv3.DiscoveryResponse
		err  error
	}
	recv := make(chan received, 1)
	go func() {
		for {
			resp, err := st.Recv()
			select {
			case recv <- received{resp, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var pending []pendingResponse
	var wait <-chan time.Time // runs while the first set is incomplete
	for {
		var r received
		select {
		case r = <-recv:
		case <-sctx.Done():
			return healthy, sctx.Err()
		case <-wait:
			c.log.Warn("xDS types did not answer; going on without them", "after", c.cfg.InitialWait)
			for t := range subscribed {
				c.seen[t] = true
			}
			wait = nil
			if err := c.deliver(st, subscribed, &pending); err != nil {
				return healthy, err
			}
			continue
		}
		if r.err != nil {
			return healthy, r.err
		}
		resp := r.resp
		healthy = true
		t := resp.GetTypeUrl()
		if !subscribed[t] {
			c.log.Warn("xDS response for a type not subscribed to", "type", t)
			continue
		}
		msgs, err := unpack(resp)
		if err != nil {
			if err := c.nack(st, t, resp.GetNonce(), err); err != nil {
				return healthy, err
			}
			continue
		}
		// A newer response of a type replaces a pending one.
		kept := pending[:0]
		for _, p := range pending {
			if p.typeURL != t {
				kept = append(kept, p)
			}
		}
		pending = append(kept, pendingResponse{typeURL: t, version: resp.GetVersionInfo(), nonce: resp.GetNonce(), resources: msgs})
		c.seen[t] = true
		if len(c.seen) < len(subscribed) {
			if wait == nil {
				wait = time.After(c.cfg.InitialWait)
			}
			continue // wait for a complete first set
		}
		wait = nil
		if err := c.deliver(st, subscribed, &pending); err != nil {
			return healthy, err
		}
	}
}

// deliver hands the accepted state updated by the pending responses to the
// callback and ACKs or NACKs each of them.
func (c *Client) deliver(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, subscribed map[string]bool, pending *[]pendingResponse) error {
	next := make(map[string][]proto.Message, len(subscribed))
	for k := range subscribed {
		next[k] = c.accepted[k]
	}
	for _, p := range *pending {
		next[p.typeURL] = p.resources
	}
	cbErr := c.cb(next)
	for _, p := range *pending {
		var err error
		if cbErr == nil {
			err = st.Send(&discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: p.typeURL, VersionInfo: p.version, ResponseNonce: p.nonce})
		} else {
			err = c.nack(st, p.typeURL, p.nonce, cbErr)
		}
		if err != nil {
			return err
		}
	}
	if cbErr == nil {
		for _, p := range *pending {
			c.versions[p.typeURL] = p.version
		}
		c.accepted = next
	}
	*pending = (*pending)[:0]
	return nil
}

func (c *Client) nack(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, typeURL, nonce string, cause error) error {
	c.log.Warn("xDS update rejected", "type", typeURL, "err", cause)
	return st.Send(&discoveryv3.DiscoveryRequest{
		Node: c.node, TypeUrl: typeURL, VersionInfo: c.versions[typeURL], ResponseNonce: nonce,
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: cause.Error()},
	})
}

func unpack(resp *discoveryv3.DiscoveryResponse) ([]proto.Message, error) {
	out := make([]proto.Message, 0, len(resp.GetResources()))
	for _, a := range resp.GetResources() {
		if a.GetTypeUrl() != resp.GetTypeUrl() {
			return nil, fmt.Errorf("resource of type %s in a %s response", a.GetTypeUrl(), resp.GetTypeUrl())
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("resource of type %s: %w", a.GetTypeUrl(), err)
		}
		out = append(out, m)
	}
	return out, nil
}

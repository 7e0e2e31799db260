// Package xds is the control plane's xDS server: it translates every model
// it is handed (it is a model.Publisher) into one snapshot per data-plane
// node and serves them over one Aggregated Discovery Service stream per
// node (go-control-plane's snapshot cache, state of the world).
//
// Only consistent snapshots are published; when a translation fails the
// last good snapshots stay and the failure is counted. A node whose
// version did not change is sent nothing, and a node whose version changed
// is sent only the resource types that changed (see newSnapshot). Bridge
// credentials are short-lived: each is reused until it nears half its
// lifetime (see credential.Cache), so a node whose configuration did not
// change keeps its version, and the last model is translated again when
// the first of them reaches half its lifetime, to push the renewed ones.
//
// Every stream is authenticated (see controlplane/internal/auth): a stream
// without a good token ends with codes.Unauthenticated, one whose node ID
// its identity may not claim with codes.PermissionDenied, before it gets
// anything.
//
// The server follows what each node acknowledges: the version it runs
// (and so which bridges, as they are now), or the error it rejected a
// version with. Every replica serves the streams that reach it; Share
// publishes this replica's view for the others, and Readiness (on the
// leader) turns the merged view into each bridge's DataPlaneReady
// condition.
package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"gefyra.dev/gefyra/controlplane/internal/auth"
	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/controlplane/internal/translate"
	"gefyra.dev/gefyra/internal/credential"
)

// Config configures a Server.
type Config struct {
	// Addr is the gRPC listen address, e.g. ":18000"; Listener, if set, is
	// used instead.
	Addr     string
	Listener net.Listener
	// Translate are the translation options; its Signer's clock is the
	// server's clock for credentials.
	Translate translate.Options
	// Relay, if set, finds stowaway's relay address (host:port) for each
	// translation, in place of Translate.RelayAddress.
	Relay func(ctx context.Context) (string, error)
	// Authenticator checks each stream's bearer token and Policy which
	// node IDs the identity may claim. Authenticator is required.
	Authenticator auth.Authenticator
	Policy        auth.Policy
	// OnChange, if set, is called (without blocking for long) when a
	// node's acknowledged state or the published model changed.
	OnChange func()
	Log      *slog.Logger
	Registry prometheus.Registerer
}

// Server is the xDS server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	cache   cache.SnapshotCache
	refresh chan struct{}

	pushMu sync.Mutex // serializes translations and snapshot updates

	mu        sync.Mutex // guards the fields below
	model     *model.Model
	streams   map[int64]*streamState
	nodes     map[string]*nodeState
	warnings  []string
	refreshAt time.Time // when Run translates again to renew credentials
}

type streamState struct {
	identity auth.Identity
	node     string
	kind     string
	nonces   map[string]string // response nonce -> node version sent
	acked    map[string]string // type URL -> version the node has
}

// nodeState is what this replica knows of one node.
type nodeState struct {
	streams  map[int64]*streamState  // the node's open streams
	current  string                  // version of the node's snapshot
	versions map[string]*versionInfo // the last few versions set
	status   NodeStatus
}

type versionInfo struct {
	bridges  map[string]string
	types    map[string]string // type URL -> version of the type (see newSnapshot)
	setAt    time.Time
	seq      uint64
	observed bool // push latency recorded
}

// maxVersions bounds the versions remembered per node: a node
// acknowledges one of the last few it was sent.
const maxVersions = 8

// New returns a server; Run serves it.
func New(cfg Config) (*Server, error) {
	if cfg.Authenticator == nil {
		return nil, errors.New("xds: no authenticator")
	}
	if cfg.Translate.Signer == nil {
		return nil, errors.New("xds: no credential signer")
	}
	if cfg.Addr == "" && cfg.Listener == nil {
		return nil, errors.New("xds: no listen address")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Translate.StowawayNodeID == "" {
		cfg.Translate.StowawayNodeID = translate.DefaultStowawayNodeID
	}
	if cfg.Policy.StowawayNodeID == "" {
		cfg.Policy.StowawayNodeID = cfg.Translate.StowawayNodeID
	}
	if cfg.Translate.CredentialTTL <= 0 {
		cfg.Translate.CredentialTTL = translate.DefaultCredentialTTL
	}
	if cfg.Translate.Credentials == nil {
		// Unchanged nodes keep their credentials, and so their version:
		// they are not sent anything when another node's changes.
		creds, err := credential.NewCache(cfg.Translate.Signer, 0)
		if err != nil {
			return nil, err
		}
		cfg.Translate.Credentials = creds
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Log,
		metrics: newMetrics(cfg.Registry),
		refresh: make(chan struct{}, 1),
		streams: map[int64]*streamState{},
		nodes:   map[string]*nodeState{},
	}
	s.cache = cache.NewSnapshotCache(true, cache.IDHash{}, cacheLogger{cfg.Log})
	return s, nil
}

// Run serves xDS until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("xds: %w", err)
		}
	}
	gs := grpc.NewServer(
		grpc.StreamInterceptor(s.intercept(auth.StreamInterceptor(s.cfg.Authenticator))),
		grpc.UnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
			return nil, status.Error(codes.Unimplemented, "only the aggregated discovery stream is served")
		}),
		grpc.MaxConcurrentStreams(1<<16),
		grpc.SharedWriteBuffer(true),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	xs := server.NewServer(ctx, s.cache, s)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	s.log.Info("xDS server listening", "addr", ln.Addr().String())

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	var timer *time.Timer
	var fire <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			stopped := make(chan struct{})
			go func() { gs.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				gs.Stop()
			}
			return nil
		case err := <-errc:
			return fmt.Errorf("xds: %w", err)
		case <-s.refresh:
			s.mu.Lock()
			at := s.refreshAt
			s.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			timer = time.NewTimer(time.Until(at))
			fire = timer.C
		case <-fire:
			fire = nil
			if err := s.push(ctx); err != nil {
				s.log.Error("renewing credentials failed; retrying", "err", err)
				s.scheduleRefresh(time.Now().Add(5 * time.Second))
			}
		}
	}
}

// Publish translates m and updates every node's snapshot. It implements
// model.Publisher.
func (s *Server) Publish(ctx context.Context, m *model.Model) error {
	s.mu.Lock()
	s.model = m
	s.mu.Unlock()
	return s.push(ctx)
}

// Model is the last model published.
func (s *Server) Model() *model.Model {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.model
}

func (s *Server) push(ctx context.Context) error {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	m := s.Model()
	if m == nil {
		return nil
	}
	opts := s.cfg.Translate
	var relayErr error
	if s.cfg.Relay != nil {
		// Translate fails only if a bridge needs the relay.
		opts.RelayAddress, relayErr = s.cfg.Relay(ctx)
	}
	snap, err := translate.Translate(m, opts)
	bridges := make(map[string]bool, len(m.Bridges))
	for i := range m.Bridges {
		bridges[m.Bridges[i].Key()] = true
	}
	opts.Credentials.Retain(func(b string) bool { return bridges[b] })
	if err != nil && relayErr != nil {
		err = fmt.Errorf("%w (finding stowaway's relay: %v)", err, relayErr)
	}
	if err != nil {
		s.metrics.translateErrors.Inc()
		s.log.Error("translating the model failed; the last good configuration stays", "err", err)
		return err
	}
	now := time.Now()
	var failed []error
	want := map[string]bool{}
	// Nodes with equal versions have equal resources (the Pods of a mount
	// share them): one cache snapshot serves them all.
	type built struct {
		cs    *cache.Snapshot
		types map[string]string
		err   error
	}
	snapshots := map[string]built{}
	for _, n := range snap.Nodes {
		want[n.ID] = true
		s.mu.Lock()
		ns := s.node(n.ID)
		same := ns.current == n.Version
		s.mu.Unlock()
		if same {
			continue // the cache would send nothing for the same version
		}
		b, ok := snapshots[n.Version]
		if !ok {
			b.cs, b.types, b.err = newSnapshot(n)
			snapshots[n.Version] = b
		}
		err := b.err
		if err == nil {
			s.mu.Lock()
			// Recorded before the cache sends it, so the ACK finds it.
			seq := uint64(0)
			for _, v := range ns.versions {
				seq = max(seq, v.seq)
			}
			vi := &versionInfo{bridges: n.Bridges, types: b.types, setAt: now, seq: seq + 1}
			ns.versions[n.Version] = vi
			if len(ns.versions) > maxVersions {
				oldest := ""
				for v, vi := range ns.versions {
					if oldest == "" || vi.seq < ns.versions[oldest].seq {
						oldest = v
					}
				}
				delete(ns.versions, oldest)
			}
			ns.current = n.Version
			// A node that has every type of the version already (back
			// to what it had, after refusing the version in between)
			// is sent nothing: it is at the version now.
			for _, st := range ns.streams {
				if st.has(vi) {
					s.reached(ns, st.kind, n.Version, vi, held, now)
				}
			}
			s.mu.Unlock()
			err = s.cache.SetSnapshot(ctx, n.ID, b.cs)
		}
		if err != nil {
			s.metrics.pushErrors.WithLabelValues("snapshot").Inc()
			s.log.Error("snapshot refused; the node keeps its last good one", "node", n.ID, "err", err)
			failed = append(failed, fmt.Errorf("node %s: %w", n.ID, err))
		}
	}
	var gone []string
	s.mu.Lock()
	for id, ns := range s.nodes {
		if !want[id] {
			gone = append(gone, id)
			ns.current = ""
			if len(ns.streams) == 0 {
				delete(s.nodes, id)
			}
		}
	}
	s.mu.Unlock()
	// Outside s.mu: the cache may wait for a stream whose callbacks wait
	// for s.mu.
	for _, id := range gone {
		s.cache.ClearSnapshot(id)
	}
	s.mu.Lock()
	if !slices.Equal(s.warnings, snap.Warnings) {
		for _, w := range snap.Warnings {
			s.log.Warn("left out of the configuration", "what", w)
		}
		s.warnings = snap.Warnings
	}
	s.mu.Unlock()
	if !snap.Expires.IsZero() {
		// Renew when the first credential is half-way through its
		// lifetime: the cache renews it then, with those due soon after.
		s.scheduleRefresh(snap.Expires.Add(-s.cfg.Translate.CredentialTTL / 2))
	}
	s.changed()
	return errors.Join(failed...)
}

// intercept counts the streams refused: by the authenticator (before the
// handler runs) or for claiming a node ID they may not.
func (s *Server) intercept(next grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		entered := false
		err := next(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
			entered = true
			return handler(srv, ss)
		})
		c := status.Code(err)
		switch {
		case err == nil:
		case !entered:
			s.metrics.refused.WithLabelValues(c.String()).Inc()
			s.log.Warn("xDS stream refused", "code", c.String(), "err", status.Convert(err).Message())
		case c == codes.PermissionDenied:
			s.metrics.refused.WithLabelValues(c.String()).Inc()
		}
		return err
	}
}

// scheduleRefresh asks Run to translate again at at; it never blocks.
func (s *Server) scheduleRefresh(at time.Time) {
	s.mu.Lock()
	s.refreshAt = at
	s.mu.Unlock()
	select {
	case s.refresh <- struct{}{}:
	default:
	}
}

func (s *Server) changed() {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
}

// version returns the newest version set for the node that match says
// yes to, and its information; "" and nil if none does.
func (ns *nodeState) version(match func(*versionInfo) bool) (string, *versionInfo) {
	var v string
	var found *versionInfo
	for ver, vi := range ns.versions {
		if (found == nil || vi.seq > found.seq) && match(vi) {
			v, found = ver, vi
		}
	}
	return v, found
}

// node returns the state of id, creating it; s.mu is held.
func (s *Server) node(id string) *nodeState {
	ns := s.nodes[id]
	if ns == nil {
		ns = &nodeState{streams: map[int64]*streamState{}, versions: map[string]*versionInfo{}}
		s.nodes[id] = ns
	}
	return ns
}

// Nodes is this replica's view of the nodes: what each acknowledged or
// rejected. Nodes that never said anything to this replica are missing.
func (s *Server) Nodes() map[string]NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]NodeStatus, len(s.nodes))
	for id, ns := range s.nodes {
		if ns.status.Updated.IsZero() {
			continue
		}
		st := ns.status
		st.Connected = len(ns.streams) > 0
		st.Bridges = maps.Clone(st.Bridges)
		st.RejectedBridges = slices.Clone(st.RejectedBridges)
		out[id] = st
	}
	return out
}

func (s *Server) kind(nodeID string) string {
	if nodeID == s.cfg.Translate.StowawayNodeID {
		return translate.KindStowaway
	}
	return translate.KindCarrier
}

// OnStreamOpen records the stream's identity (the interceptor checked it).
func (s *Server) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	ident, ok := auth.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "stream not authenticated")
	}
	s.mu.Lock()
	s.streams[id] = &streamState{identity: ident, nonces: map[string]string{}, acked: map[string]string{}}
	s.mu.Unlock()
	return nil
}

// OnStreamClosed forgets the stream.
func (s *Server) OnStreamClosed(id int64, _ *corev3.Node) {
	s.mu.Lock()
	st := s.streams[id]
	delete(s.streams, id)
	if st != nil && st.node != "" {
		if ns := s.nodes[st.node]; ns != nil {
			delete(ns.streams, id)
			if len(ns.streams) == 0 {
				s.metrics.connected.WithLabelValues(st.kind).Dec()
			}
			ns.status.Connected = len(ns.streams) > 0
		}
	}
	s.mu.Unlock()
	if st != nil && st.node != "" {
		s.log.Info("xDS stream closed", "node", st.node)
		s.changed()
	}
}

// OnStreamRequest authorizes the stream's node ID and follows ACKs and
// NACKs.
func (s *Server) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	s.mu.Lock()
	changed, err := s.request(id, req)
	s.mu.Unlock()
	if changed {
		s.changed()
	}
	return err
}

// request handles one request; s.mu is held.
func (s *Server) request(id int64, req *discoveryv3.DiscoveryRequest) (changed bool, err error) {
	st := s.streams[id]
	if st == nil {
		return false, status.Error(codes.Unauthenticated, "stream not authenticated")
	}
	nodeID := req.GetNode().GetId()
	switch {
	case st.node == "" && nodeID == "":
		return false, status.Error(codes.InvalidArgument, "the first request names no node")
	case st.node == "":
		if err := s.cfg.Policy.Authorize(st.identity, nodeID); err != nil {
			s.log.Warn("xDS stream refused", "node", nodeID, "identity", st.identity.String(), "err", err)
			return false, status.Error(codes.PermissionDenied, err.Error())
		}
		st.node, st.kind = nodeID, s.kind(nodeID)
		ns := s.node(nodeID)
		ns.streams[id] = st
		if len(ns.streams) == 1 {
			s.metrics.connected.WithLabelValues(st.kind).Inc()
		}
		ns.status.Connected = true
		s.log.Info("xDS stream open", "node", nodeID, "identity", st.identity.String())
	case nodeID != "" && nodeID != st.node:
		return false, status.Errorf(codes.PermissionDenied, "the stream of node %s cannot speak for node %s", st.node, nodeID)
	}
	ns := s.node(st.node)
	now := time.Now()
	if e := req.GetErrorDetail(); e != nil {
		rejected := st.nonces[req.GetResponseNonce()]
		s.metrics.pushErrors.WithLabelValues("nack").Inc()
		s.log.Warn("node rejected its configuration", "node", st.node, "type", req.GetTypeUrl(), "version", rejected, "err", e.GetMessage())
		ns.status.Rejected = e.GetMessage()
		ns.status.RejectedVersion, ns.status.RejectedBridges = "", nil // unknown: concerns every bridge
		if vi := ns.versions[rejected]; vi != nil {
			ns.status.RejectedVersion = rejected
			ns.status.RejectedBridges = slices.Sorted(maps.Keys(vi.bridges))
		}
		ns.status.Updated = now
		return true, nil
	}
	if req.GetVersionInfo() == "" {
		return false, nil
	}
	st.acked[req.GetTypeUrl()] = req.GetVersionInfo()
	// The node is at the version whose every type it has; none while it
	// has some types of one and some of another (or a version from before
	// this replica's time: a new one is on its way).
	v, vi := ns.version(st.has)
	if vi == nil {
		return false, nil
	}
	how := reconnected
	if req.GetResponseNonce() != "" {
		how = acknowledged
	}
	return s.reached(ns, st.kind, v, vi, how, now), nil
}

// has reports whether the stream's node has every type of vi at its
// version; s.mu is held.
func (st *streamState) has(vi *versionInfo) bool {
	for t, tv := range vi.types {
		if st.acked[t] != tv {
			return false
		}
	}
	return true
}

// How a node came to a version.
const (
	acknowledged = iota // it acknowledged a response
	reconnected         // its stream opened naming the versions it kept
	held                // it had every type of the version already
)

// reached records that the node is at version v; s.mu is held. It
// reports whether the node's status changed.
func (s *Server) reached(ns *nodeState, kind, v string, vi *versionInfo, how int, now time.Time) bool {
	if how == acknowledged && !vi.observed {
		vi.observed = true
		s.metrics.latency.WithLabelValues(kind).Observe(now.Sub(vi.setAt).Seconds())
	}
	// A reconnecting node names the version it kept, not the one it
	// refused: that clears no rejection.
	clearRejected := ns.status.Rejected != "" && how != reconnected && ns.status.RejectedVersion != v
	if ns.status.Version == v && !clearRejected {
		return false
	}
	ns.status.Version = v
	ns.status.Bridges = vi.bridges
	if clearRejected {
		ns.status.Rejected, ns.status.RejectedVersion, ns.status.RejectedBridges = "", "", nil
	}
	ns.status.Updated = now
	return true
}

// OnStreamResponse counts the push and remembers its nonce.
func (s *Server) OnStreamResponse(_ context.Context, id int64, req *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	s.metrics.pushes.WithLabelValues(shortType(resp.GetTypeUrl())).Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[id]; st != nil && st.node != "" {
		if len(st.nonces) > 64 {
			clear(st.nonces)
		}
		// The response's version is its type's: remember the node's
		// version it is part of, the newest set with it.
		typ, tv := resp.GetTypeUrl(), resp.GetVersionInfo()
		v, _ := s.node(st.node).version(func(vi *versionInfo) bool { return vi.types[typ] == tv })
		st.nonces[resp.GetNonce()] = v
	}
}

// OnFetchRequest refuses REST fetches (never registered; for the interface).
func (s *Server) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "fetch is not served")
}

// OnFetchResponse does nothing.
func (s *Server) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// OnDeltaStreamOpen refuses incremental xDS: carrier and stowaway speak
// state of the world.
func (s *Server) OnDeltaStreamOpen(context.Context, int64, string) error {
	return status.Error(codes.Unimplemented, "incremental xDS is not served; use the state-of-the-world stream")
}

// OnDeltaStreamClosed does nothing.
func (s *Server) OnDeltaStreamClosed(int64, *corev3.Node) {}

// OnStreamDeltaRequest does nothing.
func (s *Server) OnStreamDeltaRequest(int64, *discoveryv3.DeltaDiscoveryRequest) error { return nil }

// OnStreamDeltaResponse does nothing.
func (s *Server) OnStreamDeltaResponse(int64, *discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse) {
}

var _ server.Callbacks = (*Server)(nil)

// cacheLogger sends go-control-plane's logs to slog at debug level.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) Debugf(format string, args ...any) { c.l.Debug(fmt.Sprintf(format, args...)) }
func (c cacheLogger) Infof(format string, args ...any)  { c.l.Debug(fmt.Sprintf(format, args...)) }
func (c cacheLogger) Warnf(format string, args ...any)  { c.l.Warn(fmt.Sprintf(format, args...)) }
func (c cacheLogger) Errorf(format string, args ...any) { c.l.Error(fmt.Sprintf(format, args...)) }

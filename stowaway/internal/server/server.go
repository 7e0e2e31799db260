// Package server assembles stowaway: one userspace WireGuard endpoint for
// all developers, the carrier relay on top of it, and the per-peer metrics.
// Config arrives through Update (from xDS or a file) and is swapped in
// atomically: peers first, then the relay's bridges.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/stowaway/internal/config"
	"gefyra.dev/gefyra/stowaway/internal/relay"
	"gefyra.dev/gefyra/stowaway/internal/tunnel"
)

// DefaultTunnelAddress is stowaway's address inside the tunnel.
var DefaultTunnelAddress = netip.MustParseAddr("10.122.0.1")

// Options configure a Server.
type Options struct {
	PrivateKey wgnet.Key
	// WireGuardPort is the UDP port for all developers' tunnels.
	WireGuardPort int
	// TunnelAddress is stowaway's own tunnel address (DefaultTunnelAddress
	// if unset).
	TunnelAddress netip.Addr
	// MTU of the tunnel (wgnet.DefaultMTU if 0).
	MTU int
	// RelayAddr is the TCP address carriers connect to.
	RelayAddr string
	Log       *slog.Logger
	Registry  prometheus.Registerer
}

// Server is a running stowaway.
type Server struct {
	Net   *wgnet.Net
	Relay *relay.Server
	peers *tunnel.Peers
	log   *slog.Logger

	mu sync.Mutex // serialises Update
}

// New starts the WireGuard endpoint; Run serves the relay.
func New(o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		return nil, errors.New("server: no metrics registry")
	}
	if !o.TunnelAddress.IsValid() {
		o.TunnelAddress = DefaultTunnelAddress
	}
	n, err := wgnet.New(wgnet.Config{
		PrivateKey: o.PrivateKey,
		ListenPort: o.WireGuardPort,
		Address:    o.TunnelAddress,
		MTU:        o.MTU,
		Log:        o.Log,
	})
	if err != nil {
		return nil, err
	}
	peers, err := tunnel.New(n, o.Registry, o.Log)
	if err != nil {
		n.Close()
		return nil, err
	}
	r, err := relay.New(n, o.Registry, o.Log)
	if err != nil {
		n.Close()
		return nil, err
	}
	r.Addr = o.RelayAddr
	return &Server{Net: n, Relay: r, peers: peers, log: o.Log}, nil
}

// Update validates cfg and switches to it. On an error nothing changes.
func (s *Server) Update(cfg config.Config) error {
	c, err := cfg.Compile()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.peers.Update(c); err != nil {
		return fmt.Errorf("server: apply peers: %w", err)
	}
	if err := s.Relay.Update(c); err != nil {
		return err
	}
	s.log.Info("config applied", "peers", len(cfg.Peers), "bridges", len(cfg.Bridges), "credential_keys", len(cfg.CredentialKeys))
	return nil
}

// XDSCallback applies the config of every xDS update (the resources of
// config.TypeURL, merged). An invalid update is refused (NACKed) and the
// last good config stays.
func (s *Server) XDSCallback(resources map[string][]proto.Message) error {
	cfg, err := config.FromResources(resources[config.TypeURL])
	if err != nil {
		return err
	}
	return s.Update(cfg)
}

// Run serves carriers until ctx is done, then closes the tunnel.
func (s *Server) Run(ctx context.Context) error {
	defer s.Net.Close()
	return s.Relay.Run(ctx)
}

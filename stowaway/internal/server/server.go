// Package server assembles stowaway: one userspace WireGuard endpoint for
// all developers, the carrier relay on top of it, the per-peer metrics and,
// if configured, the egress that carries the developers' own traffic into
// the cluster (stowaway/internal/egress). Config arrives through Update
// (from xDS or a file) and is swapped in atomically: peers first, then the
// relay's bridges.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/stowaway/internal/config"
	"gefyra.dev/gefyra/stowaway/internal/egress"
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
	// Egress, if not nil, turns the egress on: stowaway carries its peers'
	// TCP and UDP to these networks on into the cluster, and announces
	// them on its tunnel address.
	Egress *wgnet.EgressInfo
	// EgressDialer dials the cluster for the egress (a net.Dialer if nil).
	EgressDialer egress.Dialer
	Log          *slog.Logger
	Registry     prometheus.Registerer
}

// Server is a running stowaway.
type Server struct {
	Net   *wgnet.Net
	Relay *relay.Server
	// Egress is nil unless Options.Egress was set.
	Egress *egress.Egress
	peers  *tunnel.Peers
	info   net.Listener // the egress announcement's, on the tunnel address
	log    *slog.Logger

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
	if o.Egress != nil {
		if err := o.Egress.Validate(); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		if o.Egress.Contains(o.TunnelAddress) {
			return nil, fmt.Errorf("server: the egress networks %v hold the tunnel address %s", o.Egress.Networks, o.TunnelAddress)
		}
	}
	n, err := wgnet.New(wgnet.Config{
		PrivateKey: o.PrivateKey,
		ListenPort: o.WireGuardPort,
		Address:    o.TunnelAddress,
		MTU:        o.MTU,
		Log:        o.Log,
		Forwarding: o.Egress != nil,
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
	srv := &Server{Net: n, Relay: r, peers: peers, log: o.Log}
	if o.Egress != nil {
		d := o.EgressDialer
		if d == nil {
			d = &net.Dialer{}
		}
		eg, err := egress.New(*o.Egress, d, o.Registry, o.Log)
		if err != nil {
			n.Close()
			return nil, err
		}
		ln, err := n.Listen("tcp", ":"+strconv.Itoa(wgnet.EgressInfoPort))
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("server: egress announcement: %w", err)
		}
		// stowaway's own address is no way out: its ports that nothing
		// serves (the agents' liveness probes knock there) answer as
		// without the egress.
		own := o.TunnelAddress.Unmap()
		n.HandleTCP(func(r *wgnet.TCPRequest) {
			if r.Local.Addr() == own {
				r.Reject()
				return
			}
			eg.HandleTCP(r)
		})
		n.HandleUDP(func(r *wgnet.UDPRequest) {
			if r.Local.Addr() != own {
				eg.HandleUDP(r)
			}
		})
		srv.Egress, srv.info = eg, ln
	}
	return srv, nil
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
	if s.Egress != nil {
		peers := make(map[netip.Addr]string, len(c.Config.Peers))
		for _, p := range c.Config.Peers {
			peers[p.Address] = p.Name
		}
		s.Egress.SetPeers(peers)
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

// Run serves carriers (and the egress) until ctx is done, then closes the
// tunnel.
func (s *Server) Run(ctx context.Context) error {
	defer s.Net.Close()
	if s.Egress == nil {
		return s.Relay.Run(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Egress.Serve(ctx, s.info) }()
	err := s.Relay.Run(ctx)
	cancel()
	return errors.Join(err, <-errc)
}

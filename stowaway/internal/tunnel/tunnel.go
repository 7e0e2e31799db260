// Package tunnel keeps stowaway's WireGuard endpoint in step with its
// config (one WireGuard peer per configured developer, allowed only its own
// tunnel address) and exports the per-peer counters as metrics.
package tunnel

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/stowaway/internal/config"
)

// Peers applies config peers to a WireGuard endpoint.
type Peers struct {
	net *wgnet.Net
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex // guards names
	names map[wgnet.Key]string
}

// New returns Peers for n and registers the peer metrics with reg.
func New(n *wgnet.Net, reg prometheus.Registerer, log *slog.Logger) (*Peers, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Peers{net: n, log: log, now: time.Now, names: map[wgnet.Key]string{}}
	if err := reg.Register(p); err != nil {
		return nil, err
	}
	return p, nil
}

// Update makes the endpoint's peers exactly cfg's peers. Peers that stay
// keep their sessions. A peer's only allowed IP is its own tunnel address,
// so it can neither receive nor send for anybody else's.
func (p *Peers) Update(cfg *config.Compiled) error {
	peers := make([]wgnet.Peer, 0, len(cfg.Config.Peers))
	names := make(map[wgnet.Key]string, len(cfg.Config.Peers))
	for _, cp := range cfg.Config.Peers {
		peers = append(peers, wgnet.Peer{
			PublicKey:  cp.PublicKey,
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(cp.Address, cp.Address.BitLen())},
		})
		names[cp.PublicKey] = cp.Name
	}
	if err := p.net.SetPeers(peers); err != nil {
		return err
	}
	p.mu.Lock()
	p.names = names
	p.mu.Unlock()
	return nil
}

var (
	descHandshake = prometheus.NewDesc("gefyra_stowaway_peer_last_handshake_seconds",
		"Seconds since the last WireGuard handshake with the peer (absent before the first).", []string{"peer"}, nil)
	descRx = prometheus.NewDesc("gefyra_stowaway_peer_received_bytes_total",
		"WireGuard bytes received from the peer.", []string{"peer"}, nil)
	descTx = prometheus.NewDesc("gefyra_stowaway_peer_sent_bytes_total",
		"WireGuard bytes sent to the peer.", []string{"peer"}, nil)
	descPeers = prometheus.NewDesc("gefyra_stowaway_peers",
		"Configured WireGuard peers.", nil, nil)
)

// Describe implements prometheus.Collector.
func (p *Peers) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHandshake
	ch <- descRx
	ch <- descTx
	ch <- descPeers
}

// Collect implements prometheus.Collector: it reads the counters at scrape
// time.
func (p *Peers) Collect(ch chan<- prometheus.Metric) {
	stats, err := p.net.Stats()
	if err != nil {
		p.log.Warn("tunnel: reading peer stats", "err", err)
		return
	}
	p.mu.Lock()
	names := p.names
	p.mu.Unlock()
	now := p.now()
	n := 0
	for _, s := range stats {
		name, ok := names[s.PublicKey]
		if !ok {
			continue
		}
		n++
		if !s.LastHandshake.IsZero() {
			ch <- prometheus.MustNewConstMetric(descHandshake, prometheus.GaugeValue, now.Sub(s.LastHandshake).Seconds(), name)
		}
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(s.RxBytes), name)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(s.TxBytes), name)
	}
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(n))
}

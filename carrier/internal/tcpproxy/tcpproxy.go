// Package tcpproxy is carrier's TCP data path: each client connection of a
// TCP listener goes whole to the listener's cluster (a bridge through
// stowaway) or, if the bridge cannot be reached, to the fallback.
package tcpproxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/upstream"
	"gefyra.dev/gefyra/internal/pipe"
)

// Proxy serves client connections of TCP listeners.
type Proxy struct {
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// ServeConn relays c to its upstream until both directions end or ctx is
// done, and closes c.
func (p *Proxy) ServeConn(ctx context.Context, c net.Conn, l *config.Listener) {
	defer c.Close()
	t := l.TCP
	var client netip.AddrPort
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		client = ta.AddrPort()
	}
	target, stats := t.Cluster, t.Stats
	reason := metrics.ReasonClusterAbsent
	var uc *net.TCPConn
	var err error
	if target != nil {
		uc, err = upstream.Dial(ctx, target, client)
		if err != nil {
			var de *upstream.DialError
			kind := upstream.KindConnect
			if errors.As(err, &de) {
				kind = de.Kind
			}
			p.Metrics.UpstreamError(target.Name, kind)
			switch kind {
			case upstream.KindRefused:
				reason = metrics.ReasonBridgeRefused
			case upstream.KindNoEndpoints:
				reason = metrics.ReasonNoEndpoints
			default:
				reason = metrics.ReasonConnectFailed
			}
			if target.Bridge == nil || l.Fallback == nil || l.Fallback == target {
				p.log(slog.LevelWarn, "upstream connect failed", "listener", l.Name, "cluster", target.Name, "err", err)
				return
			}
			p.log(slog.LevelDebug, "bridge unreachable, using the fallback", "listener", l.Name, "bridge", target.BridgeName(), "err", err)
			target = nil
		}
	}
	if target == nil {
		if l.Fallback == nil {
			p.log(slog.LevelWarn, "no upstream and no fallback", "listener", l.Name, "reason", reason)
			return
		}
		p.Metrics.Fallback(t.Cluster.BridgeName(), reason)
		target, stats = l.Fallback, t.FallbackStats
		if uc, err = upstream.Dial(ctx, target, client); err != nil {
			var de *upstream.DialError
			if errors.As(err, &de) {
				p.Metrics.UpstreamError(target.Name, de.Kind)
			}
			p.log(slog.LevelWarn, "fallback connect failed", "listener", l.Name, "cluster", target.Name, "err", err)
			return
		}
	}
	stats.Connection()
	up, down, err := pipe.Join(ctx, c, uc)
	stats.Bytes(up, down)
	if err != nil {
		p.Metrics.UpstreamError(target.Name, metrics.ErrIO)
		p.log(slog.LevelDebug, "connection ended with an error", "listener", l.Name, "err", err)
	}
}

func (p *Proxy) log(level slog.Level, msg string, args ...any) {
	if p.Log != nil {
		p.Log.Log(context.Background(), level, msg, args...)
	}
}

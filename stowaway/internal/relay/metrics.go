package relay

import "github.com/prometheus/client_golang/prometheus"

// Refusal reasons, the values of the reason label.
const (
	ReasonMalformed       = "malformed"
	ReasonVersion         = "unsupported_version"
	ReasonUnauthenticated = "unauthenticated"
	ReasonForbidden       = "forbidden"
	ReasonUnknownBridge   = "unknown_bridge"
	ReasonPortNotAllowed  = "port_not_allowed"
	ReasonUnknownPeer     = "unknown_peer"
	ReasonPeerDown        = "peer_down"
	ReasonDialFailed      = "dial_failed"
	ReasonNotConfigured   = "not_configured"
)

var reasons = []string{
	ReasonMalformed, ReasonVersion, ReasonUnauthenticated, ReasonForbidden, ReasonUnknownBridge,
	ReasonPortNotAllowed, ReasonUnknownPeer, ReasonPeerDown, ReasonDialFailed, ReasonNotConfigured,
}

// Direction label values of the byte counter.
const (
	ToPeer   = "to_peer"
	FromPeer = "from_peer"
)

// metrics are the relay's per-bridge counters.
type metrics struct {
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	bytes       *prometheus.CounterVec
	refused     *prometheus.CounterVec
	dial        *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_stowaway_connections_total",
			Help: "Carrier connections accepted and relayed, by bridge.",
		}, []string{"bridge"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gefyra_stowaway_active_connections",
			Help: "Carrier connections being relayed now, by bridge.",
		}, []string{"bridge"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_stowaway_relayed_bytes_total",
			Help: "Payload bytes relayed, by bridge and direction (to_peer: carrier to developer; from_peer: back).",
		}, []string{"bridge", "direction"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_stowaway_refused_connections_total",
			Help: "Carrier connections refused, by reason.",
		}, []string{"reason"}),
		dial: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gefyra_stowaway_peer_dial_duration_seconds",
			Help:    "Time to open a connection to the developer's side through the tunnel, by bridge.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"bridge"}),
	}
	for _, c := range []prometheus.Collector{m.connections, m.active, m.bytes, m.refused, m.dial} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every reason shows as 0 from the start, so rate() works on the first
	// refusal.
	for _, r := range reasons {
		m.refused.WithLabelValues(r)
	}
	return m, nil
}

// forget drops the series of a bridge that is gone. Connections still open
// on it hold their own children and finish unobserved.
func (m *metrics) forget(bridge string) {
	m.connections.DeleteLabelValues(bridge)
	m.active.DeleteLabelValues(bridge)
	m.bytes.DeleteLabelValues(bridge, ToPeer)
	m.bytes.DeleteLabelValues(bridge, FromPeer)
	m.dial.DeleteLabelValues(bridge)
}

// RefusedCounter is the refusal counter for reason (for tests and tools).
func (s *Server) RefusedCounter(reason string) prometheus.Counter {
	return s.m.refused.WithLabelValues(reason)
}

// ActiveGauge is the active connections gauge of bridge.
func (s *Server) ActiveGauge(bridge string) prometheus.Gauge {
	return s.m.active.WithLabelValues(bridge)
}

// BytesCounter is the relayed bytes counter of bridge in direction.
func (s *Server) BytesCounter(bridge, direction string) prometheus.Counter {
	return s.m.bytes.WithLabelValues(bridge, direction)
}

package egress

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Refusal reasons, the values of the reason label.
const (
	// ReasonUnknownPeer: the source is no configured peer's tunnel address.
	ReasonUnknownPeer = "unknown_peer"
	// ReasonNotAllowed: the destination is outside the egress networks.
	ReasonNotAllowed = "not_allowed"
	// ReasonDialFailed: the destination did not answer from stowaway.
	ReasonDialFailed = "dial_failed"
)

// Protocol label values.
const (
	ProtoTCP = "tcp"
	ProtoUDP = "udp"
)

// Direction label values of the byte counter.
const (
	ToCluster   = "to_cluster"
	FromCluster = "from_cluster"
)

type metrics struct {
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	bytes       *prometheus.CounterVec
	refused     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_stowaway_egress_connections_total",
			Help: "TCP connections and UDP flows from a peer into the cluster, relayed, by peer and protocol.",
		}, []string{"peer", "protocol"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gefyra_stowaway_egress_active_connections",
			Help: "TCP connections and UDP flows from a peer into the cluster being relayed now, by peer and protocol.",
		}, []string{"peer", "protocol"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_stowaway_egress_bytes_total",
			Help: "Payload bytes relayed between a peer and the cluster, by peer, protocol and direction (to_cluster, from_cluster).",
		}, []string{"peer", "protocol", "direction"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_stowaway_egress_refused_total",
			Help: "TCP connections and UDP flows into the cluster refused, by protocol and reason.",
		}, []string{"protocol", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.connections, m.active, m.bytes, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, p := range []string{ProtoTCP, ProtoUDP} {
		for _, r := range []string{ReasonUnknownPeer, ReasonNotAllowed, ReasonDialFailed} {
			m.refused.WithLabelValues(p, r)
		}
	}
	return m, nil
}

// forget drops the series of a peer that is gone.
func (m *metrics) forget(peer string) {
	l := prometheus.Labels{"peer": peer}
	m.connections.DeletePartialMatch(l)
	m.active.DeletePartialMatch(l)
	m.bytes.DeletePartialMatch(l)
}

// Counters for tests and tools.

// ConnectionsCounter counts peer's relayed connections of proto.
func (e *Egress) ConnectionsCounter(peer, proto string) prometheus.Counter {
	return e.m.connections.WithLabelValues(peer, proto)
}

// BytesCounter counts peer's relayed bytes of proto in direction.
func (e *Egress) BytesCounter(peer, proto, direction string) prometheus.Counter {
	return e.m.bytes.WithLabelValues(peer, proto, direction)
}

// RefusedCounter counts refusals of proto for reason.
func (e *Egress) RefusedCounter(proto, reason string) prometheus.Counter {
	return e.m.refused.WithLabelValues(proto, reason)
}

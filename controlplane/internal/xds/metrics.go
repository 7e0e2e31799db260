package xds

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	pushes          *prometheus.CounterVec   // type
	pushErrors      *prometheus.CounterVec   // reason: nack, snapshot
	connected       *prometheus.GaugeVec     // kind
	latency         *prometheus.HistogramVec // kind
	translateErrors prometheus.Counter
	refused         *prometheus.CounterVec // code
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_controlplane_xds_pushes_total",
			Help: "xDS responses sent to data-plane nodes, by resource type.",
		}, []string{"type"}),
		pushErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_controlplane_xds_push_errors_total",
			Help: "Configurations a node rejected (nack) or that were not published because they were inconsistent (snapshot).",
		}, []string{"reason"}),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gefyra_controlplane_xds_connected_nodes",
			Help: "Data-plane nodes with an open xDS stream to this replica, by kind (carrier, stowaway).",
		}, []string{"kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gefyra_controlplane_xds_push_latency_seconds",
			Help:    "Time from publishing a node's new configuration to the node's acknowledgement of it, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"kind"}),
		translateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gefyra_controlplane_translate_errors_total",
			Help: "Models that could not be translated to xDS; the last good configuration stayed.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_controlplane_xds_streams_refused_total",
			Help: "xDS streams refused, by gRPC code (Unauthenticated, PermissionDenied, Unavailable when the API server could not review the token).",
		}, []string{"code"}),
	}
	reg.MustRegister(m.pushes, m.pushErrors, m.connected, m.latency, m.translateErrors, m.refused)
	return m
}

// shortType is the last part of a type URL ("Listener").
func shortType(typeURL string) string {
	return typeURL[strings.LastIndex(typeURL, ".")+1:]
}

// Package metrics holds carrier's Prometheus metrics, registered on a
// registry passed in, and cheap per-route handles so the data path does not
// look up label values on every request.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Fallback reasons.
const (
	ReasonNoRoute       = "no_route"        // no route matched, or the route names no known cluster
	ReasonBridgeRefused = "bridge_refused"  // stowaway answered with a refusal
	ReasonConnectFailed = "connect_failed"  // stowaway could not be reached
	ReasonRoutesPending = "routes_pending"  // the listener's RouteConfiguration has not arrived yet
	ReasonNoEndpoints   = "no_endpoints"    // the bridge cluster has no endpoints
	ReasonClusterAbsent = "cluster_missing" // the route names a cluster that is not configured
	ReasonNotHTTP       = "not_http"        // a connection to an HTTP port did not start as HTTP
)

// Upstream error kinds.
const (
	ErrConnect  = "connect"
	ErrRefused  = "refused"
	ErrTimeout  = "timeout"
	ErrProtocol = "protocol"
	ErrIO       = "io"
)

// Metrics is carrier's set of metrics.
type Metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	bytes        *prometheus.CounterVec
	connections  *prometheus.CounterVec
	active       *prometheus.GaugeVec
	upstreamErrs *prometheus.CounterVec
	fallbacks    *prometheus.CounterVec
	configs      *prometheus.CounterVec

	mu     sync.Mutex // guards series
	series map[seriesKey]*Series
}

type seriesKey struct{ bridge, route string }

// New registers carrier's metrics on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_carrier_requests_total",
			Help: "HTTP requests answered, by bridge (empty for the fallback and local answers), route and status code.",
		}, []string{"bridge", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gefyra_carrier_request_duration_seconds",
			Help:    "Time from a request's first byte to the end of its response, by bridge.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"bridge"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_carrier_bytes_total",
			Help: "Payload bytes forwarded, by bridge and direction (upstream: towards the bridge or fallback; downstream: back to the client).",
		}, []string{"bridge", "direction"}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_carrier_tcp_connections_total",
			Help: "TCP connections forwarded on TCP listeners, by bridge.",
		}, []string{"bridge", "route"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gefyra_carrier_active_connections",
			Help: "Client connections open now, by listener.",
		}, []string{"listener"}),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_carrier_upstream_errors_total",
			Help: "Failures talking to an upstream, by cluster and kind (connect, refused, timeout, protocol, io).",
		}, []string{"cluster", "kind"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_carrier_fallbacks_total",
			Help: "Requests and connections sent to the fallback, by the bridge they were meant for (empty if none) and reason.",
		}, []string{"bridge", "reason"}),
		configs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_carrier_config_updates_total",
			Help: "Configuration updates received over xDS, by result (applied, rejected).",
		}, []string{"result"}),
		series: map[seriesKey]*Series{},
	}
	reg.MustRegister(m.requests, m.duration, m.bytes, m.connections, m.active, m.upstreamErrs, m.fallbacks, m.configs)
	return m
}

// Series is the handles of one (bridge, route) pair.
type Series struct {
	m             *Metrics
	bridge, route string
	codes         [600]atomic.Pointer[prometheus.Counter]
	fallbacks     [len(reasons)]atomic.Pointer[prometheus.Counter]
	Duration      prometheus.Observer
	BytesUp       prometheus.Counter
	BytesDown     prometheus.Counter
}

// Series returns the (cached) handles for bridge and route. Safe on a nil
// *Metrics: it returns nil, and every method of a nil *Series does nothing.
func (m *Metrics) Series(bridge, route string) *Series {
	if m == nil {
		return nil
	}
	k := seriesKey{bridge, route}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.series[k]; s != nil {
		return s
	}
	s := &Series{
		m: m, bridge: bridge, route: route,
		Duration:  m.duration.WithLabelValues(bridge),
		BytesUp:   m.bytes.WithLabelValues(bridge, "upstream"),
		BytesDown: m.bytes.WithLabelValues(bridge, "downstream"),
	}
	m.series[k] = s
	return s
}

// Request counts one answered request with its status code and duration.
func (s *Series) Request(code int, seconds float64) {
	if s == nil {
		return
	}
	if code < 0 || code >= len(s.codes) {
		code = 0
	}
	c := s.codes[code].Load()
	if c == nil {
		nc := s.m.requests.WithLabelValues(s.bridge, s.route, strconv.Itoa(code))
		s.codes[code].CompareAndSwap(nil, &nc)
		c = s.codes[code].Load()
	}
	(*c).Inc()
	s.Duration.Observe(seconds)
}

// Bytes adds forwarded payload bytes.
func (s *Series) Bytes(up, down int64) {
	if s == nil {
		return
	}
	if up > 0 {
		s.BytesUp.Add(float64(up))
	}
	if down > 0 {
		s.BytesDown.Add(float64(down))
	}
}

var reasons = [...]string{ReasonNoRoute, ReasonBridgeRefused, ReasonConnectFailed, ReasonRoutesPending, ReasonNoEndpoints, ReasonClusterAbsent, ReasonNotHTTP}

// Fallback counts a request or connection of this series' bridge (and
// route) that went to the fallback instead.
func (s *Series) Fallback(reason string) {
	if s == nil {
		return
	}
	i := 0
	for i < len(reasons) && reasons[i] != reason {
		i++
	}
	if i == len(reasons) {
		s.m.Fallback(s.bridge, reason)
		return
	}
	c := s.fallbacks[i].Load()
	if c == nil {
		nc := s.m.fallbacks.WithLabelValues(s.bridge, reason)
		s.fallbacks[i].CompareAndSwap(nil, &nc)
		c = s.fallbacks[i].Load()
	}
	(*c).Inc()
}

// Connection counts one forwarded TCP connection.
func (s *Series) Connection() {
	if s == nil {
		return
	}
	s.m.connections.WithLabelValues(s.bridge, s.route).Inc()
}

// Active returns the gauge of open client connections of a listener.
func (m *Metrics) Active(listener string) prometheus.Gauge {
	if m == nil {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "unused"})
	}
	return m.active.WithLabelValues(listener)
}

// UpstreamError counts a failure talking to cluster.
func (m *Metrics) UpstreamError(cluster, kind string) {
	if m == nil {
		return
	}
	m.upstreamErrs.WithLabelValues(cluster, kind).Inc()
}

// Fallback counts a request or connection sent to the fallback.
func (m *Metrics) Fallback(bridge, reason string) {
	if m == nil {
		return
	}
	m.fallbacks.WithLabelValues(bridge, reason).Inc()
}

// ConfigUpdate counts a configuration update by result.
func (m *Metrics) ConfigUpdate(applied bool) {
	if m == nil {
		return
	}
	r := "rejected"
	if applied {
		r = "applied"
	}
	m.configs.WithLabelValues(r).Inc()
}

package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

// CarrierAdminPort is the port of carrier's /metrics in a bridged Pod
// (carrier's default admin address, :19901).
const CarrierAdminPort = "19901"

// metricsTimeout bounds reading one carrier's /metrics: a Pod that does
// not answer costs `gefyra status` its counts, not a hang.
const metricsTimeout = 5 * time.Second

// maxMetricsBytes bounds what one carrier's /metrics may send.
const maxMetricsBytes = 8 << 20

// Traffic is what the carriers of a bridge's Pods counted for it.
type Traffic struct {
	// Requests are the HTTP requests the bridge answered.
	Requests uint64 `json:"requests"`
	// ServerErrors are those answered with a 5xx status.
	ServerErrors uint64 `json:"serverErrors"`
	// Fallbacks are requests and connections meant for the bridge that
	// went to the fallback (the local side unreachable).
	Fallbacks uint64 `json:"fallbacks"`
	// Connections are the TCP connections of the bridge's TCP ports.
	Connections uint64 `json:"connections"`
	// Pods is how many carriers were read.
	Pods int `json:"pods"`
}

// ErrorRate is the share of the bridge's requests answered with a 5xx.
func (t Traffic) ErrorRate() float64 {
	if t.Requests == 0 {
		return 0
	}
	return float64(t.ServerErrors) / float64(t.Requests)
}

// BridgeTraffic reads the metrics of the carriers in the Pods of bridge
// namespace/name, through the API server's Pod proxy (it needs get on
// pods/proxy in the namespace), and sums what they counted for it.
func (c *Cluster) BridgeTraffic(ctx context.Context, namespace, name string) (Traffic, error) {
	var b gefyrav1.GefyraBridge
	if err := c.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &b); err != nil {
		return Traffic{}, err
	}
	mountName := b.Status.Mount
	if mountName == "" {
		mountName = gefyrav1.MountName(b.Spec.Target)
	}
	var m gefyrav1.GefyraMount
	if err := c.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: mountName}, &m); err != nil {
		if apierrors.IsNotFound(err) {
			return Traffic{}, nil // no carrier yet, nothing counted
		}
		return Traffic{}, err
	}
	var t Traffic
	key := namespace + "/" + name
	for _, p := range m.Status.Pods {
		pctx, cancel := context.WithTimeout(ctx, metricsTimeout)
		raw, err := c.Kube.CoreV1().Pods(namespace).ProxyGet("http", p.Name, CarrierAdminPort, "/metrics", nil).DoRaw(pctx)
		cancel()
		if err != nil {
			if apierrors.IsForbidden(err) {
				return Traffic{}, fmt.Errorf("reading carrier's metrics in Pod %s/%s needs get on pods/proxy: %s", namespace, p.Name, apiMessage(err))
			}
			return Traffic{}, fmt.Errorf("reading carrier's metrics in Pod %s/%s: %s", namespace, p.Name, apiMessage(err))
		}
		if len(raw) > maxMetricsBytes {
			return Traffic{}, fmt.Errorf("carrier's metrics in Pod %s/%s: more than %d bytes", namespace, p.Name, maxMetricsBytes)
		}
		pt, err := ParseCarrierMetrics(bytes.NewReader(raw), key)
		if err != nil {
			return Traffic{}, fmt.Errorf("carrier's metrics in Pod %s/%s: %w", namespace, p.Name, err)
		}
		t.Requests += pt.Requests
		t.ServerErrors += pt.ServerErrors
		t.Fallbacks += pt.Fallbacks
		t.Connections += pt.Connections
		t.Pods++
	}
	return t, nil
}

// ParseCarrierMetrics reads carrier's /metrics (Prometheus text format)
// and returns what it counted for the bridge whose label is bridge
// ("namespace/name").
func ParseCarrierMetrics(r io.Reader, bridge string) (Traffic, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(r, maxMetricsBytes))
	if err != nil {
		return Traffic{}, err
	}
	var t Traffic
	each := func(name string, f func(m *dto.Metric, v uint64)) {
		fam := fams[name]
		if fam == nil {
			return
		}
		for _, m := range fam.GetMetric() {
			if label(m, "bridge") != bridge || m.GetCounter() == nil {
				continue
			}
			v := m.GetCounter().GetValue()
			if v < 0 || v != v { // NaN
				continue
			}
			f(m, uint64(v))
		}
	}
	each("gefyra_carrier_requests_total", func(m *dto.Metric, v uint64) {
		t.Requests += v
		if strings.HasPrefix(label(m, "code"), "5") {
			t.ServerErrors += v
		}
	})
	each("gefyra_carrier_fallbacks_total", func(_ *dto.Metric, v uint64) { t.Fallbacks += v })
	each("gefyra_carrier_tcp_connections_total", func(_ *dto.Metric, v uint64) { t.Connections += v })
	return t, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

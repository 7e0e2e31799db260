// Package publish batches bursts of cluster events into few model builds:
// after an event it waits for a quiet Holdoff, but never longer than MaxDelay
// from the first unpublished event, then builds the model and hands it to
// the Publisher. A build or publish that fails keeps the last good model in
// place, is counted, and is retried after MaxDelay.
package publish

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gefyra.dev/gefyra/controlplane/internal/model"
)

// Batcher builds and publishes models after bursts of events.
type Batcher struct {
	// Holdoff is the quiet time after the last event before a build.
	Holdoff time.Duration
	// MaxDelay bounds the wait after the first unpublished event.
	MaxDelay time.Duration
	// Build makes the model from the current state.
	Build func(ctx context.Context) (*model.Model, error)
	// Publisher receives each model.
	Publisher model.Publisher
	Log       *slog.Logger
	Metrics   *Metrics

	notify chan struct{}
}

// Metrics count the batcher's work.
type Metrics struct {
	Publishes *prometheus.CounterVec // result: ok, build_error, publish_error
	Events    prometheus.Counter
	Last      prometheus.Gauge
}

// NewMetrics registers the batcher's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_controlplane_model_publishes_total",
			Help: "Model builds handed to the publisher, by result (ok, build_error, publish_error).",
		}, []string{"result"}),
		Events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gefyra_controlplane_model_events_total",
			Help: "Cluster events that asked for a new model.",
		}),
		Last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gefyra_controlplane_model_last_publish_timestamp_seconds",
			Help: "When the last model was published successfully.",
		}),
	}
	reg.MustRegister(m.Publishes, m.Events, m.Last)
	return m
}

// New returns a batcher; Holdoff and MaxDelay default to 100ms and 1s.
func New(b Batcher) *Batcher {
	if b.Holdoff <= 0 {
		b.Holdoff = 100 * time.Millisecond
	}
	if b.MaxDelay < b.Holdoff {
		b.MaxDelay = max(time.Second, b.Holdoff)
	}
	if b.Log == nil {
		b.Log = slog.New(slog.DiscardHandler)
	}
	b.notify = make(chan struct{}, 1)
	return &b
}

// Notify says something changed. It never blocks.
func (b *Batcher) Notify() {
	if b.Metrics != nil {
		b.Metrics.Events.Inc()
	}
	select {
	case b.notify <- struct{}{}:
	default:
	}
}

// Run publishes until ctx is done. The first model is built right away.
func (b *Batcher) Run(ctx context.Context) error {
	pending := true
	first := time.Now()
	holdoff := time.NewTimer(0)
	defer holdoff.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.notify:
			if !pending {
				pending = true
				first = time.Now()
			}
			wait := min(b.Holdoff, time.Until(first.Add(b.MaxDelay)))
			holdoff.Reset(max(wait, 0))
		case <-holdoff.C:
			if !pending {
				continue
			}
			pending = false
			if !b.publish(ctx) && ctx.Err() == nil {
				pending = true
				first = time.Now()
				holdoff.Reset(b.MaxDelay)
			}
		}
	}
}

func (b *Batcher) publish(ctx context.Context) bool {
	m, err := b.Build(ctx)
	if err != nil {
		b.count("build_error")
		b.Log.Error("building the model failed; the last good one stays published", "err", err)
		return false
	}
	m.Sort()
	if err := b.Publisher.Publish(ctx, m); err != nil {
		b.count("publish_error")
		b.Log.Error("publishing the model failed", "err", err)
		return false
	}
	b.count("ok")
	if b.Metrics != nil {
		b.Metrics.Last.SetToCurrentTime()
	}
	b.Log.Debug("model published", "mounts", len(m.Mounts), "bridges", len(m.Bridges), "clients", len(m.Clients))
	return true
}

func (b *Batcher) count(result string) {
	if b.Metrics != nil {
		b.Metrics.Publishes.WithLabelValues(result).Inc()
	}
}

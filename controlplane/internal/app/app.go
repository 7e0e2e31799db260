// Package app wires the control plane together: the controller-runtime
// manager with leader election, the operator's reconcilers, the model
// batcher that feeds the Publisher on every replica, and the admin endpoints.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/controlplane/internal/operator"
	"gefyra.dev/gefyra/controlplane/internal/publish"
	"gefyra.dev/gefyra/internal/admin"
)

// Config configures the control plane.
type Config struct {
	Operator operator.Config
	// Kube is the API server connection.
	Kube *rest.Config
	// LeaderElection lets several replicas run; only the leader reconciles.
	LeaderElection bool
	// AdminAddr serves /metrics, /healthz and /readyz.
	AdminAddr string
	// Holdoff and MaxDelay batch model rebuilds.
	Holdoff, MaxDelay time.Duration
	// Publisher receives the models; nil logs a summary of each.
	Publisher model.Publisher
	Log       *slog.Logger
	Registry  *prometheus.Registry
}

// ControlPlane is the running control plane.
type ControlPlane struct {
	cfg     Config
	mgr     manager.Manager
	admin   *admin.Server
	batcher *publish.Batcher
}

// New builds the control plane; Run starts it.
func New(ctx context.Context, cfg Config) (*ControlPlane, error) {
	if cfg.Kube == nil {
		return nil, errors.New("no API server configuration")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = admin.NewRegistry()
	}
	if cfg.Publisher == nil {
		cfg.Publisher = LogPublisher{Log: cfg.Log}
	}
	cfg.Operator.Log = cfg.Log.With("component", "operator")
	cfg.Operator.Registry = cfg.Registry
	if cfg.Operator.Namespace == "" {
		return nil, errors.New("the control plane's namespace is not set")
	}
	scheme, err := operator.Scheme()
	if err != nil {
		return nil, err
	}
	ctrl.SetLogger(operator.Logr(cfg.Log.With("component", "controller-runtime")))
	mgr, err := ctrl.NewManager(cfg.Kube, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         operator.CacheOptions(cfg.Operator.Namespace),
		Metrics:                       metricsserver.Options{BindAddress: "0"}, // metrics go to the admin server's own registry
		HealthProbeBindAddress:        "0",
		LeaderElection:                cfg.LeaderElection,
		LeaderElectionID:              "gefyra-controlplane",
		LeaderElectionNamespace:       cfg.Operator.Namespace,
		LeaderElectionReleaseOnCancel: true,
		Logger:                        operator.Logr(cfg.Log.With("component", "manager")),
	})
	if err != nil {
		return nil, fmt.Errorf("controller manager: %w", err)
	}
	op, err := operator.Setup(ctx, mgr, cfg.Operator)
	if err != nil {
		return nil, err
	}
	b := publish.New(publish.Batcher{
		Holdoff:   cfg.Holdoff,
		MaxDelay:  cfg.MaxDelay,
		Build:     op.Model,
		Publisher: cfg.Publisher,
		Log:       cfg.Log.With("component", "publish"),
		Metrics:   publish.NewMetrics(cfg.Registry),
	})
	if err := mgr.Add(&operator.Changes{Cache: mgr.GetCache(), Notify: b.Notify}); err != nil {
		return nil, err
	}
	return &ControlPlane{
		cfg:     cfg,
		mgr:     mgr,
		admin:   &admin.Server{Addr: cfg.AdminAddr, Registry: cfg.Registry, Log: cfg.Log.With("component", "admin")},
		batcher: b,
	}, nil
}

// Run runs until ctx is done.
func (c *ControlPlane) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if c.cfg.AdminAddr != "" {
		g.Go(func() error { return c.admin.Run(ctx) })
	}
	g.Go(func() error { return c.mgr.Start(ctx) })
	g.Go(func() error {
		if !c.mgr.GetCache().WaitForCacheSync(ctx) {
			return nil
		}
		c.admin.SetReady(true)
		return c.batcher.Run(ctx)
	})
	return g.Wait()
}

// Elected is closed when this replica leads (at once without leader
// election).
func (c *ControlPlane) Elected() <-chan struct{} { return c.mgr.Elected() }

// AdminAddr is the admin server's address once it listens.
func (c *ControlPlane) AdminAddr() string { return c.admin.ListenAddr() }

// LogPublisher logs each model's size; it stands in until an xDS server
// takes the models.
type LogPublisher struct{ Log *slog.Logger }

// Publish logs m.
func (p LogPublisher) Publish(_ context.Context, m *model.Model) error {
	p.Log.Info("model", "mounts", len(m.Mounts), "bridges", len(m.Bridges), "clients", len(m.Clients))
	return nil
}

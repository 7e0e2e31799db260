// Package app wires the control plane together: the controller-runtime
// manager with leader election, the operator's reconcilers, the model
// batcher that feeds the xDS server on every replica (each replica serves
// the carriers and stowaway connected to it), the sharing of what the nodes
// acknowledged and, on the leader, the bridges' DataPlaneReady condition,
// and the admin endpoints.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	"gefyra.dev/gefyra/controlplane/internal/xds"
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
	// Publisher receives the models too; with neither it nor XDS, a
	// summary of each model is logged.
	Publisher model.Publisher
	// XDS, if set, serves the models to carrier and stowaway.
	XDS      *XDSConfig
	Log      *slog.Logger
	Registry *prometheus.Registry
}

// XDSConfig configures the xDS half.
type XDSConfig struct {
	// Addr is the gRPC listen address, e.g. ":18000"; Listener, if set, is
	// used instead.
	Addr     string
	Listener net.Listener
	// RelayAddress is stowaway's relay as carriers dial it (host:port).
	// Empty: the ClusterIP and "relay" port of Service RelayService (the
	// cluster may have no DNS).
	RelayAddress string
	RelayService string // default "gefyra-stowaway"
	// KeySecret holds the credential signing key (created if missing);
	// default "gefyra-credential-key".
	KeySecret string
	// CredentialTTL is the bridge credentials' lifetime (default 10m);
	// they are renewed at half of it.
	CredentialTTL time.Duration
	// Audiences are the token audiences accepted besides the API server's
	// own (stowaway's projected token), e.g. "gefyra-xds".
	Audiences []string
	// StowawayServiceAccount may be node "gefyra/stowaway" (in the
	// control plane's namespace); default "gefyra-stowaway".
	StowawayServiceAccount string
	// Replica names this replica (its Pod) for sharing what its nodes
	// acknowledged.
	Replica string
}

// ControlPlane is the running control plane.
type ControlPlane struct {
	cfg     Config
	mgr     manager.Manager
	admin   *admin.Server
	batcher *publish.Batcher
	xds     *xds.Server
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
	if cfg.Publisher == nil && cfg.XDS == nil {
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
	var xs *xds.Server
	publishers := publishAll{}
	if cfg.Publisher != nil {
		publishers = append(publishers, cfg.Publisher)
	}
	if cfg.XDS != nil {
		if xs, err = setupXDS(ctx, mgr, cfg); err != nil {
			return nil, err
		}
		publishers = append(publishers, xs)
	}
	b := publish.New(publish.Batcher{
		Holdoff:   cfg.Holdoff,
		MaxDelay:  cfg.MaxDelay,
		Build:     op.Model,
		Publisher: publishers,
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
		xds:     xs,
	}, nil
}

// Run runs until ctx is done.
func (c *ControlPlane) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if c.cfg.AdminAddr != "" {
		g.Go(func() error { return c.admin.Run(ctx) })
	}
	g.Go(func() error { return c.mgr.Start(ctx) })
	if c.xds != nil {
		g.Go(func() error { return c.xds.Run(ctx) })
	}
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

// XDS is the xDS server, nil without Config.XDS.
func (c *ControlPlane) XDS() *xds.Server { return c.xds }

// publishAll hands each model to every publisher; all are tried.
type publishAll []model.Publisher

func (p publishAll) Publish(ctx context.Context, m *model.Model) error {
	var errs []error
	for _, pub := range p {
		if err := pub.Publish(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LogPublisher logs each model's size; it stands in until an xDS server
// takes the models.
type LogPublisher struct{ Log *slog.Logger }

// Publish logs m.
func (p LogPublisher) Publish(_ context.Context, m *model.Model) error {
	p.Log.Info("model", "mounts", len(m.Mounts), "bridges", len(m.Bridges), "clients", len(m.Clients))
	return nil
}

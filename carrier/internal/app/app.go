// Package app wires carrier together: the data plane (server), its
// configuration stream (internal/xdsclient) and the admin endpoints
// (internal/admin), from a Config that main fills from flags and the
// environment.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/server"
	"gefyra.dev/gefyra/internal/admin"
	"gefyra.dev/gefyra/internal/version"
	"gefyra.dev/gefyra/internal/xdsclient"
)

// Defaults.
const (
	DefaultXDSServer     = "gefyra-controlplane.gefyra.svc:18000"
	DefaultAdminAddr     = ":19901"
	DefaultTokenFile     = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
)

// Config is carrier's own configuration; routing comes over xDS.
type Config struct {
	XDSServer string
	NodeID    string // "namespace/pod"
	TokenFile string // "" sends no token
	AdminAddr string
}

// NodeID derives "namespace/pod": POD_NAMESPACE and POD_NAME when set,
// else the namespace of the Pod's service account and the hostname (the
// Pod's name unless the spec sets hostname). A live Pod cannot be given
// new environment variables, so the fallbacks are what a swapped-in
// carrier normally uses.
func NodeID(getenv func(string) string, namespaceFile string, hostname func() (string, error)) (string, error) {
	ns, pod := getenv("POD_NAMESPACE"), getenv("POD_NAME")
	if ns == "" {
		b, err := os.ReadFile(namespaceFile)
		if err != nil {
			return "", fmt.Errorf("namespace: POD_NAMESPACE is unset and %w", err)
		}
		ns = strings.TrimSpace(string(b))
	}
	if pod == "" {
		h, err := hostname()
		if err != nil {
			return "", fmt.Errorf("pod name: POD_NAME is unset and %w", err)
		}
		pod = h
	}
	if ns == "" || pod == "" {
		return "", errors.New("node ID: empty namespace or pod name")
	}
	return ns + "/" + pod, nil
}

// App is carrier, wired.
type App struct {
	cfg     Config
	log     *slog.Logger
	Server  *server.Server
	Admin   *admin.Server
	XDS     *xdsclient.Client
	Metrics *metrics.Metrics

	ctx context.Context // Run's, for Apply
}

// New builds carrier from cfg.
func New(cfg Config, log *slog.Logger) (*App, error) {
	reg := admin.NewRegistry()
	m := metrics.New(reg)
	a := &App{cfg: cfg, log: log, Metrics: m}
	a.Server = server.New(log, m)
	a.Admin = &admin.Server{Addr: cfg.AdminAddr, Registry: reg, Log: log}
	xc, err := xdsclient.New(xdsclient.Config{
		Server:       cfg.XDSServer,
		NodeID:       cfg.NodeID,
		NodeMetadata: map[string]any{"component": "carrier", "version": version.Version},
		Types:        config.Types,
		TokenFile:    cfg.TokenFile,
		Log:          log.With("component", "xds"),
	}, a.apply)
	if err != nil {
		return nil, err
	}
	a.XDS = xc
	return a, nil
}

func (a *App) apply(res map[string][]proto.Message) error {
	err := a.Server.Apply(a.ctx, res)
	a.Admin.SetReady(a.Server.Ready())
	return err
}

// Run runs carrier until ctx is done. The proxy keeps serving its last
// configuration whatever happens to the xDS stream, and without admin
// endpoints if their port is taken (two carrier containers in one Pod
// share the network namespace).
func (a *App) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.ctx = ctx
	a.log.Info("carrier starting", "version", version.Version, "node", a.cfg.NodeID, "xds", a.cfg.XDSServer)
	var wg sync.WaitGroup
	var serverErr, xdsErr error
	wg.Add(3)
	go func() {
		defer wg.Done()
		defer cancel() // without the data plane there is nothing to do
		serverErr = a.Server.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		if xdsErr = a.XDS.Run(ctx); xdsErr != nil {
			cancel() // it cannot be set up at all: say so by exiting
		}
	}()
	go func() {
		defer wg.Done()
		if err := a.Admin.Run(ctx); err != nil {
			a.log.Error("admin endpoints unavailable; proxying goes on", "addr", a.cfg.AdminAddr, "err", err)
		}
	}()
	wg.Wait()
	return errors.Join(serverErr, xdsErr)
}

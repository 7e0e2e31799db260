// Command controlplane is gefyra's operator and (to come) xDS server: it
// patches carrier into bridged workloads, keeps their fallback clones, hands
// out tunnel addresses and expires clients whose lease lapsed.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"gefyra.dev/gefyra/controlplane/internal/app"
	"gefyra.dev/gefyra/controlplane/internal/operator"
	"gefyra.dev/gefyra/internal/admin"
	"gefyra.dev/gefyra/internal/logging"
	"gefyra.dev/gefyra/internal/version"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	namespace := fs.String("namespace", envOr("POD_NAMESPACE", "gefyra"), "namespace of the control plane, its clients and its state")
	carrier := fs.String("carrier-image", envOr("GEFYRA_CARRIER_IMAGE", "gefyra.dev/carrier:"+imageTag()), "image that replaces a bridged container's image")
	lease := fs.Duration("default-lease", 60*time.Second, "lease of clients that set none")
	cidr := fs.String("tunnel-cidr", operator.DefaultTunnelCIDR, "tunnel network; its first address is stowaway's")
	endpoint := fs.String("stowaway-endpoint", os.Getenv("GEFYRA_STOWAWAY_ENDPOINT"), "host:port of stowaway's WireGuard port announced to clients")
	adminAddr := fs.String("admin-addr", ":9090", "address of /metrics, /healthz and /readyz")
	leader := fs.Bool("leader-elect", true, "elect a leader so several replicas can run")
	holdoff := fs.Duration("holdoff", 100*time.Millisecond, "quiet time after a change before the model is rebuilt")
	maxDelay := fs.Duration("max-delay", time.Second, "longest wait before a changed model is rebuilt")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "", "json or text (default: text on a terminal)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	log, err := logging.New(logging.Options{Level: *logLevel, Format: *logFormat})
	if err != nil {
		return err
	}
	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil {
		return fmt.Errorf("--tunnel-cidr: %w", err)
	}
	kube, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("API server: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("starting", "version", version.Version, "namespace", *namespace, "carrier", *carrier)
	cp, err := app.New(ctx, app.Config{
		Operator: operator.Config{
			Namespace:        *namespace,
			CarrierImage:     *carrier,
			DefaultLease:     *lease,
			TunnelCIDR:       prefix,
			StowawayEndpoint: *endpoint,
		},
		Kube:           kube,
		LeaderElection: *leader,
		AdminAddr:      *adminAddr,
		Holdoff:        *holdoff,
		MaxDelay:       *maxDelay,
		Log:            log,
		Registry:       admin.NewRegistry(),
	})
	if err != nil {
		return err
	}
	return cp.Run(ctx)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func imageTag() string {
	if version.Version == "dev" {
		return "0.1.0"
	}
	return version.Version
}

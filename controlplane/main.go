// Package main is command controlplane: gefyra's operator and xDS server: it patches
// carrier into bridged workloads, keeps their fallback clones, hands out
// tunnel addresses, expires clients whose lease lapsed, and serves every
// carrier and stowaway its configuration over one authenticated ADS stream
// (see controlplane/internal/xds).
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
	xdsAddr := fs.String("xds-addr", ":18000", "address of the xDS (ADS) server; \"\" serves none")
	relay := fs.String("stowaway-relay", os.Getenv("GEFYRA_STOWAWAY_RELAY"), "host:port carriers dial for stowaway's relay (default: the ClusterIP and relay port of Service gefyra-stowaway)")
	audience := fs.String("xds-audience", "gefyra-xds", "token audience accepted on xDS streams besides the API server's (stowaway's projected token)")
	credTTL := fs.Duration("credential-ttl", 10*time.Minute, "lifetime of the bridge credentials carriers present to stowaway; renewed at half of it")
	replica := fs.String("replica-name", os.Getenv("POD_NAME"), "name of this replica (default: POD_NAME, else the host name)")
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
	if *replica == "" {
		if *replica, err = os.Hostname(); err != nil {
			return fmt.Errorf("--replica-name: %w", err)
		}
	}
	var xdsCfg *app.XDSConfig
	if *xdsAddr != "" {
		xdsCfg = &app.XDSConfig{Addr: *xdsAddr, RelayAddress: *relay, CredentialTTL: *credTTL, Replica: *replica}
		if *audience != "" {
			xdsCfg.Audiences = []string{*audience}
		}
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
		XDS:            xdsCfg,
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

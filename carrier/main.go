// Package main is command carrier: the in-Pod proxy that replaces a bridged container's
// image. It listens on the container's ports and routes every connection
// and HTTP request by the Listeners, RouteConfigurations, Clusters and
// ClusterLoadAssignments it gets over xDS (see carrier/internal/config for
// the mapping): to a developer's bridge through stowaway, or to the
// fallback (a clone of the original workload).
//
// # One binary, any name
//
// The image is swapped on a live Pod whose command, args, env and probes
// cannot change, so the binary starts under whatever argv the Pod spec
// gives (see carrier/internal/multicall):
//
//   - as the container's first process it is the proxy, whatever its name
//     and arguments (arguments it does not know are ignored);
//   - as any later process (kubelet's exec probes, kubectl exec) it exits 0
//     at once, so exec probes pass.
//
// # What the image must contain
//
// The binary at /carrier (the entrypoint), a symlink to it at every path
// of carrierimage.Paths, and the environment -image-env prints (PATH): the
// runtime resolves the Pod's command[0] and every exec probe's command[0]
// in the carrier image's filesystem and fails the container if nothing is
// there, and the operator checks a container against the same package
// before it swaps the image. Bake GEFYRA_XDS_SERVER into the image's
// environment too if the control plane is not at app.DefaultXDSServer: a
// live Pod's env cannot be changed, but the image's env reaches the new
// container. The tree is written by the binary itself (world/images.sh
// does this):
//
//	carrier -image-layout /tmp/carrier-root
//	carrier -image-env     # PATH=/usr/local/sbin:/usr/local/bin:...
//	mkimage -o carrier.tar -tag gefyra.dev/carrier:VERSION \
//	    -add /tmp/carrier-root:/ -mkdir /tmp:1777 -entrypoint /carrier \
//	    -env PATH=...
//
// # Configuration
//
// Flags (or the GEFYRA_* environment variables named in -h): the xDS
// server, the node ID (default namespace/pod from POD_NAMESPACE/POD_NAME,
// else the service account's namespace file and the hostname), a token
// file sent as a bearer token on every xDS connect (default the Pod's
// service account token), the admin address (metrics, healthz, readyz;
// default :19901) and the log level.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"gefyra.dev/gefyra/carrier/internal/app"
	"gefyra.dev/gefyra/carrier/internal/multicall"
	"gefyra.dev/gefyra/internal/carrierimage"
	"gefyra.dev/gefyra/internal/logging"
	"gefyra.dev/gefyra/internal/version"
)

func main() {
	if multicall.IsOwnName(os.Args[0]) && len(os.Args) > 1 && isTool(os.Args[1]) {
		os.Exit(run(nil)) // a build step, not a container: no role to decide
	}
	role, lock, lockErr := multicall.Decide(os.Getenv("GEFYRA_CARRIER_LOCK"), os.Getpid())
	if role == multicall.RoleExec {
		os.Exit(0) // an exec probe or command inside the carrier container
	}
	defer lock.Close()
	os.Exit(run(lockErr))
}

func isTool(arg string) bool {
	switch strings.SplitN(strings.TrimLeft(arg, "-"), "=", 2)[0] {
	case "version", "image-layout", "image-env", "help", "h":
		return strings.HasPrefix(arg, "-")
	}
	return false
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(lockErr error) int {
	fs := flag.NewFlagSet(multicall.Name, flag.ContinueOnError)
	xds := fs.String("xds-server", env("GEFYRA_XDS_SERVER", app.DefaultXDSServer), "xDS (ADS) server address (env GEFYRA_XDS_SERVER)")
	node := fs.String("node-id", env("GEFYRA_NODE_ID", ""), "xDS node ID, namespace/pod (env GEFYRA_NODE_ID; default from POD_NAMESPACE/POD_NAME or the service account namespace and the hostname)")
	token := fs.String("token-file", env("GEFYRA_TOKEN_FILE", app.DefaultTokenFile), "bearer token sent on each xDS connect; \"\" for none (env GEFYRA_TOKEN_FILE)")
	adminAddr := fs.String("admin-addr", env("GEFYRA_ADMIN_ADDR", app.DefaultAdminAddr), "metrics/healthz/readyz address (env GEFYRA_ADMIN_ADDR)")
	level := fs.String("log-level", env("GEFYRA_LOG_LEVEL", "info"), "debug, info, warn or error (env GEFYRA_LOG_LEVEL)")
	format := fs.String("log-format", env("GEFYRA_LOG_FORMAT", ""), "json or text; default by terminal (env GEFYRA_LOG_FORMAT)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	layout := fs.String("image-layout", "", "write the image's file tree (this binary and its links) to `DIR` and exit")
	imageEnv := fs.Bool("image-env", false, "print the image's environment (K=V lines) and exit")

	// Started under another name (the Pod's command), or with the original
	// program's args appended: keep only what is ours.
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		_, isBool := f.Value.(interface{ IsBoolFlag() bool })
		known[f.Name] = isBool
	})
	args, ignored := multicall.FilterArgs(os.Args[1:], known)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println(version.Version)
		return 0
	}
	if *imageEnv {
		fmt.Println("PATH=" + carrierimage.PATH)
		return 0
	}
	if *layout != "" {
		self, err := os.Executable()
		if err == nil {
			err = multicall.WriteLayout(*layout, self)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "carrier:", err)
			return 1
		}
		return 0
	}
	log, err := logging.New(logging.Options{Level: *level, Format: *format})
	if err != nil {
		fmt.Fprintln(os.Stderr, "carrier:", err)
		return 2
	}
	if lockErr != nil {
		log.Warn("role lock", "err", lockErr)
	}
	if len(ignored) > 0 || !multicall.IsOwnName(os.Args[0]) {
		log.Info("started in place of the original program; its arguments are ignored", "argv0", os.Args[0], "ignored", ignored)
	}
	if *node == "" {
		id, err := app.NodeID(os.Getenv, app.DefaultNamespaceFile, os.Hostname)
		if err != nil {
			log.Error("cannot derive the xDS node ID; set -node-id", "err", err)
			return 2
		}
		*node = id
	}
	if *token != "" {
		if _, err := os.Stat(*token); err != nil {
			log.Warn("no token file; connecting without one", "file", *token, "err", err)
			*token = ""
		}
	}

	a, err := app.New(app.Config{XDSServer: *xds, NodeID: *node, TokenFile: *token, AdminAddr: *adminAddr}, log)
	if err != nil {
		log.Error("carrier", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if os.Getpid() == 1 {
		go reap(ctx)
	}
	if err := a.Run(ctx); err != nil {
		log.Error("carrier stopped", "err", err)
		return 1
	}
	return 0
}

// reap collects orphaned children reparented to carrier as the
// container's init (exec'd commands whose parent went away first).
func reap(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}

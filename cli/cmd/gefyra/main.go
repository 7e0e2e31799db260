// Package main is command gefyra: the developer's CLI: it connects this machine to a
// cluster (up), runs local containers (run), bridges a workload's traffic to
// them (bridge, unbridge), reports (list, status) and cleans up (down). See
// cli/internal/command.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"gefyra.dev/gefyra/cli/internal/command"
)

func main() {
	// The Kubernetes libraries log through these; the CLI reports itself.
	klog.SetLogger(logr.Discard())
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := command.Main(ctx, os.Args[1:], command.DefaultEnv())
	stop()
	os.Exit(code)
}

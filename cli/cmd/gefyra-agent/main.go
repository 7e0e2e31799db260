// Package main is command gefyra-agent: the developer's end of the gefyra tunnel (see
// cli/internal/agent) as a process of its own; `gefyra agent` runs the same
// code inside the agent container. It reads its config file at start, picks
// up changed targets when the file changes or on SIGHUP, and serves its
// status on a loopback address for the gefyra CLI.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"gefyra.dev/gefyra/cli/internal/agentrun"
	"gefyra.dev/gefyra/internal/logging"
	"gefyra.dev/gefyra/internal/version"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gefyra-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("gefyra-agent", flag.ContinueOnError)
	var (
		configFile  = fs.String("config", "", "agent config file (JSON; required)")
		statusAddr  = fs.String("status-addr", "127.0.0.1:0", "loopback address of the status endpoint")
		statusFile  = fs.String("status-addr-file", "", "if set, write the status endpoint's address here once it listens")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat   = fs.String("log-format", "", "json or text (default: text on a terminal, else json)")
		showVersion = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println(version.Version)
		return nil
	}
	log, err := logging.New(logging.Options{Level: *logLevel, Format: *logFormat})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return agentrun.Run(ctx, agentrun.Options{
		ConfigFile:     *configFile,
		StatusAddr:     *statusAddr,
		StatusAddrFile: *statusFile,
		Log:            log,
	})
}

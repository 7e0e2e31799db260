// Command gefyra-agent is the developer's end of the gefyra tunnel (see
// cli/internal/agent). It reads its config file at start and picks up
// changed targets when the file changes or on SIGHUP; it serves its status
// on a loopback address for the gefyra CLI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"gefyra.dev/gefyra/cli/internal/agent"
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
	if *configFile == "" {
		return errors.New("--config is required")
	}
	log, err := logging.New(logging.Options{Level: *logLevel, Format: *logFormat})
	if err != nil {
		return err
	}
	cfg, err := agent.ReadConfig(*configFile)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *statusAddr)
	if err != nil {
		return fmt.Errorf("--status-addr: %w", err)
	}
	if ap, ok := ln.Addr().(*net.TCPAddr); ok && !ap.IP.IsLoopback() {
		ln.Close()
		return fmt.Errorf("--status-addr %s is not a loopback address", *statusAddr)
	}
	if *statusFile != "" {
		if err := os.WriteFile(*statusFile, []byte(ln.Addr().String()+"\n"), 0o600); err != nil {
			ln.Close()
			return fmt.Errorf("--status-addr-file: %w", err)
		}
	}
	log.Info("gefyra-agent starting", "version", version.Version, "status", ln.Addr().String())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(ctx) })
	hs := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
	g.Go(func() error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	g.Go(func() error { watchConfig(ctx, *configFile, cfg, a, log); return nil })
	return g.Wait()
}

// watchConfig applies changed targets when the config file changes (checked
// every second) or on SIGHUP. Other changes need a restart.
func watchConfig(ctx context.Context, path string, cur agent.Config, a *agent.Agent, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	modTime := func() time.Time {
		fi, err := os.Stat(path)
		if err != nil {
			return time.Time{}
		}
		return fi.ModTime()
	}
	last := modTime()
	curTargets := cur.Targets
	cur.Targets = nil
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-t.C:
			if m := modTime(); m.Equal(last) {
				continue
			} else {
				last = m
			}
		}
		next, err := agent.ReadConfig(path)
		if err != nil {
			log.Error("config reload failed; keeping the old config", "err", err)
			continue
		}
		if !maps.Equal(next.Targets, curTargets) {
			if err := a.SetTargets(next.Targets); err != nil {
				log.Error("applying targets", "err", err)
				continue
			}
			curTargets = next.Targets
			log.Info("targets updated", "targets", next.Targets)
		}
		next.Targets = nil
		if !reflect.DeepEqual(next, cur) {
			log.Warn("config changed beyond the targets; restart the agent to apply it")
		}
		cur = next
	}
}

// Package agentrun runs the local agent (cli/internal/agent) as a process:
// it reads the agent's config file, serves its status on a loopback
// address, and applies changed targets when the file changes or on SIGHUP.
// Both the standalone gefyra-agent command and `gefyra agent` (the process
// inside the agent container that `gefyra up` starts) run it.
package agentrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/internal/version"
)

// Options say how to run the agent.
type Options struct {
	// ConfigFile is the agent's JSON config (required).
	ConfigFile string
	// StatusAddr is the loopback address of the status endpoint
	// ("127.0.0.1:0" picks a port).
	StatusAddr string
	// StatusAddrFile, if set, receives the status endpoint's address once
	// it listens.
	StatusAddrFile string
	// PollInterval is how often the config file is checked for changes;
	// 0 means a second.
	PollInterval time.Duration
	Log          *slog.Logger
}

// Run runs the agent until ctx is done.
//
// It runs the Go scheduler with one P unless GOMAXPROCS is set in the
// environment: every packet through the tunnel is handed between several
// goroutines (UDP receive, decryption, the userspace TCP stack, the relay),
// and on one P each hand-off is a switch on the same thread instead of a
// wake-up of another, so the agent spends about a third less CPU per
// request and answers sooner (BENCHMARKS.md, the bridge path).
func Run(ctx context.Context, o Options) error {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if o.ConfigFile == "" {
		return errors.New("--config is required")
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.StatusAddr == "" {
		o.StatusAddr = "127.0.0.1:0"
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	// SIGHUP means "read the config again"; catch it from the start, or an
	// early one would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := agent.ReadConfig(o.ConfigFile)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.StatusAddr)
	if err != nil {
		return fmt.Errorf("status address: %w", err)
	}
	if ap, ok := ln.Addr().(*net.TCPAddr); ok && !ap.IP.IsLoopback() {
		ln.Close()
		return fmt.Errorf("status address %s is not a loopback address", o.StatusAddr)
	}
	if o.StatusAddrFile != "" {
		if err := os.WriteFile(o.StatusAddrFile, []byte(ln.Addr().String()+"\n"), 0o600); err != nil {
			ln.Close()
			return fmt.Errorf("status address file: %w", err)
		}
	}
	log.Info("gefyra agent starting", "version", version.Version, "status", ln.Addr().String())

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
	g.Go(func() error { watchConfig(ctx, o.ConfigFile, o.PollInterval, hup, cfg, a, log); return nil })
	return g.Wait()
}

// watchConfig applies changed targets when the config file changes or on
// SIGHUP. Other changes need a restart.
func watchConfig(ctx context.Context, path string, every time.Duration, hup <-chan os.Signal, cur agent.Config, a *agent.Agent, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	stamp := func() fileStamp {
		fi, err := os.Stat(path)
		if err != nil {
			return fileStamp{}
		}
		return fileStamp{fi.ModTime(), fi.Size()}
	}
	last := stamp()
	curTargets := cur.Targets
	cur.Targets = nil
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-t.C:
			if s := stamp(); s == last {
				continue
			} else {
				last = s
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

type fileStamp struct {
	mod  time.Time
	size int64
}

// FetchStatus asks the agent serving its status at addr for its status.
func FetchStatus(ctx context.Context, addr string) (agent.Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return agent.Status{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return agent.Status{}, fmt.Errorf("agent status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return agent.Status{}, fmt.Errorf("agent status: %s: %s", resp.Status, b)
	}
	var s agent.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&s); err != nil {
		return agent.Status{}, fmt.Errorf("agent status: %w", err)
	}
	return s, nil
}

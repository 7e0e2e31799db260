package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"gefyra.dev/gefyra/bench/internal/bridgepath"
	"gefyra.dev/gefyra/bench/internal/cpbench"
	"gefyra.dev/gefyra/bench/internal/refs"
	"gefyra.dev/gefyra/bench/internal/report"
	"gefyra.dev/gefyra/internal/testworld"
)

// controlPlane runs the control plane's benchmarks (no cluster needed).
func controlPlane(ctx context.Context, log *slog.Logger, st settings, d *report.Data, tmp string) {
	root, err := filepath.Abs(".")
	if err != nil {
		d.NotDone = append(d.NotDone, "control plane: "+err.Error())
		return
	}
	prof := filepath.Join(tmp, "profiles")
	if err := os.MkdirAll(prof, 0o755); err != nil {
		d.NotDone = append(d.NotDone, "control plane: "+err.Error())
		return
	}
	log.Info("control plane: 1,000 simulated carrier streams and translations", "changes", st.changes, "translations", st.translations)
	res, err := cpbench.Run(ctx, root, st.changes, st.translations, prof)
	if res != nil {
		cp := &report.ControlPlane{Fanout: res.Fanout, Translate: res.Translate, Commands: res.Commands}
		for _, p := range res.Profiles {
			cp.Profiles = append(cp.Profiles, report.Profile{Title: p.Title, File: p.File, Top: p.Top})
		}
		d.ControlPlane = cp
	}
	if err != nil {
		log.Error("control plane benchmarks", "err", err)
		d.NotDone = append(d.NotDone, "control plane: "+firstLine(err.Error()))
	}
}

// bridgePath measures the full bridge path in the test world, holding the
// shared cluster's lock throughout; it starts the world if it is not
// running and then stops it again.
func bridgePath(ctx context.Context, log *slog.Logger, st settings, d *report.Data, tmp string) error {
	root, err := filepath.Abs(".")
	if err != nil {
		return err
	}
	log.Info("the full bridge path: waiting for the shared cluster's lock", "lock", bridgepath.LockFile)
	start := time.Now()
	unlock, err := bridgepath.Lock(ctx, bridgepath.LockFile)
	if err != nil {
		return err
	}
	defer unlock()
	log.Info("the full bridge path: lock taken", "waited", time.Since(start).Round(time.Second))

	w, err := testworld.Open(ctx)
	if err != nil {
		log.Info("the test world is not running; starting it (world/world.sh up)", "why", err)
		if err := worldScript(ctx, root, "up"); err != nil {
			return err
		}
		defer func() {
			log.Info("stopping the test world this run started (world/world.sh down)")
			if err := worldScript(context.Background(), root, "down"); err != nil {
				log.Error("world/world.sh down", "err", err)
				d.NotDone = append(d.NotDone, "stopping the test world: "+firstLine(err.Error()))
			}
		}()
		if w, err = testworld.Open(ctx); err != nil {
			return fmt.Errorf("the test world after world/world.sh up: %w", err)
		}
	}

	dir := filepath.Join(tmp, "bridge")
	addr, err := refs.FreePort()
	if err != nil {
		return err
	}
	backend, err := refs.Backend(ctx, dir, addr, runtime.NumCPU())
	if err != nil {
		return err
	}
	defer backend.Stop()
	res, err := bridgepath.Run(ctx, bridgepath.Config{
		World: w, Root: root, Backend: addr, Runs: st.runs, Conns: st.conns, WarmBridges: st.nextBridges,
		BackendPID: backend.PID(), ProfileDir: st.chartDir, ProfileSeconds: max(1, int(st.duration/time.Second)-1),
		Drive: func(ctx context.Context, addr string, conns int, header string) (report.Sample, error) {
			return wrk(ctx, target{name: addr, addr: addr, header: header}, backend, conns, st.duration)
		},
		Log: os.Stderr,
	})
	if res != nil {
		bp := &report.BridgePath{FirstBridge: res.FirstBridge, NextBridges: res.NextBridges, Service: res.Service, Backend: res.Backend, CPU: res.CPU, Profiles: res.Profiles}
		for _, c := range st.conns {
			if s := res.Direct[c]; len(s) > 0 {
				bp.Series = append(bp.Series, report.Series{Target: "direct", Kind: "bridge", Conns: c, Samples: s})
			}
			if s := res.Bridged[c]; len(s) > 0 {
				bp.Series = append(bp.Series, report.Series{Target: "bridge path", Kind: "bridge", Conns: c, Samples: s})
			}
		}
		d.BridgePath = bp
	}
	return err
}

// worldScript runs world/world.sh with arg, its output on stderr.
func worldScript(ctx context.Context, root, arg string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(root, "world", "world.sh"), arg)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("world/world.sh %s: %w", arg, err)
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

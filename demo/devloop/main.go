// Package main is command devloop: the entrypoint of the demo's development image: the Go
// twin of `uvicorn --reload` under `debugpy --listen`. It watches the
// mounted source (/app), rebuilds it with the image's Go toolchain when a
// file changes and restarts it under Delve's headless debug server (port
// 5678), printing uvicorn-like lines. See package reload.
//
// Usage: devloop [flags] [-- program arguments]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gefyra.dev/gefyra/demo/devloop/internal/reload"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "ERROR:    "+err.Error())
		os.Exit(1)
	}
}

func env(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("devloop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", env(getenv, "DEVLOOP_DIR", "/app"), "source directory to watch and build (env DEVLOOP_DIR)")
	moduleDir := fs.String("module-dir", env(getenv, "DEVLOOP_MODULE_DIR", "/usr/local/lib/devloop"), "go.mod and go.sum for a source directory without them (env DEVLOOP_MODULE_DIR)")
	workDir := fs.String("work-dir", env(getenv, "DEVLOOP_WORK_DIR", "/tmp/devloop"), "where binaries and the build overlay go (env DEVLOOP_WORK_DIR)")
	goCmd := fs.String("go", "go", "the go command")
	gcflags := fs.String("gcflags", "all=-N -l", "go build -gcflags (the default keeps every variable visible to the debugger)")
	delveOn := fs.Bool("delve", envBool(getenv, "DEVLOOP_DELVE", true), "run the program under Delve's headless debug server (env DEVLOOP_DELVE)")
	dlv := fs.String("dlv", "dlv", "the dlv binary")
	listen := fs.String("listen", env(getenv, "DEVLOOP_DELVE_LISTEN", ":5678"), "Delve's listen address (env DEVLOOP_DELVE_LISTEN)")
	debounce := fs.Duration("debounce", 250*time.Millisecond, "quiet time after a change before rebuilding")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(reload.NewUvicornHandler(stderr, slog.LevelInfo))
	environ := buildEnv(os.Environ(), *workDir)
	cfg := reload.Config{
		SourceDir: *dir,
		ModuleDir: *moduleDir,
		WorkDir:   *workDir,
		Go:        *goCmd,
		Env:       environ,
		Args:      fs.Args(),
		Debounce:  *debounce,
		Stdout:    os.Stdout,
		Stderr:    stderr,
		Logger:    log,
	}
	if *gcflags != "" {
		cfg.BuildFlags = []string{"-gcflags=" + *gcflags}
	}
	if *delveOn {
		cfg.Delve = &reload.Delve{Path: *dlv, Listen: *listen}
	}
	if err := reload.BecomeSubreaper(); err != nil {
		log.Warn("Cannot adopt orphaned processes", "err", err)
	}
	l, err := reload.New(cfg)
	if err != nil {
		return err
	}
	return l.Run(ctx)
}

func envBool(getenv func(string) string, key string, def bool) bool {
	if b, err := strconv.ParseBool(getenv(key)); err == nil {
		return b
	}
	return def
}

// buildEnv adds what an offline, non-root build needs to environ unless it
// is set: no toolchain downloads, no cgo, module files that may be updated
// in the overlay, and a build cache in the work directory.
func buildEnv(environ []string, workDir string) []string {
	set := map[string]bool{}
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	defaults := [][2]string{
		{"GOTOOLCHAIN", "local"},
		{"CGO_ENABLED", "0"},
		{"GOFLAGS", "-mod=mod"},
		{"GOCACHE", filepath.Join(workDir, "go-cache")},
	}
	for _, d := range defaults {
		if !set[d[0]] {
			environ = append(environ, d[0]+"="+d[1])
		}
	}
	return environ
}

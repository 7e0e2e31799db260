// Package reload is the development loop of the demo's development image,
// the Go twin of `uvicorn --reload` under `debugpy --listen`: it watches a
// source directory, rebuilds the program when a Go file changes, and
// restarts it, under Delve's headless debug server when asked. A build that
// fails leaves the last good program running and prints the compiler's
// errors.
//
// The source directory (the developer's mounted checkout) needs no go.mod:
// the loop builds it in place through `go build -overlay`, adding a go.mod
// and go.sum shipped with the image, so the debug information names the
// source files by their real paths (/app/main.go) and the directory is only
// read, never written.
package reload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Delve configures the debug server the program runs under.
type Delve struct {
	Path   string // the dlv binary
	Listen string // e.g. :5678
}

// Config configures a Loop.
type Config struct {
	SourceDir string // the directory to watch and build, e.g. /app
	// ModuleDir holds the go.mod and go.sum used when SourceDir has none.
	ModuleDir string
	// WorkDir receives the overlay file and the binaries, e.g. /tmp/devloop.
	WorkDir string
	// Go is the go command; empty means "go" from PATH.
	Go string
	// BuildFlags go to go build before the package, e.g.
	// []string{"-gcflags=all=-N -l"} so the debugger sees every variable.
	BuildFlags []string
	// Env is the environment of the build and the program; nil means the
	// loop's own.
	Env []string
	// Args are the program's arguments.
	Args []string
	// Delve, when set, runs the program under `dlv exec --headless`.
	Delve *Delve
	// Debounce is how long the sources must be quiet before a rebuild; 0
	// means 250 ms.
	Debounce time.Duration
	// StopGrace is how long the program gets to exit after SIGTERM before
	// it is killed; 0 means 5 s.
	StopGrace time.Duration
	// Stdout and Stderr receive the program's (and Delve's) output.
	Stdout, Stderr io.Writer
	Logger         *slog.Logger
}

// Loop watches, builds and runs.
type Loop struct {
	cfg        Config
	log        *slog.Logger
	overlay    string // overlay file, empty when the source has its own go.mod
	generation int
	running    *child
}

// New checks cfg and prepares the work directory.
func New(cfg Config) (*Loop, error) {
	if cfg.Logger == nil {
		return nil, errors.New("reload: a logger is required")
	}
	if cfg.Go == "" {
		cfg.Go = "go"
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = 250 * time.Millisecond
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 5 * time.Second
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	src, err := filepath.Abs(cfg.SourceDir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("source directory %s: not a directory (mount the source there)", src)
	}
	cfg.SourceDir = src
	if cfg.WorkDir, err = filepath.Abs(cfg.WorkDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.WorkDir, "bin"), 0o755); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	l := &Loop{cfg: cfg, log: cfg.Logger}
	if _, err := os.Stat(filepath.Join(src, "go.mod")); err != nil {
		if l.overlay, err = writeOverlay(src, cfg.ModuleDir, cfg.WorkDir); err != nil {
			return nil, err
		}
	}
	if cfg.Delve != nil {
		if _, err := exec.LookPath(cfg.Delve.Path); err != nil {
			return nil, fmt.Errorf("delve: %w", err)
		}
	}
	return l, nil
}

// writeOverlay writes a go build overlay that adds the module files of
// moduleDir to src.
func writeOverlay(src, moduleDir, workDir string) (string, error) {
	if moduleDir == "" {
		return "", fmt.Errorf("%s has no go.mod and no module directory is configured", src)
	}
	replace := map[string]string{}
	for _, name := range []string{"go.mod", "go.sum"} {
		p, err := filepath.Abs(filepath.Join(moduleDir, name))
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("module files: %w", err)
		}
		replace[filepath.Join(src, name)] = p
	}
	b, err := json.Marshal(map[string]any{"Replace": replace})
	if err != nil {
		return "", err
	}
	path := filepath.Join(workDir, "overlay.json")
	return path, os.WriteFile(path, b, 0o644)
}

// Run builds and starts the program, then rebuilds and restarts it on every
// change until ctx is done. It stops the program before it returns.
func (l *Loop) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer w.Close()
	if err := w.Add(l.cfg.SourceDir); err != nil {
		return fmt.Errorf("watch %s: %w", l.cfg.SourceDir, err)
	}
	l.log.Info(fmt.Sprintf("Will watch for changes in these directories: ['%s']", l.cfg.SourceDir))
	l.log.Info(fmt.Sprintf("Started reloader process [%d] using fsnotify", os.Getpid()))
	defer l.stop()

	l.rebuild(ctx, nil)
	var (
		timer   *time.Timer
		fire    <-chan time.Time
		changed []string
	)
	for {
		var exited <-chan struct{}
		if l.running != nil {
			exited = l.running.exited
		}
		select {
		case <-ctx.Done():
			l.log.Info("Shutting down")
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watcher closed")
			}
			if !relevant(ev) {
				continue
			}
			name := filepath.Base(ev.Name)
			if !slices.Contains(changed, name) {
				changed = append(changed, name)
			}
			if timer == nil {
				timer = time.NewTimer(l.cfg.Debounce)
			} else {
				timer.Reset(l.cfg.Debounce)
			}
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watcher closed")
			}
			l.log.Warn("Watching failed", "err", err)
		case <-fire:
			fire = nil
			names := changed
			changed = nil
			l.rebuild(ctx, names)
		case <-exited:
			l.log.Error(fmt.Sprintf("Application process [%d] exited: %v; waiting for changes", l.running.pid, l.running.err))
			l.running.reap()
			l.running = nil
		}
	}
}

// relevant reports whether a file system event can change the program.
func relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Base(ev.Name)
	if strings.HasPrefix(name, ".") {
		return false
	}
	switch {
	case name == "go.mod" || name == "go.sum":
		return true
	case strings.HasSuffix(name, "_test.go"):
		return false
	default:
		return strings.HasSuffix(name, ".go")
	}
}

// rebuild builds the program and, if that worked, replaces the running one.
func (l *Loop) rebuild(ctx context.Context, changed []string) {
	if changed != nil {
		quoted := make([]string, len(changed))
		for i, c := range changed {
			quoted[i] = "'" + c + "'"
		}
		l.log.Warn(fmt.Sprintf("Changes detected in %s. Reloading...", strings.Join(quoted, ", ")))
	}
	l.generation++
	bin := filepath.Join(l.cfg.WorkDir, "bin", fmt.Sprintf("app-%d", l.generation))
	start := time.Now()
	out, err := l.build(ctx, bin)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		msg := "Build failed; waiting for changes"
		if l.running != nil {
			msg = fmt.Sprintf("Build failed; process [%d] keeps running the last good version", l.running.pid)
		}
		l.log.Error(msg, "err", err)
		_, _ = io.WriteString(l.cfg.Stderr, out)
		_ = os.Remove(bin)
		return
	}
	l.log.Info("Build succeeded", "binary", bin, "took", time.Since(start).Round(time.Millisecond))
	l.stop()
	c, err := l.start(bin)
	if err != nil {
		l.log.Error("Starting the application failed; waiting for changes", "err", err)
		_ = os.Remove(bin)
		return
	}
	l.running = c
	l.removeOldBinaries(bin)
	if l.cfg.Delve != nil {
		l.log.Info(fmt.Sprintf("Started server process [%d] under Delve, debug server on %s", c.pid, l.cfg.Delve.Listen))
	} else {
		l.log.Info(fmt.Sprintf("Started server process [%d]", c.pid))
	}
}

func (l *Loop) build(ctx context.Context, bin string) (string, error) {
	args := []string{"build", "-o", bin}
	if l.overlay != "" {
		args = append(args, "-overlay", l.overlay)
	}
	args = append(append(args, l.cfg.BuildFlags...), ".")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.cfg.Go, args...)
	cmd.Dir = l.cfg.SourceDir
	cmd.Env = l.cfg.Env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (l *Loop) start(bin string) (*child, error) {
	name, args := bin, l.cfg.Args
	if d := l.cfg.Delve; d != nil {
		name = d.Path
		args = append([]string{"exec", "--headless", "--listen=" + d.Listen, "--api-version=2",
			"--accept-multiclient", "--continue", bin}, l.cfg.Args...)
		if len(l.cfg.Args) > 0 {
			args = slices.Insert(args, 7, "--")
		}
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = l.cfg.SourceDir
	cmd.Env = l.cfg.Env
	cmd.Stdout, cmd.Stderr = l.cfg.Stdout, l.cfg.Stderr
	return startChild(cmd)
}

// stop ends the running program, if any.
func (l *Loop) stop() {
	if l.running == nil {
		return
	}
	l.running.stop(l.cfg.StopGrace, l.log)
	l.running = nil
}

// removeOldBinaries deletes every built binary but keep.
func (l *Loop) removeOldBinaries(keep string) {
	old, _ := filepath.Glob(filepath.Join(l.cfg.WorkDir, "bin", "app-*"))
	for _, b := range old {
		if b != keep {
			_ = os.Remove(b)
		}
	}
}

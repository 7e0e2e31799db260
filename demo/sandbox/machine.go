package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"gefyra.dev/gefyra/internal/testworld"
)

// Timeouts of the machine's scripts.
const (
	scriptTimeout = 30 * time.Minute // world.sh up builds Kubernetes when its cache is cold
	dockerTimeout = 2 * time.Minute
)

// script is the path of one of the world's scripts.
func script(root, name string) string { return filepath.Join(root, "world", name) }

// runScript runs one of the world's scripts, logging each line it prints.
func runScript(t testworld.T, root, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script(root, name), args...)
	cmd.Dir = root
	lw := &lineWriter{logf: t.Logf}
	cmd.Stdout, cmd.Stderr = lw, lw
	err := cmd.Run()
	lw.Flush()
	if err != nil {
		t.Fatalf("world/%s %s: %v", name, strings.Join(args, " "), err)
	}
}

// scriptOK runs a script's status command and reports whether it
// succeeded.
func scriptOK(ctx context.Context, root, name string, args ...string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script(root, name), args...)
	cmd.Dir = root
	return cmd.Run() == nil
}

// worldRunning: world.sh status exits 0 when the world is up.
func worldRunning(ctx context.Context, root string) bool {
	return scriptOK(ctx, root, "world.sh", "status")
}

// dockerRunning: Docker Engine answers (docker.sh's own test).
func dockerRunning(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "info").Run() == nil
}

// snapshot is world/snapshot.sh without the processes that other
// programs' tests run from copies of the world's binaries in temporary
// directories (world/demo.sh drops the same lines).
func snapshot(ctx context.Context, root string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script(root, "snapshot.sh"))
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("world/snapshot.sh: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var b bytes.Buffer
	for line := range strings.Lines(string(out)) {
		if !strings.HasPrefix(line, "/tmp/") {
			b.WriteString(line)
		}
	}
	return b.Bytes(), nil
}

// diffFiles is `diff -u a b`: "" when they are the same.
func diffFiles(ctx context.Context, a, b string) (string, error) {
	out, err := exec.CommandContext(ctx, "diff", "-u", a, b).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "", nil
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return string(out), nil
	}
	return "", fmt.Errorf("diff: %w: %s", err, out)
}

// docker runs the docker command and returns its standard output.
func docker(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// imageID is the ID of the local image ref, "" if there is none.
func imageID(ctx context.Context, ref string) (string, error) {
	out, err := docker(ctx, "image", "ls", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(out) {
		if name, id, ok := strings.Cut(strings.TrimSpace(line), " "); ok && name == ref {
			return id, nil
		}
	}
	return "", nil
}

// gefyraLabel marks the images and containers the gefyra CLI makes (its
// local agent's image among them); cli/internal/local defines it.
const gefyraLabel = "dev.gefyra.managed=true"

// gefyraImages are the IDs of the images labelled as gefyra's.
func gefyraImages(ctx context.Context) ([]string, error) {
	out, err := docker(ctx, "image", "ls", "--no-trunc", "--quiet", "--filter", "label="+gefyraLabel)
	if err != nil {
		return nil, err
	}
	ids := strings.Fields(out)
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// gefyraContainers are the containers labelled as gefyra's, as "NAME
// STATE".
func gefyraContainers(ctx context.Context) ([]string, error) {
	out, err := docker(ctx, "ps", "--all", "--filter", "label="+gefyraLabel, "--format", "{{.Names}} {{.State}}")
	if err != nil {
		return nil, err
	}
	var cs []string
	for line := range strings.Lines(out) {
		if l := strings.TrimSpace(line); l != "" {
			cs = append(cs, l)
		}
	}
	slices.Sort(cs)
	return cs, nil
}

// removeImage removes an image by ID; one that is gone is no error, one
// that a container uses is.
func removeImage(ctx context.Context, id string) error {
	_, err := docker(ctx, "image", "rm", id)
	if err != nil && strings.Contains(err.Error(), "No such image") {
		return nil
	}
	return err
}

// lineWriter hands each complete line written to it to logf.
type lineWriter struct {
	logf func(format string, args ...any)

	mu  sync.Mutex // guards buf
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.logf("%s", w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// Flush logs what is left of an unfinished line.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.logf("%s", w.buf)
		w.buf = nil
	}
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Package profile takes CPU profiles of the processes a benchmark
// measures and reads them as `go tool pprof -top` tables, the evidence
// BENCHMARKS.md gives for what limits a figure. A Go process serves its
// profile over HTTP when it runs with GEFYRA_PPROF=1 (internal/admin);
// the tables are pprof's own output, trimmed to the summary and the rows.
package profile

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gefyra.dev/gefyra/bench/internal/report"
)

// Fetch writes a CPU profile of seconds seconds, taken from base (e.g.
// "http://10.244.0.5:19901") at /debug/pprof/profile, to path. client nil
// means http.DefaultClient.
func Fetch(ctx context.Context, client *http.Client, base string, seconds int, path string) error {
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+30*time.Second)
	defer cancel()
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(base, "/"), seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("CPU profile from %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("CPU profile from %s: %s: %s (does the process run with GEFYRA_PPROF=1?)", base, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("CPU profile from %s: %w", base, err)
	}
	return f.Close()
}

// Top runs `go tool pprof` with args (e.g. "-top", "-nodecount", "15") on
// file, in the module at root, and returns its table trimmed by TrimTop.
func Top(ctx context.Context, root, file string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, args...), file)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof %s %s: %w\n%s", strings.Join(args, " "), file, err, out)
	}
	return TrimTop(string(out)), nil
}

// TrimTop keeps pprof's summary lines and table, without the file and
// build lines before them.
func TrimTop(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "Showing nodes") || strings.HasPrefix(l, "Dropped") {
			return strings.Join(lines[i:], "\n")
		}
	}
	return strings.Join(lines, "\n")
}

// views are the two views the report shows of a CPU profile: the
// functions that use the CPU themselves (flat), and the call paths that
// lead to it (cumulative).
var views = []struct {
	name string
	args []string
}{
	{name: "flat", args: []string{"-top", "-nodecount", "15"}},
	{name: "cumulative", args: []string{"-top", "-cum", "-nodecount", "20"}},
}

// Views returns the report's views of the CPU profile in file, titled
// "title, flat" and "title, cumulative"; root is the module's directory
// for `go tool pprof`.
func Views(ctx context.Context, root, file, title string) ([]report.Profile, error) {
	var out []report.Profile
	for _, v := range views {
		top, err := Top(ctx, root, file, v.args...)
		if err != nil {
			return nil, err
		}
		out = append(out, report.Profile{Title: title + ", " + v.name, File: filepath.Base(file), Top: top})
	}
	return out, nil
}

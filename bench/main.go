// Package main is command bench: the side-by-side benchmark harness behind `make bench`.
// It installs nginx, haproxy, wrk and h2load from Debian's packages when
// they are missing, starts one backend (nginx answering 200 from its
// configuration) and, in front of it, nginx (proxy_pass to an upstream
// with keepalive 32, and a stream block), haproxy (mode http and mode tcp)
// and carrier (the real binary, configured over ADS by a go-control-plane
// server in this process with a header-matched bridge route ahead of the
// fallback). wrk then drives each target at 1 and 32 keep-alive
// connections, several runs each, while the proxy's CPU time is read from
// /proc. It also measures carrier's memory footprint, and the wgnet
// tunnel's bulk throughput between two network namespaces it creates and
// removes. The result is written as Markdown (BENCHMARKS.md) with PNG
// charts of the latency percentiles.
//
// Two parts concern the product as a whole. The control plane's Go
// benchmarks (bench/internal/cpbench) measure a rule change reaching 1,000
// simulated carrier streams and the control plane's memory at 1,000
// bridges, with pprof profiles. The full bridge path
// (bench/internal/bridgepath) runs in the test world, the real
// single-node Kubernetes of world/world.sh: client → Service → carrier →
// stowaway → WireGuard → agent → a local backend, against the same
// backend called directly, and the time from creating a GefyraBridge to
// the first request served through it. When the world is not running it
// is started (world/world.sh up) and stopped again at the end; the
// cluster part holds the end-to-end tests' lock (/run/gefyra-e2e.lock).
//
// Every server is a child process stopped by its PID at the end; network
// traffic stays on loopback and the benchmark's own namespaces.
//
// The raw measurements are kept in data.json next to the charts; -render
// data.json rewrites the report from them without measuring.
//
// Environment: BENCH_QUICK=1 (1 run × 2 s, small transfers), BENCH_RUNS,
// BENCH_DURATION (e.g. 5s), BENCH_KINDS (comma-separated: http, tcp; the
// proxying kinds measured, default both), BENCH_SKIP (comma-separated: http, h2,
// footprint, tunnel, controlplane, bridge).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gefyra.dev/gefyra/bench/internal/measure"
	"gefyra.dev/gefyra/bench/internal/profile"
	"gefyra.dev/gefyra/bench/internal/refs"
	"gefyra.dev/gefyra/bench/internal/report"
	"gefyra.dev/gefyra/bench/internal/tunnel"
	"gefyra.dev/gefyra/bench/internal/xds"
	"gefyra.dev/gefyra/internal/admin"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, os.Args[1:]); err != nil {
		log.Error("bench", "err", err)
		os.Exit(1)
	}
}

// settings are the harness's knobs.
type settings struct {
	out, chartDir string
	render        string
	merge         string
	notes         string
	quick         bool
	runs          int
	duration      time.Duration
	conns         []int
	holdConns     int
	tunnelBytes   int64
	tunnelRuns    int
	// changes is the rule changes per fleet of the fan-out benchmark,
	// translations the translations per fleet, nextBridges the bridges
	// timed on a workload that runs carrier already.
	changes, translations, nextBridges int
	skip                               map[string]bool
	// kinds, if not empty, are the proxying kinds measured (http, tcp).
	kinds map[string]bool
}

func settingsFrom(args []string, getenv func(string) string) (settings, error) {
	s := settings{conns: []int{1, 32}, holdConns: 1000, skip: map[string]bool{}}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&s.out, "out", "BENCHMARKS.md", "Markdown report to write")
	fs.StringVar(&s.chartDir, "charts", "bench/results", "directory for the PNG charts and the raw data (data.json)")
	fs.StringVar(&s.render, "render", "", "measure nothing: re-render the report from this data.json")
	fs.StringVar(&s.notes, "notes", "bench/notes.md", "hand-written analysis appended to the report as it is (skipped if the file does not exist)")
	fs.StringVar(&s.merge, "merge", "", "take the parts skipped (BENCH_SKIP) from this data.json of an earlier run, saying so in the report")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	s.quick = getenv("BENCH_QUICK") == "1"
	s.runs, s.duration, s.tunnelBytes, s.tunnelRuns = 5, 5*time.Second, 1<<30, 3
	s.changes, s.translations, s.nextBridges = 10, 5, 5
	if s.quick {
		s.runs, s.duration, s.tunnelBytes, s.tunnelRuns = 1, 2*time.Second, 128<<20, 1
		s.changes, s.translations, s.nextBridges = 3, 2, 2
	}
	if v := getenv("BENCH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return s, fmt.Errorf("BENCH_RUNS=%q: want 1..100", v)
		}
		s.runs = n
	}
	if v := getenv("BENCH_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > 10*time.Minute {
			return s, fmt.Errorf("BENCH_DURATION=%q: want 1s..10m", v)
		}
		s.duration = d
	}
	for _, k := range strings.Split(getenv("BENCH_SKIP"), ",") {
		switch k = strings.TrimSpace(k); k {
		case "":
		case "http", "h2", "footprint", "tunnel", "controlplane", "bridge":
			s.skip[k] = true
		default:
			return s, fmt.Errorf("BENCH_SKIP: unknown part %q (http, h2, footprint, tunnel, controlplane, bridge)", k)
		}
	}
	for _, k := range strings.Split(getenv("BENCH_KINDS"), ",") {
		switch k = strings.TrimSpace(k); k {
		case "":
		case "http", "tcp":
			if s.kinds == nil {
				s.kinds = map[string]bool{}
			}
			s.kinds[k] = true
		default:
			return s, fmt.Errorf("BENCH_KINDS: unknown kind %q (http, tcp)", k)
		}
	}
	return s, nil
}

// target is one thing wrk drives.
type target struct {
	name, kind, ref, addr string
	proc                  *refs.Proc // nil: direct to the backend
	// header is sent with every request ("Name: value"); default
	// X-Forwarded-Access-Token: jane.jwt.
	header string
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	st, err := settingsFrom(args, os.Getenv)
	if err != nil {
		return err
	}
	if st.render != "" {
		b, err := os.ReadFile(st.render)
		if err != nil {
			return err
		}
		d := &report.Data{}
		if err := json.Unmarshal(b, d); err != nil {
			return fmt.Errorf("%s: %w", st.render, err)
		}
		if st.merge != "" {
			// Every part this data lacks is taken from the merged runs.
			st.skip = map[string]bool{"http": len(d.HTTP) == 0, "h2": d.H2 == nil, "footprint": len(d.Footprints) == 0,
				"tunnel": len(d.Tunnels) == 0, "controlplane": d.ControlPlane == nil, "bridge": d.BridgePath == nil}
			if err := merge(d, st); err != nil {
				return err
			}
			if err := writeData(st, d); err != nil {
				return err
			}
		}
		return write(log, st, d)
	}
	d := &report.Data{
		Started: time.Now(), Quick: st.quick, Runs: st.runs, Duration: st.duration,
		Command:  command(os.Getenv, st.merge),
		Machine:  machine(),
		Versions: map[string]string{},
	}
	if err := raiseNoFile(); err != nil {
		return err
	}
	if err := refs.Install(ctx, log, refs.Packages); err != nil {
		return err
	}
	d.Versions["nginx"] = refs.Version("nginx", "-v")
	d.Versions["haproxy"] = refs.Version("haproxy", "-v")
	d.Versions["wrk"] = refs.Version("wrk", "-v")
	d.Versions["h2load"] = refs.Version("h2load", "--version")
	d.Versions["go"] = runtime.Version()

	tmp, err := os.MkdirTemp("", "gefyra-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	log.Info("building carrier and tunnelpeer")
	bin := filepath.Join(tmp, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "grpcnotrace", "-o", bin+"/", "./carrier", "./bench/cmd/tunnelpeer")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}

	if !st.skip["http"] || !st.skip["footprint"] || !st.skip["h2"] {
		if err := proxies(ctx, log, st, d, tmp, bin); err != nil {
			return err
		}
	}
	if !st.skip["tunnel"] {
		tunnels(ctx, log, st, d, filepath.Join(bin, "tunnelpeer"))
	} else {
		d.NotDone = append(d.NotDone, "tunnel throughput: skipped (BENCH_SKIP)")
	}
	if !st.skip["controlplane"] {
		controlPlane(ctx, log, st, d, tmp)
	} else {
		d.NotDone = append(d.NotDone, "control plane: skipped (BENCH_SKIP)")
	}
	if !st.skip["bridge"] {
		if err := bridgePath(ctx, log, st, d, tmp); err != nil {
			d.NotDone = append(d.NotDone, "the full bridge path: "+firstLine(err.Error()))
			log.Error("the full bridge path", "err", err)
		}
	} else {
		d.NotDone = append(d.NotDone, "the full bridge path: skipped (BENCH_SKIP)")
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	d.Finished = time.Now()
	if st.merge != "" {
		if err := merge(d, st); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(st.chartDir, 0o755); err != nil {
		return err
	}
	if err := writeData(st, d); err != nil {
		return err
	}
	return write(log, st, d)
}

// writeData keeps the raw measurements in data.json beside the charts.
func writeData(st settings, d *report.Data) error {
	if err := os.MkdirAll(st.chartDir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(st.chartDir, "data.json"), raw, 0o644)
}

// merge fills the parts this run skipped from the earlier run in
// st.merge.
func merge(d *report.Data, st settings) error {
	for _, file := range strings.Split(st.merge, ",") {
		if err := mergeFile(d, st, strings.TrimSpace(file)); err != nil {
			return err
		}
	}
	return nil
}

// mergeFile fills the parts st.skip names, and d still lacks, from file.
func mergeFile(d *report.Data, st settings, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	old := &report.Data{}
	if err := json.Unmarshal(b, old); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	var taken []string
	drop := map[string]bool{}
	take := func(part, notDone, section string, ok bool, copyIt func()) {
		if st.skip[part] && ok {
			copyIt()
			st.skip[part] = false // filled: a later file does not replace it
			taken = append(taken, section)
			drop[notDone+": skipped (BENCH_SKIP)"] = true
		}
	}
	backend := st.skip["http"] && st.skip["h2"] && st.skip["footprint"]
	take("http", "HTTP/TCP proxying", "HTTP/1.1 and TCP proxying", len(old.HTTP) > 0, func() { d.HTTP = old.HTTP })
	take("h2", "", "HTTP/2", old.H2 != nil, func() { d.H2 = old.H2 })
	take("footprint", "", "memory footprint", len(old.Footprints) > 0, func() { d.Footprints = old.Footprints })
	take("tunnel", "tunnel throughput", "tunnel throughput", len(old.Tunnels) > 0, func() { d.Tunnels = old.Tunnels })
	take("controlplane", "control plane", "control plane", old.ControlPlane != nil, func() { d.ControlPlane = old.ControlPlane })
	take("bridge", "the full bridge path", "the full bridge path", old.BridgePath != nil, func() { d.BridgePath = old.BridgePath })
	if len(taken) == 0 {
		return nil
	}
	if backend && len(d.HTTP) > 0 {
		d.Backend, d.Notes = old.Backend, old.Notes
	}
	for k, v := range old.Versions {
		if _, ok := d.Versions[k]; !ok {
			d.Versions[k] = v
		}
	}
	kept := d.NotDone[:0]
	for _, n := range d.NotDone {
		if !drop[n] {
			kept = append(kept, n)
		}
	}
	d.NotDone = kept
	mode := fmt.Sprintf("%d runs × %s per point", old.Runs, old.Duration)
	if old.Quick {
		mode = "quick mode, " + mode
	}
	// A part the earlier run itself took from a still earlier one keeps
	// that run's line; a part this run measured anew is in no line.
	var carried []string
	older := map[string]bool{}
	for _, m := range old.Merged {
		names, rest, ok := strings.Cut(m, ": from the earlier run")
		if !ok {
			continue
		}
		var keep []string
		for _, n := range strings.Split(names, ", ") {
			if slices.Contains(taken, n) && !older[n] {
				keep = append(keep, n)
				older[n] = true
			}
		}
		if len(keep) > 0 {
			carried = append(carried, strings.Join(keep, ", ")+": from the earlier run"+rest)
		}
	}
	var direct []string
	for _, n := range taken {
		if !older[n] {
			direct = append(direct, n)
		}
	}
	if len(direct) > 0 {
		d.Merged = append(d.Merged, fmt.Sprintf("%s: from the earlier run of %s UTC (`%s`, %s); the load average then was %s.",
			strings.Join(direct, ", "), old.Started.UTC().Format("2006-01-02 15:04"), old.Command, mode, old.Machine["load average at start (1/5/15 min)"]))
	}
	d.Merged = append(d.Merged, carried...)
	return nil
}

// write renders the charts and the Markdown report of d.
func write(log *slog.Logger, st settings, d *report.Data) error {
	d.Charts = nil
	if len(d.HTTP) > 0 {
		if err := os.MkdirAll(st.chartDir, 0o755); err != nil {
			return err
		}
		for _, c := range st.conns {
			file := filepath.Join(st.chartDir, fmt.Sprintf("latency-c%d.png", c))
			if err := report.LatencyChart(file, d, c); err != nil {
				d.NotDone = append(d.NotDone, fmt.Sprintf("latency chart for %d connections: %v", c, err))
				continue
			}
			rel, err := filepath.Rel(filepath.Dir(st.out), file)
			if err != nil {
				rel = file
			}
			d.Charts = append(d.Charts, rel)
		}
	}
	f, err := os.Create(st.out)
	if err != nil {
		return err
	}
	if err := report.Write(f, d); err != nil {
		f.Close()
		return err
	}
	if st.notes != "" {
		notes, err := os.ReadFile(st.notes)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			f.Close()
			return err
		default:
			if _, err := fmt.Fprintf(f, "<!-- from %s: written by hand, kept across runs -->\n\n%s", st.notes, notes); err != nil {
				f.Close()
				return err
			}
		}
	}
	log.Info("report written", "file", st.out)
	return f.Close()
}

// command is the command line that reproduces this run.
func command(getenv func(string) string, merge string) string {
	var env []string
	for _, k := range []string{"BENCH_QUICK", "BENCH_RUNS", "BENCH_DURATION", "BENCH_SKIP"} {
		if v := getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	if merge != "" {
		env = append(env, "BENCH_ARGS='-merge "+merge+"'")
	}
	return strings.Join(append(env, "make bench"), " ")
}

// proxies starts the backend and the proxies and runs the HTTP, h2 and
// footprint measurements.
func proxies(ctx context.Context, log *slog.Logger, st settings, d *report.Data, tmp, bin string) error {
	addrs := map[string]string{}
	for _, k := range []string{"backend", "nginx-http", "nginx-tcp", "haproxy-http", "haproxy-tcp", "carrier-http", "carrier-tcp", "carrier-admin", "relay"} {
		a, err := refs.FreePort()
		if err != nil {
			return err
		}
		addrs[k] = a
	}
	workers := runtime.NumCPU()
	d.Backend = fmt.Sprintf("nginx `return 200 \"ok\"` (%d workers, no access log) — answered from the configuration, the cheapest server per request here, so the backend is not what limits the proxies", workers)
	d.Notes = append(d.Notes, fmt.Sprintf("Proxies: nginx %d workers (proxy_pass to an `upstream` with `keepalive 32`; `stream` proxy_pass), haproxy `nbthread %d` (`mode http` with `http-reuse always`; `mode tcp`), carrier with GOMAXPROCS=%d (its HTTP listener's route table has a safe_regex header match on `x-forwarded-access-token` to a bridge cluster ahead of the fallback; every request carries a token that does not match, so each one is routed through the rule to the fallback). wrk sends the same header to every target. wrk, the proxy and the backend share the machine's %d cores, so absolute numbers are lower than on a dedicated load generator; compare the ratios.", workers, workers, workers, workers))

	backend, err := refs.Backend(ctx, tmp, addrs["backend"], workers)
	if err != nil {
		return err
	}
	defer backend.Stop()
	var procs []*refs.Proc
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	idle := map[string]uint64{}
	ng, err := refs.NginxProxy(ctx, tmp, addrs["nginx-http"], addrs["nginx-tcp"], addrs["backend"], workers)
	if err != nil {
		return err
	}
	procs = append(procs, ng)
	hp, err := refs.Haproxy(ctx, tmp, addrs["haproxy-http"], addrs["haproxy-tcp"], addrs["backend"], workers)
	if err != nil {
		return err
	}
	procs = append(procs, hp)
	cp, err := xds.Start(ctx, xds.Spec{
		HTTPAddr: addrs["carrier-http"], TCPAddr: addrs["carrier-tcp"], Backend: addrs["backend"], Relay: addrs["relay"],
		BridgeHeader: "x-forwarded-access-token", BridgeRegex: "john.*",
	})
	if err != nil {
		return err
	}
	defer cp.Stop()
	cr, err := refs.Start(ctx, "carrier", addrs["carrier-http"], []string{"GEFYRA_CARRIER_LOCK=" + filepath.Join(tmp, "carrier.lock"), admin.ProfilingEnv + "=1"},
		filepath.Join(bin, "carrier"), "-xds-server", cp.Addr, "-node-id", xds.NodeID, "-token-file", "",
		"-admin-addr", addrs["carrier-admin"], "-log-level", "warn", "-log-format", "text")
	if err != nil {
		return err
	}
	procs = append(procs, cr)
	if err := waitDial(ctx, addrs["carrier-tcp"]); err != nil {
		return fmt.Errorf("carrier tcp listener: %w", err)
	}
	time.Sleep(500 * time.Millisecond) // let every process settle before reading RSS
	for _, p := range procs {
		if idle[p.Name], err = measure.RSS(p.PID()); err != nil {
			return err
		}
	}

	targets := []target{
		{name: "direct", kind: "direct", addr: addrs["backend"]},
		{name: "nginx proxy_pass", kind: "http", ref: "nginx proxy_pass", addr: addrs["nginx-http"], proc: ng},
		{name: "haproxy http", kind: "http", ref: "nginx proxy_pass", addr: addrs["haproxy-http"], proc: hp},
		{name: "carrier http", kind: "http", ref: "nginx proxy_pass", addr: addrs["carrier-http"], proc: cr},
		{name: "nginx stream", kind: "tcp", ref: "nginx stream", addr: addrs["nginx-tcp"], proc: ng},
		{name: "haproxy tcp", kind: "tcp", ref: "nginx stream", addr: addrs["haproxy-tcp"], proc: hp},
		{name: "carrier tcp", kind: "tcp", ref: "nginx stream", addr: addrs["carrier-tcp"], proc: cr},
	}
	if st.kinds != nil {
		kept := targets[:0]
		for _, t := range targets {
			if t.kind == "direct" || st.kinds[t.kind] {
				kept = append(kept, t)
			}
		}
		targets = kept
	}
	// Every target must answer 200 "ok" before it is measured.
	for _, t := range targets {
		if err := check(ctx, t.addr); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}

	if !st.skip["http"] {
		for _, conns := range st.conns {
			series := make([]report.Series, len(targets))
			for i, t := range targets {
				series[i] = report.Series{Target: t.name, Kind: t.kind, Ref: t.ref, Conns: conns}
			}
			for r := 0; r < st.runs; r++ {
				for i, t := range targets {
					log.Info("wrk", "target", t.name, "conns", conns, "run", r+1, "of", st.runs)
					s, err := wrk(ctx, t, backend, conns, st.duration)
					if err != nil {
						return fmt.Errorf("%s, %d connections: %w", t.name, conns, err)
					}
					series[i].Samples = append(series[i].Samples, s)
				}
			}
			// The evidence: carrier's CPU profile under the same load,
			// in a run of its own that is not among the measured ones.
			for i, t := range targets {
				if t.proc != cr {
					continue
				}
				log.Info("wrk with carrier's CPU profile", "target", t.name, "conns", conns)
				prof, err := profileRun(ctx, t, backend, conns, st.duration, "http://"+addrs["carrier-admin"], filepath.Join(st.chartDir, fmt.Sprintf("carrier-%s-c%d.cpu.pprof", t.kind, conns)))
				if err != nil {
					d.NotDone = append(d.NotDone, fmt.Sprintf("carrier's CPU profile, %s, %d connections: %s", t.name, conns, firstLine(err.Error())))
					continue
				}
				series[i].Profiles = prof
			}
			d.HTTP = append(d.HTTP, series...)
		}
	} else {
		d.NotDone = append(d.NotDone, "HTTP/TCP proxying: skipped (BENCH_SKIP)")
	}

	if !st.skip["h2"] {
		h2, err := h2load(ctx, log, st, addrs["carrier-http"], cr)
		if err != nil {
			d.NotDone = append(d.NotDone, "h2load against carrier: "+err.Error())
		} else {
			d.H2 = h2
		}
	}

	if !st.skip["footprint"] {
		for _, t := range []struct {
			name string
			p    *refs.Proc
			addr string
		}{{"carrier", cr, addrs["carrier-http"]}, {"nginx", ng, addrs["nginx-http"]}, {"haproxy", hp, addrs["haproxy-http"]}} {
			log.Info("footprint", "proxy", t.name, "connections", st.holdConns)
			rss, err := holding(ctx, t.addr, st.holdConns, t.p.PID())
			if err != nil {
				d.NotDone = append(d.NotDone, fmt.Sprintf("footprint of %s with %d connections: %v", t.name, st.holdConns, err))
				continue
			}
			d.Footprints = append(d.Footprints, report.Footprint{Target: t.name, IdleRSS: idle[t.p.Name], ConnRSS: rss, ConnectionsHeld: st.holdConns})
		}
	}
	return nil
}

// wrk runs one wrk measurement against t.
func wrk(ctx context.Context, t target, backend *refs.Proc, conns int, dur time.Duration) (report.Sample, error) {
	threads := min(conns, 2)
	header := t.header
	if header == "" {
		header = "X-Forwarded-Access-Token: jane.jwt"
	}
	args := []string{"-t", fmt.Sprint(threads), "-c", fmt.Sprint(conns), "-d", fmt.Sprintf("%ds", int(dur.Seconds())),
		"--latency", "-H", header, "http://" + t.addr + "/"}
	var pb, bb time.Duration
	var err error
	if t.proc != nil {
		if pb, err = measure.CPU(t.proc.PID()); err != nil {
			return report.Sample{}, err
		}
	}
	if bb, err = measure.CPU(backend.PID()); err != nil {
		return report.Sample{}, err
	}
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if err != nil {
		return report.Sample{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	var s report.Sample
	if t.proc != nil {
		pa, err := measure.CPU(t.proc.PID())
		if err != nil {
			return report.Sample{}, err
		}
		s.ProxyCPU = pa - pb
	}
	ba, err := measure.CPU(backend.PID())
	if err != nil {
		return report.Sample{}, err
	}
	s.BackendCPU = ba - bb
	w, err := measure.ParseWrk(string(out))
	if err != nil {
		return report.Sample{}, err
	}
	if w.Requests == 0 {
		return report.Sample{}, fmt.Errorf("wrk completed no requests: %s", out)
	}
	s.RPS, s.Requests, s.Errors, s.Percentiles = w.RPS, w.Requests, w.Errors, w.Percentiles
	return s, nil
}

// profileRun drives t like a measured run while it takes a CPU profile
// of the proxy from admin (its pprof endpoint) into file, and returns the
// profile's views.
func profileRun(ctx context.Context, t target, backend *refs.Proc, conns int, dur time.Duration, admin, file string) ([]report.Profile, error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return nil, err
	}
	seconds := max(1, int(dur/time.Second)-1)
	errc := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond) // past wrk's connection set-up
		errc <- profile.Fetch(ctx, nil, admin, seconds, file)
	}()
	_, werr := wrk(ctx, t, backend, conns, dur)
	if err := <-errc; err != nil {
		return nil, err
	}
	if werr != nil {
		return nil, werr
	}
	root, err := filepath.Abs(".")
	if err != nil {
		return nil, err
	}
	return profile.Views(ctx, root, file, fmt.Sprintf("CPU of carrier, %s, %d connection(s)", t.name, conns))
}

// h2load drives carrier with h2c (prior knowledge).
func h2load(ctx context.Context, log *slog.Logger, st settings, addr string, cr *refs.Proc) (*report.H2, error) {
	if _, err := exec.LookPath("h2load"); err != nil {
		return nil, err
	}
	h := &report.H2{Clients: 4, Streams: 8}
	for r := 0; r < st.runs; r++ {
		log.Info("h2load", "target", "carrier http", "run", r+1, "of", st.runs)
		before, err := measure.CPU(cr.PID())
		if err != nil {
			return nil, err
		}
		out, err := exec.CommandContext(ctx, "h2load", "-c", fmt.Sprint(h.Clients), "-m", fmt.Sprint(h.Streams), "-t", "1",
			"-D", fmt.Sprint(int(st.duration.Seconds())), "-H", "x-forwarded-access-token: jane.jwt", "http://"+addr+"/").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("h2load: %w: %s", err, out)
		}
		after, err := measure.CPU(cr.PID())
		if err != nil {
			return nil, err
		}
		res, err := measure.ParseH2load(string(out))
		if err != nil {
			return nil, err
		}
		if res.Requests == 0 {
			return nil, fmt.Errorf("h2load: no request succeeded: %s", out)
		}
		h.RPS = append(h.RPS, res.RPS)
		if cpu := after - before; cpu > 0 {
			h.PerCPU = append(h.PerCPU, float64(res.Requests)/cpu.Seconds())
		}
		h.Failed += res.Failed
	}
	return h, nil
}

// holding opens n keep-alive connections to addr, makes one request on
// each (so a proxy also has its upstream side set up), and returns pid's
// RSS while all are open.
func holding(ctx context.Context, addr string, n, pid int) (uint64, error) {
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	req := "GET / HTTP/1.1\r\nHost: bench\r\nX-Forwarded-Access-Token: jane.jwt\r\n\r\n"
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return 0, fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, fmt.Errorf("connection %d: %w", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("connection %d: status %d", i, resp.StatusCode)
		}
	}
	time.Sleep(500 * time.Millisecond)
	return measure.RSS(pid)
}

// tunnels measures plain TCP and the wgnet tunnel between two namespaces.
func tunnels(ctx context.Context, log *slog.Logger, st settings, d *report.Data, peer string) {
	defer tunnel.Teardown()
	if err := tunnel.Setup(ctx); err != nil {
		d.NotDone = append(d.NotDone, "tunnel throughput: namespace setup failed: "+err.Error())
		return
	}
	cases := []report.Tunnel{
		{Name: "plain TCP", VethMTU: 1500, Upload: true},
		{Name: "plain TCP", VethMTU: 1500, Upload: false},
		{Name: "wgnet MTU 1420", Tunnel: true, MTU: 1420, VethMTU: 1500, Upload: true, Reference: "200"},
		{Name: "wgnet MTU 1420", Tunnel: true, MTU: 1420, VethMTU: 1500, Upload: false, Reference: "200"},
		{Name: "plain TCP", VethMTU: 9000, Upload: true},
		{Name: "plain TCP", VethMTU: 9000, Upload: false},
		{Name: "wgnet MTU 8920", Tunnel: true, MTU: 8920, VethMTU: 9000, Upload: true, Reference: "400"},
		{Name: "wgnet MTU 8920", Tunnel: true, MTU: 8920, VethMTU: 9000, Upload: false, Reference: "400"},
	}
	for i := range cases {
		c := &cases[i]
		if err := tunnel.SetMTU(ctx, c.VethMTU); err != nil {
			c.Error = err.Error()
			continue
		}
		size := st.tunnelBytes
		if !c.Tunnel {
			size *= 4 // kernel TCP is several times faster; keep the runs long enough
		}
		c.Bytes = size
		for r := 0; r < st.tunnelRuns; r++ {
			log.Info("tunnel", "case", c.Name, "veth-mtu", c.VethMTU, "upload", c.Upload, "run", r+1, "of", st.tunnelRuns)
			res, err := tunnel.Transfer(ctx, tunnel.Run{Peer: peer, Tunnel: c.Tunnel, MTU: c.MTU, Upload: c.Upload, Bytes: size})
			if err != nil {
				c.Error = err.Error()
				break
			}
			if res.LostAck {
				c.LostAcks++
			}
			c.MBps = append(c.MBps, res.MBps())
			c.CPUPerGB = append(c.CPUPerGB, res.CPUPerGB())
		}
		if c.Tunnel && c.Error == "" {
			tunnelProfile(ctx, log, st, c, tunnel.Run{Peer: peer, Tunnel: true, MTU: c.MTU, Upload: c.Upload, Bytes: size})
		}
	}
	d.Tunnels = cases
}

// tunnelProfile adds CPU profiles of both peers, taken in one extra run
// of r, to c. A failed profile run is logged and leaves c without them.
func tunnelProfile(ctx context.Context, log *slog.Logger, st settings, c *report.Tunnel, r tunnel.Run) {
	dir, arrow := "a-to-b", "A → B"
	if !c.Upload {
		dir, arrow = "b-to-a", "B → A"
	}
	root, err := filepath.Abs(".")
	if err != nil {
		log.Warn("tunnel profile", "case", c.Name, "err", err)
		return
	}
	log.Info("tunnel", "case", c.Name, "veth-mtu", c.VethMTU, "upload", c.Upload, "run", "profile")
	name := fmt.Sprintf("tunnel-mtu%d-%s", c.MTU, dir)
	p, err := tunnel.Profile(ctx, r, st.chartDir, name, c.Name+", "+arrow, root)
	if err != nil {
		log.Warn("tunnel profile", "case", c.Name, "upload", c.Upload, "err", err)
		return
	}
	c.Profiles = p
}

func check(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Forwarded-Access-Token", "jane.jwt")
	var last error
	for i := 0; i < 50; i++ {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(b) == "ok" {
				return nil
			}
			err = fmt.Errorf("status %d, body %q", resp.StatusCode, b)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("does not answer 200 \"ok\": %w", last)
}

func waitDial(ctx context.Context, addr string) error {
	for i := 0; i < 250; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(40 * time.Millisecond)
	}
	return errors.New("nothing listening on " + addr)
}

// raiseNoFile lifts the open-files soft limit to the hard one (inherited
// by every server and wrk) so 1,000 held connections fit.
func raiseNoFile() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	if l.Max < 8192 {
		return fmt.Errorf("open-files hard limit %d is below 8192", l.Max)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("raise the open-files limit to %d: %w", l.Max, err)
	}
	return nil
}

// machine describes this machine for the report.
func machine() map[string]string {
	m := map[string]string{"cores (nproc)": fmt.Sprint(runtime.NumCPU())}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["CPU"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m["load average at start (1/5/15 min)"] = strings.Join(f[:3], " ")
		}
	}
	return m
}

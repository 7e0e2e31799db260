package report

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"gefyra.dev/gefyra/bench/internal/measure"
)

// The targets of these sections (DESIGN and the performance requirements).
const (
	// AddedP50Budget is the most the full bridge path may add to the p50
	// latency at one connection.
	AddedP50Budget = 400 * time.Microsecond
	// FanoutBudgetMs is the most a rule change may take to reach 1,000
	// carrier streams.
	FanoutBudgetMs = 1000
	// MemoryBudgetMB is the most the control plane may use at 1,000
	// bridges.
	MemoryBudgetMB = 200
)

// BridgePath is the full bridge path against the same backend directly.
type BridgePath struct {
	// Series are "direct" and "bridge path", by connection count.
	Series []Series
	// FirstBridge is from creating the workload's first GefyraBridge to
	// the first request served through it; NextBridges the same for
	// bridges created while the workload runs carrier already.
	FirstBridge time.Duration
	NextBridges []time.Duration
	// Service and Backend are the two addresses called.
	Service, Backend string
	LockWait         time.Duration
	// CPU is each process's CPU time per request on the path, by
	// connection count, read from /proc during an extra run.
	CPU []ProcessCPU
	// Profiles are CPU profiles of carrier, stowaway and the agent taken
	// during that run.
	Profiles []Profile
}

// ProcessCPU is one process's (or group's) share of the CPU during a run
// of the bridge path.
type ProcessCPU struct {
	Process string
	Conns   int
	// Requests is what the run served; CPU the process's user and system
	// time over it.
	Requests int64
	CPU      time.Duration
}

// PerRequest is the process's CPU time per request, in µs.
func (c ProcessCPU) PerRequest() float64 {
	if c.Requests == 0 {
		return 0
	}
	return float64(c.CPU.Microseconds()) / float64(c.Requests)
}

func (b *BridgePath) find(target string, conns int) *Series {
	for i := range b.Series {
		if b.Series[i].Target == target && b.Series[i].Conns == conns {
			return &b.Series[i]
		}
	}
	return nil
}

// ControlPlane is what the control plane's Go benchmarks reported.
type ControlPlane struct {
	Fanout    []measure.GoBench
	Translate []measure.GoBench
	Profiles  []Profile
	Commands  []string
}

// Profile is the top of a pprof profile.
type Profile struct {
	Title, File, Top string
}

// fanout returns the fan-out result whose name contains shape.
func (c *ControlPlane) fanout(shape string) *measure.GoBench {
	for i := range c.Fanout {
		if strings.Contains(c.Fanout[i].Name, shape) {
			return &c.Fanout[i]
		}
	}
	return nil
}

// The fan-out benchmark's shapes.
const (
	shapeOneWorkload = "one-workload"
	shapeSpread      = "spread"
)

func shortName(name string) string {
	if i := strings.IndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// budgetRows are the budget table's rows of these sections.
func budgetRows(d *Data) []string {
	var rows []string
	if b := d.BridgePath; b != nil {
		dir, br := b.find("direct", 1), b.find("bridge path", 1)
		if dir != nil && br != nil && len(dir.Samples) > 0 && len(br.Samples) > 0 {
			added := br.P(50) - dir.P(50)
			met := "yes"
			if added > float64(AddedP50Budget/time.Microsecond) {
				met = fmt.Sprintf("**no** (%.0f µs over)", added-float64(AddedP50Budget/time.Microsecond))
			}
			rows = append(rows, fmt.Sprintf("| the full bridge path adds ≤ %d µs p50 at 1 connection | +%.0f µs (%.0f vs %.0f µs) | %s |",
				AddedP50Budget/time.Microsecond, added, br.P(50), dir.P(50), met))
		}
	}
	if c := d.ControlPlane; c != nil {
		if f := c.fanout(shapeOneWorkload); f != nil {
			v := f.Metrics["ms-to-last-stream"]
			met := "yes"
			if v > FanoutBudgetMs {
				met = fmt.Sprintf("**no** (%.0f ms over)", v-FanoutBudgetMs)
			}
			rows = append(rows, fmt.Sprintf("| a rule change reaches 1,000 carrier streams in ≤ 1 s | %.0f ms (median; slowest %.0f ms) | %s |",
				v, f.Metrics["ms-to-last-stream-max"], met))
		}
		if f := c.fanout(shapeSpread); f != nil {
			v := f.Metrics["MB-rss"]
			met := "yes"
			if v > MemoryBudgetMB {
				met = fmt.Sprintf("**no** (%.0f MB over)", v-MemoryBudgetMB)
			}
			if peak := f.Metrics["MB-rss-peak"]; peak > MemoryBudgetMB && v <= MemoryBudgetMB {
				met = fmt.Sprintf("at rest yes; **no** at its peak (%.0f MB over)", peak-MemoryBudgetMB)
			}
			rows = append(rows, fmt.Sprintf("| control plane ≤ %d MB at 1,000 bridges | RSS %.0f MB at rest (heap in use %.0f MB), peak %.0f MB during rule changes | %s |",
				MemoryBudgetMB, v, f.Metrics["MB-heap"], f.Metrics["MB-rss-peak"], met))
		}
	}
	return rows
}

func writeBridgePath(p func(string, ...any), d *Data) {
	b := d.BridgePath
	if b == nil {
		return
	}
	p("## The full bridge path vs the backend directly\n\n")
	p("Client (wrk on this machine) → the Service's ClusterIP (kube-proxy) → carrier in the workload's Pod → stowaway's relay (a Pod) → userspace WireGuard (UDP to the node's NodePort) → gefyra-agent (a process on this machine) → the local backend on `%s`; \"direct\" is wrk against the same backend process. The workload runs in the test world, the real single-node Kubernetes of `world/world.sh`, whose node shares this machine's 2 cores with wrk, the agent and the backend. Every request carries the bridge's header rule (`x-bench-path: bridge`).\n\n", b.Backend)
	p("| path | conns | req/s | ×direct | p50 µs | p99 µs | added p50 µs | added p99 µs | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	conns := []int{}
	for _, s := range b.Series {
		if !slices.Contains(conns, s.Conns) {
			conns = append(conns, s.Conns)
		}
	}
	slices.Sort(conns)
	for _, c := range conns {
		dir := b.find("direct", c)
		for _, name := range []string{"direct", "bridge path"} {
			s := b.find(name, c)
			if s == nil {
				continue
			}
			var errs int64
			for _, x := range s.Samples {
				errs += x.Errors
			}
			rel, a50, a99 := "–", "–", "–"
			if name != "direct" && dir != nil {
				rel = ratio(s.Median(rps), dir.Median(rps))
				a50 = fmt.Sprintf("+%.0f", s.P(50)-dir.P(50))
				a99 = fmt.Sprintf("+%.0f", s.P(99)-dir.P(99))
			}
			p("| %s | %d | %.0f | %s | %.0f | %.0f | %s | %s | %d |\n", name, c, s.Median(rps), rel, s.P(50), s.P(99), a50, a99, errs)
		}
	}
	p("\n")
	if b.FirstBridge > 0 || len(b.NextBridges) > 0 {
		p("### From creating a GefyraBridge to the first request served through it\n\n")
		p("A request with the new bridge's header is sent through the Service every 10 ms (a new connection each) from the moment the GefyraBridge is created until the local backend answers it.\n\n")
		p("| bridge | time | runs |\n|---|---:|---:|\n")
		if b.FirstBridge > 0 {
			p("| the workload's first (the operator swaps carrier into the Pod; kubelet restarts the container) | %s | 1 |\n", b.FirstBridge.Round(time.Millisecond))
		}
		if len(b.NextBridges) > 0 {
			ms := make([]float64, len(b.NextBridges))
			for i, x := range b.NextBridges {
				ms[i] = float64(x) / float64(time.Millisecond)
			}
			p("| another, on the workload that runs carrier already (reconcile, model batch, xDS push) | %.0f ms (median; %.0f–%.0f) | %d |\n", Median(ms), slices.Min(ms), slices.Max(ms), len(ms))
		}
		p("\n")
	}
	writeBridgeCPU(p, b)
	writeProfiles(p, b.Profiles)
}

func writeControlPlane(p func(string, ...any), d *Data) {
	c := d.ControlPlane
	if c == nil {
		return
	}
	p("## Control plane: rule changes to 1,000 carrier streams, memory at 1,000 bridges\n\n")
	p("`controlplane/internal/xds` `BenchmarkXDSRuleChange`: the control plane's xDS server (the real `xds.Server`: translation, go-control-plane snapshot cache, gRPC) runs in a process of its own with the model below; 1,000 simulated carriers, each a real ADS stream of `internal/xdsclient` (carrier's own xDS client) with its own node ID and token, ACKing every update, connect to it over loopback from the benchmark's process. One op is one rule change of one bridge (a new model handed to the server, as the operator's batcher does): the time runs until the last carrier of that bridge's workload has received the route with the new rule. Memory is the server process's, after a GC: Go heap in use and RSS; \"idle\" is with the model published and no stream yet. Tokens are taken without a TokenReview (they are reviewed once per stream, when it opens). Both processes share the 2 cores; the simulated carriers' decoding counts against the same CPUs.\n\n")
	p("| fleet | streams affected | streams updated | to the median stream | to the last stream | slowest | publish (translate + snapshots) | heap idle | RSS idle | heap, all connected | RSS, all connected | RSS peak |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, f := range c.Fanout {
		m := f.Metrics
		p("| %s | %.0f | %.0f | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %.0f MB | %.0f MB | %.0f MB | %.0f MB | %.0f MB |\n", shortName(f.Name),
			m["streams-affected"], m["streams-updated"], m["ms-to-median-stream"], m["ms-to-last-stream"], m["ms-to-last-stream-max"], m["ms-publish"],
			m["MB-heap-idle"], m["MB-rss-idle"], m["MB-heap"], m["MB-rss"], m["MB-rss-peak"])
	}
	if len(c.Fanout) > 0 {
		p("\n%d rule changes per fleet; times are medians over them. \"one-workload\": one workload of 1,000 replicas shared by 10 developers' bridges (a rule change concerns all 1,000 carriers). \"spread\": 1,000 bridges of 1,000 developers over 100 workloads of 10 replicas (a rule change concerns 10 carriers). \"Streams updated\" counts every stream that got a new configuration with the change.\n\n", c.Fanout[0].N)
	}
	if len(c.Translate) > 0 {
		p("`controlplane/internal/translate` `BenchmarkTranslateFleet`: one translation of the whole model, as the server does for every change and every credential renewal.\n\n")
		p("| fleet | ms per translation | MB allocated | allocations |\n|---|---:|---:|---:|\n")
		for _, t := range c.Translate {
			p("| %s | %.0f | %.0f | %.0f |\n", shortName(t.Name), t.Metrics["ns/op"]/1e6, t.Metrics["B/op"]/(1<<20), t.Metrics["allocs/op"])
		}
		p("\n")
	}
	if len(c.Commands) > 0 {
		p("Run by the harness as:\n\n")
		for _, cmd := range c.Commands {
			p("    %s\n", cmd)
		}
		p("\n")
	}
	writeProfiles(p, c.Profiles)
}

// writeProfiles writes each profile's table, folded.
func writeProfiles(p func(string, ...any), profiles []Profile) {
	for _, pr := range profiles {
		p("<details><summary>%s (<code>go tool pprof</code>, %s)</summary>\n\n```\n%s\n```\n\n</details>\n\n", pr.Title, pr.File, pr.Top)
	}
}

// writeBridgeCPU writes the CPU per request of each process on the
// bridge path, by connection count.
func writeBridgeCPU(p func(string, ...any), b *BridgePath) {
	if len(b.CPU) == 0 {
		return
	}
	var conns []int
	for _, c := range b.CPU {
		if !slices.Contains(conns, c.Conns) {
			conns = append(conns, c.Conns)
		}
	}
	slices.Sort(conns)
	p("### Where the CPU goes on the bridge path\n\n")
	p("CPU time (user + system, from /proc) of each process during an extra run through the bridge path, per request served. The kernel's softirq work for a packet is charged to whichever process was on the CPU when it ran, so the split between neighbours on the path is approximate; the total is not.\n\n")
	p("| process |")
	for _, c := range conns {
		p(" µs per request, %d conn | share |", c)
	}
	p("\n|---|")
	for range conns {
		p("---:|---:|")
	}
	p("\n")
	var names []string
	for _, c := range b.CPU {
		if !slices.Contains(names, c.Process) {
			names = append(names, c.Process)
		}
	}
	total := map[int]float64{}
	for _, c := range b.CPU {
		total[c.Conns] += c.PerRequest()
	}
	for _, n := range names {
		p("| %s |", n)
		for _, conns := range conns {
			i := slices.IndexFunc(b.CPU, func(c ProcessCPU) bool { return c.Process == n && c.Conns == conns })
			if i < 0 || total[conns] == 0 {
				p(" – | – |")
				continue
			}
			v := b.CPU[i].PerRequest()
			p(" %.1f | %.0f %% |", v, 100*v/total[conns])
		}
		p("\n")
	}
	p("| all of them |")
	for _, c := range conns {
		p(" %.1f | |", total[c])
	}
	p("\n\n")
}

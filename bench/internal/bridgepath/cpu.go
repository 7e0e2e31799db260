package bridgepath

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gefyra.dev/gefyra/bench/internal/measure"
	"gefyra.dev/gefyra/bench/internal/profile"
	"gefyra.dev/gefyra/bench/internal/report"
	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/admin"
	"gefyra.dev/gefyra/internal/testworld"
)

// Where the profiling endpoints are: carrier's and stowaway's admin
// ports (both serve /debug/pprof/ with admin.ProfilingEnv set).
const (
	carrierAdminPort  = "19901"
	stowawayAdminPort = "9090"
	stowawaySelector  = "app.kubernetes.io/name=gefyra-stowaway"
	// rest names the CPU time of the machine that none of the processes
	// measured used.
	rest = "everything else (wrk, the node's components, interrupts not charged to a process)"
)

// profileStowaway turns on stowaway's profiling endpoints: the add-on's
// Deployment gets admin.ProfilingEnv, and the rollout is waited for.
func profileStowaway(t testworld.T, w *testworld.World) {
	t.Helper()
	w.Kubectl(t, "-n", story.AddonNamespace, "set", "env", "deployment/"+story.StowawayDeployment, admin.ProfilingEnv+"=1")
	w.Kubectl(t, "-n", story.AddonNamespace, "rollout", "status", "deployment/"+story.StowawayDeployment, "--timeout=3m")
}

// podIP is the IP of the one running Pod in namespace that matches
// selector.
func podIP(t testworld.T, w *testworld.World, namespace, selector string) string {
	t.Helper()
	pods, err := w.Client.CoreV1().Pods(namespace).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatalf("pods %s in %s: %v", selector, namespace, err)
	}
	var ips []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" && testworld.PodReady(&p) {
			ips = append(ips, p.Status.PodIP)
		}
	}
	if len(ips) != 1 {
		t.Fatalf("pods %s in %s: want one ready, have IPs %v", selector, namespace, ips)
	}
	return ips[0]
}

// pidsNamed returns the IDs of the processes on this machine whose
// command name is name (the Pods' processes run here too).
func pidsNamed(name string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); err == nil && strings.TrimSpace(string(b)) == name {
			pids = append(pids, pid)
		}
	}
	return pids
}

// group is one row of the CPU split: processes counted together.
type group struct {
	name string
	pids []int
}

func (g group) cpu() time.Duration {
	var sum time.Duration
	for _, p := range g.pids {
		if c, err := measure.CPU(p); err == nil {
			sum += c
		}
	}
	return sum
}

// machineBusy is the CPU time the whole machine spent not idle, from the
// first line of /proc/stat.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return ParseProcStat(line)
}

// ParseProcStat reads the aggregate "cpu" line of /proc/stat and returns
// its busy time: user, nice, system, irq, softirq and steal (idle and
// iowait are not busy; guest time is inside user already).
func ParseProcStat(line string) (time.Duration, error) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("not the aggregate cpu line of /proc/stat: %q", line)
	}
	var busy uint64
	for i, v := range f[1:9] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat field %d: %w", i+1, err)
		}
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / measure.ClockTick, nil
}

// cpuSplit runs one load of conns connections through svc and returns
// each group's CPU time per request, and the rest of the machine's.
func cpuSplit(ctx context.Context, drive Drive, svc string, conns int, groups []group) ([]report.ProcessCPU, error) {
	before := make([]time.Duration, len(groups))
	for i, g := range groups {
		before[i] = g.cpu()
	}
	m0, err := machineBusy()
	if err != nil {
		return nil, err
	}
	s, err := drive(ctx, svc, conns, Header+": "+HeaderValue)
	if err != nil {
		return nil, err
	}
	m1, err := machineBusy()
	if err != nil {
		return nil, err
	}
	var out []report.ProcessCPU
	var sum time.Duration
	for i, g := range groups {
		d := g.cpu() - before[i]
		sum += d
		out = append(out, report.ProcessCPU{Process: g.name, Conns: conns, Requests: s.Requests, CPU: d})
	}
	if other := m1 - m0 - sum; other > 0 {
		out = append(out, report.ProcessCPU{Process: rest, Conns: conns, Requests: s.Requests, CPU: other})
	}
	return out, nil
}

// target is a process to profile: its pprof base URL.
type target struct {
	name, base string
}

// profileRun runs one load of conns connections through svc while each
// target takes a CPU profile, written to dir, and returns the profiles'
// tables.
func profileRun(ctx context.Context, w *testworld.World, drive Drive, svc string, conns int, seconds int, root, dir string, targets []target) ([]report.Profile, error) {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return w.Dialer()(ctx, network, addr)
	}}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	files := make([]string, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		files[i] = filepath.Join(dir, fmt.Sprintf("bridge-%s-c%d.cpu.pprof", strings.ReplaceAll(tg.name, " ", "-"), conns))
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(500 * time.Millisecond) // past the load's start
			errs[i] = profile.Fetch(ctx, client, tg.base, seconds, files[i])
		}()
	}
	_, derr := drive(ctx, svc, conns, Header+": "+HeaderValue)
	wg.Wait()
	if derr != nil {
		return nil, derr
	}
	var out []report.Profile
	for i, tg := range targets {
		if errs[i] != nil {
			return out, errs[i]
		}
		v, err := profile.Views(ctx, root, files[i], fmt.Sprintf("CPU of %s on the bridge path, %d connection(s)", tg.name, conns))
		if err != nil {
			return out, err
		}
		out = append(out, v...)
	}
	return out, nil
}

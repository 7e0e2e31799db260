package xds_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/controlplane/internal/auth"
	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/controlplane/internal/translate"
	"gefyra.dev/gefyra/controlplane/internal/xds"
	"gefyra.dev/gefyra/internal/bridge"
	"gefyra.dev/gefyra/internal/credential"
	"gefyra.dev/gefyra/internal/xdsclient"
)

// The fan-out benchmark runs the control plane's xDS server in a process
// of its own (this test binary again, running only
// TestBenchXDSServerProcess), so its memory is the server's alone, and
// connects one real ADS stream per simulated carrier to it from this
// process: internal/xdsclient, as carrier uses it, each stream with its own
// node ID and token, each ACKing what it gets. The two processes talk over
// the child's stdin and stdout, one command or answer per line.
const (
	// benchServerEnv holds the fleet's shape for the child: "mounts,pods,bridges".
	benchServerEnv = "GEFYRA_BENCH_XDS_SERVER"
	// BenchProfileEnv, if set, names a directory for the server's CPU
	// profile (over the rule changes) and heap profile (with every stream
	// connected).
	benchProfileEnv = "GEFYRA_BENCH_PROFILE_DIR"
	// answer prefixes the child's answers on its standard output, where
	// the testing package writes too.
	answer = "xdsbench "
)

// fleet is the shape of a benchmark model: mounts × podsPerMount carrier
// Pods and mounts × bridgesPerMount bridges, each of its own developer.
type fleet struct {
	name                                  string
	mounts, podsPerMount, bridgesPerMount int
}

func (f fleet) spec() string {
	return fmt.Sprintf("%d,%d,%d", f.mounts, f.podsPerMount, f.bridgesPerMount)
}

func parseFleet(s string) (fleet, error) {
	var f fleet
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return f, fmt.Errorf("fleet %q: want mounts,pods,bridges", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 1 || v > 10000 {
			return f, fmt.Errorf("fleet %q: %q is not a count 1..10000", s, p)
		}
		n[i] = v
	}
	return fleet{name: s, mounts: n[0], podsPerMount: n[1], bridgesPerMount: n[2]}, nil
}

// The shapes benchmarked, each with 1,000 carriers: one workload of 1,000
// replicas shared by 10 developers, so a rule change of one bridge goes to
// all 1,000 carrier streams; and 1,000 bridges spread over 100 workloads
// of 10 replicas, where a rule change concerns 10 carriers.
var fleets = []fleet{
	{name: "carriers=1000,bridges=10,one-workload", mounts: 1, podsPerMount: 1000, bridgesPerMount: 10},
	{name: "carriers=1000,bridges=1000,spread", mounts: 100, podsPerMount: 10, bridgesPerMount: 10},
}

// changedBridge is the bridge whose rule the benchmark changes: the first
// of the first mount.
const changedBridge = 0

// fleetModel builds f's model; every bridge has one exact header rule,
// x-gefyra-user: <developer>.
func fleetModel(f fleet) *model.Model {
	addr := func(base string, i int) netip.Addr {
		b := netip.MustParseAddr(base).As4()
		b[2], b[3] = byte(i>>8), byte(i)
		return netip.AddrFrom4(b)
	}
	m := &model.Model{Stowaway: model.Stowaway{PublicKey: wgKeyOf("stowaway"), Address: netip.MustParseAddr("10.122.0.1"),
		CIDR: netip.MustParsePrefix("10.122.0.0/16")}}
	pod, dev := 0, 0
	for i := 0; i < f.mounts; i++ {
		ns := fmt.Sprintf("team-%03d", i)
		mt := model.Mount{Namespace: ns, Name: "web-deployment-app", Kind: "Deployment", Workload: "web", Container: "app",
			Ports:    []model.Port{{Name: "http", Port: 8080, Protocol: "TCP"}},
			Fallback: []netip.Addr{addr("10.245.0.0", i+1)}}
		for j := 0; j < f.podsPerMount; j++ {
			pod++
			mt.Pods = append(mt.Pods, model.Pod{Namespace: ns, Name: fmt.Sprintf("web-%04d", j), IP: addr("10.244.0.0", pod)})
		}
		m.Mounts = append(m.Mounts, mt)
		for j := 0; j < f.bridgesPerMount; j++ {
			dev++
			name := fmt.Sprintf("dev-%04d", dev)
			a := addr("10.122.0.0", dev+1)
			m.Clients = append(m.Clients, model.Client{Name: name, User: name + "@example.com", PublicKey: wgKeyOf(name), Address: a})
			m.Bridges = append(m.Bridges, model.Bridge{Namespace: ns, Name: name, Mount: mt.Name, Client: name, ClientAddress: a,
				Ports: []bridge.PortMapping{{Remote: 8080, Local: 8155}},
				Rules: []bridge.Rule{{Headers: []bridge.HeaderMatch{{Name: "x-gefyra-user", Type: bridge.Exact, Value: name}}}},
				Local: "local"})
		}
	}
	m.Sort()
	return m
}

// withRule is a copy of m whose changed bridge matches value instead; m
// stays as it was (a published model is never changed).
func withRule(m *model.Model, value string) *model.Model {
	c := *m
	c.Bridges = slices.Clone(m.Bridges)
	c.Bridges[changedBridge].Rules = []bridge.Rule{{Headers: []bridge.HeaderMatch{{Name: "x-gefyra-user", Type: bridge.Exact, Value: value}}}}
	return &c
}

func wgKeyOf(name string) string {
	k := sha256.Sum256([]byte(name))
	return base64.StdEncoding.EncodeToString(k[:])
}

// podTokens takes a token "namespace/pod" for the Pod-bound
// ServiceAccount token of that Pod. Tokens are reviewed once per stream,
// when it opens: not in the path measured here (TokenReviews with the real
// API server are the other tests' subject).
type podTokens struct{}

func (podTokens) Authenticate(_ context.Context, token string) (auth.Identity, error) {
	ns, pod, ok := strings.Cut(token, "/")
	if !ok || ns == "" || pod == "" {
		return auth.Identity{}, fmt.Errorf("%w: token %q", auth.ErrUnauthenticated, token)
	}
	return auth.Identity{Username: "system:serviceaccount:" + ns + ":default", Namespace: ns, ServiceAccount: "default", Pod: pod}, nil
}

// TestBenchXDSServerProcess is the server half of BenchmarkXDSRuleChange;
// it runs only as the benchmark's child process.
func TestBenchXDSServerProcess(t *testing.T) {
	spec := os.Getenv(benchServerEnv)
	if spec == "" {
		t.Skip("the server process of BenchmarkXDSRuleChange; runs only when that benchmark starts it")
	}
	if err := serveFleet(spec, os.Getenv(benchProfileEnv), os.Stdin, os.Stdout); err != nil {
		t.Fatal(err)
	}
}

// serveFleet serves the model of spec and answers commands from in until
// it ends:
//
//	change VALUE    publish the model with the changed bridge's rule
//	                matching VALUE; answer "published NANOSECONDS"
//	mem             answer "mem HEAPINUSE RSS HWM" (bytes, after a GC)
//	cpuprofile on|off, heapprofile   write NAME.cpu.pprof / NAME.heap.pprof
//	                into the profile directory (if there is one); answer "ok"
func serveFleet(spec, profileDir string, in io.Reader, out io.Writer) error {
	f, err := parseFleet(spec)
	if err != nil {
		return err
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	signer, err := credential.NewSigner(key, nil)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s, err := xds.New(xds.Config{
		Listener:      ln,
		Translate:     translate.Options{RelayAddress: "10.96.0.20:8833", Signer: signer},
		Authenticator: podTokens{},
		Policy:        auth.Policy{StowawayNamespace: "gefyra", StowawayServiceAccount: "gefyra-stowaway"},
		Log:           slog.New(slog.DiscardHandler),
		Registry:      prometheus.NewRegistry(),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	m := fleetModel(f)
	if err := s.Publish(ctx, m); err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(out, answer+format+"\n", a...) }
	say("addr %s", ln.Addr())
	var cpu *os.File
	name := strings.ReplaceAll(spec, ",", "-")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "change":
			m = withRule(m, arg)
			start := time.Now()
			if err := s.Publish(ctx, m); err != nil {
				return err
			}
			say("published %d", time.Since(start))
		case "mem":
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			rss, hwm := procStatus("VmRSS"), procStatus("VmHWM")
			say("mem %d %d %d", ms.HeapInuse, rss, hwm)
		case "cpuprofile":
			if profileDir != "" && arg == "on" && cpu == nil {
				if cpu, err = os.Create(filepath.Join(profileDir, name+".cpu.pprof")); err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(cpu); err != nil {
					return err
				}
			}
			if arg == "off" && cpu != nil {
				pprof.StopCPUProfile()
				cpu.Close()
				cpu = nil
			}
			say("ok")
		case "heapprofile":
			if profileDir != "" {
				runtime.GC()
				hf, err := os.Create(filepath.Join(profileDir, name+".heap.pprof"))
				if err != nil {
					return err
				}
				err = pprof.Lookup("heap").WriteTo(hf, 0)
				hf.Close()
				if err != nil {
					return err
				}
			}
			say("ok")
		default:
			return fmt.Errorf("unknown command %q", sc.Text())
		}
	}
	if cpu != nil {
		pprof.StopCPUProfile()
		cpu.Close()
	}
	return sc.Err()
}

// procStatus is a "kB" field of /proc/self/status in bytes (0 if absent).
func procStatus(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}

// serverProcess is the child: the xDS server with a fleet's model.
type serverProcess struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	addr   string
	stderr strings.Builder
}

func startServerProcess(b *testing.B, f fleet) *serverProcess {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	p := &serverProcess{cmd: exec.Command(exe, "-test.run=^TestBenchXDSServerProcess$", "-test.count=1")}
	p.cmd.Env = append(os.Environ(), benchServerEnv+"="+f.spec())
	p.cmd.Stderr = &p.stderr
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	p.out = bufio.NewScanner(stdout)
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		p.in.Close() // the child ends at the end of its input
		waited := make(chan error, 1)
		go func() { waited <- p.cmd.Wait() }()
		select {
		case err := <-waited:
			if err != nil {
				b.Errorf("the xDS server process: %v\n%s", err, p.stderr.String())
			}
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-waited
			b.Errorf("the xDS server process did not end; killed")
		}
	})
	p.addr = p.ask(b, "", "addr")[0]
	return p
}

// ask sends command (none if "") and returns the fields of the answer
// that starts with want.
func (p *serverProcess) ask(b *testing.B, command, want string) []string {
	b.Helper()
	if command != "" {
		p.send(b, command)
	}
	return p.read(b, command, want)
}

func (p *serverProcess) send(b *testing.B, command string) {
	b.Helper()
	if _, err := io.WriteString(p.in, command+"\n"); err != nil {
		b.Fatalf("%s: %v\n%s", command, err, p.stderr.String())
	}
}

// read returns the fields of the next answer, which must start with want.
func (p *serverProcess) read(b *testing.B, command, want string) []string {
	b.Helper()
	for p.out.Scan() {
		line, ok := strings.CutPrefix(p.out.Text(), answer)
		if !ok {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != want {
			b.Fatalf("%s: answer %q, want %s", command, line, want)
		}
		return f[1:]
	}
	b.Fatalf("%s: the xDS server process ended: %v\n%s", command, p.out.Err(), p.stderr.String())
	return nil
}

func (p *serverProcess) mem(b *testing.B) (heap, rss, hwm float64) {
	b.Helper()
	f := p.ask(b, "mem", "mem")
	v := make([]float64, 3)
	for i := range v {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			b.Fatalf("mem answer %v: %v", f, err)
		}
		v[i] = float64(n) / (1 << 20)
	}
	return v[0], v[1], v[2]
}

// carrierFleet is the simulated carriers: one xdsclient per Pod.
type carrierFleet struct {
	want       atomic.Pointer[string] // the rule value awaited
	mu         sync.Mutex             // guards the fields below
	start      time.Time              // when the change was asked for
	got        map[string]time.Duration
	deliveries map[string]int // per node, every delivery
	watch      map[string]bool
}

// routeHasValue reports whether the routes hold an exact header match on
// value.
func routeHasValue(msgs []proto.Message, value string) bool {
	for _, m := range msgs {
		rc, ok := m.(*routev3.RouteConfiguration)
		if !ok {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				for _, h := range r.GetMatch().GetHeaders() {
					if h.GetStringMatch().GetExact() == value {
						return true
					}
				}
			}
		}
	}
	return false
}

func (c *carrierFleet) callback(node string) xdsclient.Callback {
	return func(res map[string][]proto.Message) error {
		now := time.Now()
		has := false
		if w := c.want.Load(); w != nil {
			has = routeHasValue(res[resource.RouteType], *w)
		}
		c.mu.Lock()
		c.deliveries[node]++
		if has && c.watch[node] {
			if _, ok := c.got[node]; !ok {
				c.got[node] = now.Sub(c.start)
			}
		}
		c.mu.Unlock()
		return nil
	}
}

func (c *carrierFleet) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, d := range c.deliveries {
		n += d
	}
	return n
}

// quiet waits until no stream got anything for d (at most a minute).
func (c *carrierFleet) quiet(d time.Duration) {
	last, since := c.total(), time.Now()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		if n := c.total(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= d {
			return
		}
	}
}

// BenchmarkXDSRuleChange measures, with 1,000 carrier streams connected to
// the xDS server (a process of its own), the time from a rule change of
// one bridge (handed to the server as a new model) until the last carrier
// of the bridge's workload has received the route with the new rule; and
// the server's memory with every stream connected. One op is one rule
// change; ns/op counts from the change to the last affected stream. B/op
// and allocs/op, if asked for, are this process's: the simulated carriers.
//
// Metrics: ms-to-median-stream and ms-to-last-stream (medians over the
// changes), ms-to-last-stream-max, ms-publish (the server's translation
// and snapshot updates), streams-affected (carriers of the bridge's
// workload), streams-updated (streams that got a new configuration per
// change, the others included), MB-heap-idle / MB-rss-idle (the server
// with its model before any stream), MB-heap / MB-rss (with every stream
// connected and configured).
func BenchmarkXDSRuleChange(b *testing.B) {
	for _, f := range fleets {
		b.Run(f.name, func(b *testing.B) { benchRuleChange(b, f) })
	}
}

func benchRuleChange(b *testing.B, f fleet) {
	p := startServerProcess(b, f)
	heap0, rss0, _ := p.mem(b)
	m := fleetModel(f)
	changed := m.Bridges[changedBridge]
	cf := &carrierFleet{got: map[string]time.Duration{}, deliveries: map[string]int{}, watch: map[string]bool{}}
	dir := b.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	var nodes []string
	for _, mt := range m.Mounts {
		for _, pod := range mt.Pods {
			id := pod.NodeID()
			nodes = append(nodes, id)
			cf.watch[id] = mt.Namespace == changed.Namespace && mt.Name == changed.Mount
		}
	}
	affected := 0
	for _, w := range cf.watch {
		if w {
			affected++
		}
	}
	for i, id := range nodes {
		tok := filepath.Join(dir, fmt.Sprintf("token-%d", i))
		if err := os.WriteFile(tok, []byte(id), 0o600); err != nil {
			b.Fatal(err)
		}
		c, err := xdsclient.New(xdsclient.Config{Server: p.addr, NodeID: id, Types: translate.Types(translate.KindCarrier),
			TokenFile: tok, InitialWait: time.Minute}, cf.callback(id))
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Run(ctx)
		}()
	}
	// Every stream configured: each delivered its first configuration.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		cf.mu.Lock()
		n := len(cf.deliveries)
		cf.mu.Unlock()
		if n == len(nodes) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d streams configured after 5 minutes", n, len(nodes))
		}
		time.Sleep(50 * time.Millisecond)
	}
	cf.quiet(500 * time.Millisecond)
	heap1, rss1, _ := p.mem(b)
	p.ask(b, "heapprofile", "ok")
	p.ask(b, "cpuprofile on", "ok")

	var last, median, publish, updated []float64
	i := 0
	for b.Loop() {
		i++
		value := fmt.Sprintf("changed-%d", i)
		before := map[string]int{}
		cf.mu.Lock()
		for n, d := range cf.deliveries {
			before[n] = d
		}
		clear(cf.got)
		cf.start = time.Now()
		cf.mu.Unlock()
		cf.want.Store(&value)
		p.send(b, "change "+value)
		for {
			cf.mu.Lock()
			n := len(cf.got)
			cf.mu.Unlock()
			if n == affected {
				break
			}
			if time.Since(cf.start) > 2*time.Minute {
				b.Fatalf("change %d: %d of %d streams got it after 2 minutes", i, n, affected)
			}
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		ans := p.read(b, "change", "published")
		ns, _ := strconv.ParseInt(ans[0], 10, 64)
		publish = append(publish, float64(ns)/1e6)
		cf.mu.Lock()
		var ts []float64
		for _, d := range cf.got {
			ts = append(ts, float64(d)/1e6)
		}
		cf.mu.Unlock()
		slices.Sort(ts)
		last = append(last, ts[len(ts)-1])
		median = append(median, ts[len(ts)/2])
		cf.quiet(300 * time.Millisecond)
		cf.mu.Lock()
		n := 0
		for node, d := range cf.deliveries {
			if d > before[node] {
				n++
			}
		}
		cf.mu.Unlock()
		updated = append(updated, float64(n))
		b.StartTimer()
	}
	b.StopTimer()
	p.ask(b, "cpuprofile off", "ok")
	_, _, hwm := p.mem(b)
	b.ReportMetric(medianOf(median), "ms-to-median-stream")
	b.ReportMetric(medianOf(last), "ms-to-last-stream")
	b.ReportMetric(slices.Max(last), "ms-to-last-stream-max")
	b.ReportMetric(medianOf(publish), "ms-publish")
	b.ReportMetric(float64(affected), "streams-affected")
	b.ReportMetric(medianOf(updated), "streams-updated")
	b.ReportMetric(heap0, "MB-heap-idle")
	b.ReportMetric(rss0, "MB-rss-idle")
	b.ReportMetric(heap1, "MB-heap")
	b.ReportMetric(rss1, "MB-rss")
	b.ReportMetric(hwm, "MB-rss-peak")
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

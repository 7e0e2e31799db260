// Package bridgepath measures the whole bridge path on the test world (the
// real single-node Kubernetes of world/world.sh): a client on this machine
// calls a Service whose Pod runs carrier, carrier hands each request to
// stowaway (a Pod), stowaway through the userspace WireGuard tunnel to the
// agent (gefyra-agent, a process here), and the agent to a local backend
// on 127.0.0.1 — against the same backend process called directly.
//
// It installs the add-on from deploy/ (demo/story's Addon, as the
// end-to-end tests do), deploys a one-container workload of its own in
// namespace Namespace, registers a developer, starts the agent, and
// creates the GefyraBridges a developer's CLI would create. It also times
// how long a new GefyraBridge takes until the first request is served
// through it: the first bridge of a workload (carrier is swapped into the
// Pod) and further bridges of a workload that runs carrier already.
//
// The cluster is shared with the end-to-end tests: the caller holds their
// lock (Lock, LockFile) for as long as Run uses the cluster; everything
// Run created is removed before it returns.
package bridgepath

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gefyra.dev/gefyra/bench/internal/report"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/admin"
	"gefyra.dev/gefyra/internal/testworld"
)

// The workload and the bridges.
const (
	Namespace  = "gefyra-bench"
	Deployment = "bench-app"
	Container  = "app"
	// Port is the workload's container port and its Service's port.
	Port = 8155
	// tunnelPort is the bridged port on the developer's side of the tunnel.
	tunnelPort = 18155
	// Header selects the measured requests: the bridge takes those with
	// Header: HeaderValue, everything else goes to the fallback.
	Header      = "x-bench-path"
	HeaderValue = "bridge"
	// warmHeader selects the requests of the bridges created on a workload
	// that runs carrier already.
	warmHeader = "x-bench-bridge"
	// LockFile is the end-to-end tests' lock on the shared cluster.
	LockFile = "/run/gefyra-e2e.lock"
	user     = "bench@gefyra.dev"
)

// manifest is the workload: the tutorial's backend image, without sidecar,
// answering {"Hello":"World"} on / (the local backend answers "ok").
const manifest = `apiVersion: v1
kind: Namespace
metadata:
  name: ` + Namespace + `
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ` + Deployment + `
  namespace: ` + Namespace + `
spec:
  replicas: 1
  selector:
    matchLabels: {app: bench-app}
  template:
    metadata:
      labels: {app: bench-app}
    spec:
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: ` + Container + `
          image: gefyra.dev/oauth2-demo:0.1.0
          imagePullPolicy: IfNotPresent
          env:
            - {name: PORT, value: "8155"}
            - {name: LOG_FORMAT, value: json}
            # carrier, swapped in, keeps the container's environment: its
            # profiling endpoints are on for the CPU profiles.
            - {name: GEFYRA_PPROF, value: "1"}
          ports:
            - {name: http, containerPort: 8155, protocol: TCP}
          readinessProbe:
            httpGet: {path: /, port: http}
            periodSeconds: 2
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: ["ALL"]}
---
apiVersion: v1
kind: Service
metadata:
  name: ` + Deployment + `
  namespace: ` + Namespace + `
spec:
  selector: {app: bench-app}
  ports:
    - {name: http, port: 8155, targetPort: http, protocol: TCP}
`

// Drive loads addr with conns keep-alive connections, every request
// carrying header ("Name: value"), and returns the measurement (e.g. wrk).
type Drive func(ctx context.Context, addr string, conns int, header string) (report.Sample, error)

// Config is what Run needs.
type Config struct {
	World *testworld.World
	// Root is the repository's root directory.
	Root string
	// Backend is the local backend, host:port on 127.0.0.1: the agent's
	// target and the direct target.
	Backend string
	// Runs of each measurement, Conns the connection counts (1 and 32).
	Runs  int
	Conns []int
	// WarmBridges is how many bridges are created, one after the other,
	// on the workload that runs carrier already.
	WarmBridges int
	Drive       Drive
	// BackendPID is the local backend's process (its CPU is counted).
	BackendPID int
	// ProfileDir receives the CPU profiles of carrier, stowaway and the
	// agent ("" for none); ProfileSeconds is each profile's length.
	ProfileDir     string
	ProfileSeconds int
	// Log receives the narration of every step.
	Log io.Writer
}

// Result is what Run measured.
type Result struct {
	// Direct and Bridged are the samples by connection count, Runs each,
	// measured alternately.
	Direct, Bridged map[int][]report.Sample
	// FirstBridge is the time from creating the workload's first
	// GefyraBridge (carrier swapped in) to the first request served
	// through it; NextBridges the same for each bridge created while the
	// workload runs carrier already.
	FirstBridge time.Duration
	NextBridges []time.Duration
	// Service is the workload's Service (ClusterIP:port), Backend the
	// local backend.
	Service, Backend string
	// CPU is each process's CPU time during an extra run per connection
	// count; Profiles the CPU profiles of carrier, stowaway and the agent
	// during another.
	CPU      []report.ProcessCPU
	Profiles []report.Profile
}

// Run measures on w; the caller holds the cluster's lock. The error names
// the failed step; what was created is removed either way, and what was
// measured before a failure is in the result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	res := &Result{Direct: map[int][]report.Sample{}, Bridged: map[int][]report.Sample{}, Backend: cfg.Backend}
	dir, err := os.MkdirTemp("", "gefyra-bench-bridge-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	r := story.NewRunner(ctx, cfg.Log)
	w := cfg.World
	d := story.New(w, cfg.Root)
	var addon *story.Addon
	var dev *story.Developer
	var agent *story.Agent
	var svc string
	steps := []story.Step{
		{Title: "Building and loading the images (world/images.sh)", Run: func(t testworld.T) {
			d.BuildAllImages(t)
			w.LoadImages(t, d.Image(story.AppImage))
			a, err := story.NewAddon(w, cfg.Root, d.Images)
			if err != nil {
				t.Fatalf("%v", err)
			}
			addon = a
			addon.LoadImages(t)
		}},
		{Title: "Installing the add-on (kubectl apply -k deploy/)", Run: func(t testworld.T) {
			addon.Install(t)
			addon.WaitReady(t)
			if cfg.ProfileDir != "" {
				profileStowaway(t, w)
			}
		}},
		{Title: "Deploying the benchmark's workload", Run: func(t testworld.T) {
			w.Apply(t, manifest)
			w.WaitDeploymentAvailable(t, Namespace, Deployment, 3*time.Minute)
			svc = w.ServiceAddr(t, Namespace, Deployment, Port)
			res.Service = svc
			waitAnswer(t, w, svc, nil, func(body string) bool { return strings.Contains(body, "Hello") }, "the workload through its Service")
		}},
		{Title: "Registering a developer and starting the agent", Run: func(t testworld.T) {
			dev = addon.Register(t, user)
			agent = dev.StartAgent(t, dir, map[uint16]string{tunnelPort: cfg.Backend}, admin.ProfilingEnv+"=1")
		}},
		{Title: "Creating the workload's first GefyraBridge (carrier is swapped in)", Run: func(t testworld.T) {
			res.FirstBridge = timeBridge(t, w, addon, svc, "bench", spec(dev.Name, Header, HeaderValue))
			t.Logf("the first request was served through the bridge %s after its creation", res.FirstBridge.Round(time.Millisecond))
			addon.WaitBridgeReady(t, Namespace, "bench")
		}},
		{Title: "Measuring the bridge path and the backend directly", Run: func(t testworld.T) {
			header := Header + ": " + HeaderValue
			for run := 0; run < cfg.Runs; run++ {
				for _, c := range cfg.Conns {
					for _, target := range []struct {
						name, addr string
						into       map[int][]report.Sample
					}{{"direct", cfg.Backend, res.Direct}, {"bridge path", svc, res.Bridged}} {
						t.Logf("%s, %d connection(s), run %d of %d", target.name, c, run+1, cfg.Runs)
						s, err := cfg.Drive(ctx, target.addr, c, header)
						if err != nil {
							t.Fatalf("%s, %d connection(s): %v", target.name, c, err)
						}
						target.into[c] = append(target.into[c], s)
					}
				}
			}
		}},
		{Title: "Where the CPU goes: each process's CPU time, then CPU profiles, in extra runs", Run: func(t testworld.T) {
			groups := []group{
				{name: "carrier (in the workload's Pod)", pids: pidsNamed("carrier")},
				{name: "stowaway (a Pod)", pids: pidsNamed("stowaway")},
				{name: "gefyra-agent", pids: []int{agent.PID()}},
				{name: "the local backend (nginx)", pids: []int{cfg.BackendPID}},
			}
			for _, g := range groups {
				if len(g.pids) == 0 || g.pids[0] == 0 {
					t.Fatalf("no process for %s", g.name)
				}
			}
			for _, c := range cfg.Conns {
				t.Logf("CPU per process, %d connection(s)", c)
				split, err := cpuSplit(ctx, cfg.Drive, svc, c, groups)
				if err != nil {
					t.Fatalf("CPU split, %d connection(s): %v", c, err)
				}
				res.CPU = append(res.CPU, split...)
			}
			if cfg.ProfileDir == "" {
				return
			}
			agentAddr, err := agent.StatusAddr()
			if err != nil {
				t.Fatalf("%v", err)
			}
			targets := []target{
				{name: "carrier", base: "http://" + net.JoinHostPort(podIP(t, w, Namespace, "app=bench-app"), carrierAdminPort)},
				{name: "stowaway", base: "http://" + net.JoinHostPort(podIP(t, w, story.AddonNamespace, stowawaySelector), stowawayAdminPort)},
				{name: "gefyra-agent", base: "http://" + agentAddr},
			}
			for _, c := range cfg.Conns {
				t.Logf("CPU profiles of carrier, stowaway and the agent, %d connection(s)", c)
				prof, err := profileRun(ctx, w, cfg.Drive, svc, c, cfg.ProfileSeconds, cfg.Root, cfg.ProfileDir, targets)
				res.Profiles = append(res.Profiles, prof...)
				if err != nil {
					t.Fatalf("CPU profiles, %d connection(s): %v", c, err)
				}
			}
		}},
		{Title: "Creating more GefyraBridges on the workload that runs carrier", Run: func(t testworld.T) {
			for i := 1; i <= cfg.WarmBridges; i++ {
				b := "bench-next-" + strconv.Itoa(i)
				took := timeBridge(t, w, addon, svc, b, spec(dev.Name, warmHeader, strconv.Itoa(i)))
				t.Logf("bridge %s: the first request was served through it %s after its creation", b, took.Round(time.Millisecond))
				res.NextBridges = append(res.NextBridges, took)
				addon.DeleteBridge(t, Namespace, b)
			}
		}},
	}
	if err := r.Run(steps); err != nil {
		return res, err
	}
	return res, nil
}

// spec is a bridge of the workload's port for client, taking the requests
// with header: value.
func spec(client, header, value string) gefyrav1.GefyraBridgeSpec {
	return gefyrav1.GefyraBridgeSpec{
		Client: client,
		Target: gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: Deployment, Container: Container},
		Ports:  []gefyrav1.PortMapping{{Remote: Port, Local: tunnelPort}},
		Rules:  []gefyrav1.Rule{{Headers: []gefyrav1.HeaderMatch{{Name: header, Type: "Exact", Value: value}}}},
		Local:  "bench-backend",
	}
}

// timeBridge creates bridge name and returns the time until a request
// with the bridge's header, sent through svc every 10ms, is answered by
// the local backend ("ok").
func timeBridge(t testworld.T, w *testworld.World, addon *story.Addon, svc, name string, s gefyrav1.GefyraBridgeSpec) time.Duration {
	t.Helper()
	h := http.Header{}
	h.Set(s.Rules[0].Headers[0].Name, s.Rules[0].Headers[0].Value)
	start := time.Now()
	addon.Bridge(t, Namespace, name, s)
	waitAnswer(t, w, svc, h, func(body string) bool { return body == "ok" }, "the first request through bridge "+name)
	return time.Since(start)
}

// waitAnswer asks http://addr/ with header every 10ms (a new connection
// each time) until ok(body) holds for a 200, for at most 5 minutes.
func waitAnswer(t testworld.T, w *testworld.World, addr string, header http.Header, ok func(body string) bool, what string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: w.Dialer(), DisableKeepAlives: true}}
	deadline := time.Now().Add(5 * time.Minute)
	last := ""
	for time.Now().Before(deadline) {
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			t.Fatalf("%v", err)
		}
		req.Header = header.Clone()
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && ok(string(b)) {
				return
			}
			last = fmt.Sprintf("%s %q", resp.Status, b)
		} else {
			last = err.Error()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: no answer after 5 minutes; the last: %s", what, last)
}

// Lock takes an exclusive flock on path (LockFile for the shared
// cluster), waiting for it in the kernel's queue like flock(1) until ctx
// ends; the function returned releases it.
func Lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex // guards abandoned
	abandoned := false
	got := make(chan error, 1)
	go func() {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			// The caller gave up waiting: let the next one have it.
			f.Close()
			return
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		return func() { f.Close() }, nil // closing the last descriptor releases the lock
	case <-ctx.Done():
		mu.Lock()
		abandoned = true
		mu.Unlock()
		select {
		case err := <-got: // taken in the meantime
			if err == nil {
				f.Close()
			}
		default:
		}
		return nil, ctx.Err()
	}
}

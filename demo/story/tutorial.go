package story

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gefyra.dev/gefyra/demo/appsrc"
	"gefyra.dev/gefyra/internal/testworld"
)

// The tutorial's names on the developer's side, as it types them.
const (
	LocalContainer = "myfastapi-demo" // gefyra run -N
	BridgeName     = "myfastapi"      // gefyra bridge -I
	BridgePort     = "8155:8155"
	DevImageRef    = "gefyra.dev/oauth2-demo-dev:0.1.0"
	// DevCommand is the tutorial's -c: the twin of `debugpy --listen
	// 0.0.0.0:5678 -m uvicorn … --reload`: rebuild on change, under Delve.
	DevCommand = "devloop -listen 0.0.0.0:5678"
	// DebugPort is where Delve listens in the local container.
	DebugPort = "5678"
	// FixedItem is what /items/123 answers once the bug is fixed.
	FixedItem = `{"item_id":123,"Email":"john@gefyra.dev"}`
)

// Tutorial is the developer's side of the story: the gefyra CLI typed as
// the tutorial types it (`gefyra up`, `gefyra run …`, `gefyra bridge …`,
// `gefyra down`), run as separate commands of a real gefyra binary
// against the test world and this machine's Docker Engine, and the source
// of the backend in a local directory that the developer edits.
type Tutorial struct {
	Demo  *Demo
	Addon *Addon
	// CLI is the gefyra binary (BuildCLI).
	CLI string
	// Home is the CLI's state directory (GEFYRA_HOME).
	Home string
	// LocalDir is the developer's copy of the backend's source: the
	// tutorial's $LOCAL_DIR, mounted at /app.
	LocalDir string
	// IP is the local container's address, as gefyra run printed it.
	IP string

	dir string
}

// NewTutorial returns the developer's side of d.
func NewTutorial(d *Demo) (*Tutorial, error) {
	a, err := NewAddon(d.World, d.Root, "")
	if err != nil {
		return nil, err
	}
	return &Tutorial{Demo: d, Addon: a}, nil
}

// TutorialSteps is the whole story of d (Tutorial.Steps).
func TutorialSteps(d *Demo) []Step {
	u, err := NewTutorial(d)
	if err != nil {
		return []Step{{Title: "Connecting to the test world", Run: func(t testworld.T) { t.Fatalf("%v", err) }}}
	}
	return u.Steps()
}

// Steps is the whole story: the workload and its bug, then the tutorial's
// gefyra commands, the fix through the bridge, and `gefyra down` bringing
// the bug back. The extra steps, if any, run while the fix is bridged,
// before `gefyra status`.
func (u *Tutorial) Steps(extra ...Step) []Step {
	d := u.Demo
	steps := []Step{
		{Title: "Building the images FROM scratch: gefyra's own and the demo's (world/images.sh)", Run: d.BuildAllImages},
		{Title: "Loading them into the cluster's containerd", Run: d.LoadImages},
		{Title: "Deploying the tutorial's workload: kubectl apply -k demo/deploy/local", Run: d.Deploy},
		{Title: "Waiting for the OIDC provider and the oauth2-demo Pod (the backend and its oauth2-proxy sidecar)", Run: func(t testworld.T) {
			d.WaitReady(t)
			d.Show(t)
		}},
		{Title: "Logging in as " + User + " through oauth2-proxy and the OIDC provider", Run: func(t testworld.T) {
			d.Login(t)
			d.ExpectHello(t)
		}},
		{Title: "Asking for item 123: the tutorial's bug", Run: func(t testworld.T) { d.ExpectBug(t) }},
		{Title: "The cluster's admin installs gefyra's add-on: kubectl apply -k deploy/", Run: u.InstallAddon},
		{Title: "Building the gefyra CLI and loading the development image into Docker", Run: u.Prepare},
		{Title: "gefyra up", Run: u.Up},
		{Title: "gefyra run -i " + DevImageRef + " -N " + LocalContainer + " -n " + Namespace + " -v $LOCAL_DIR:/app -c \"" + DevCommand + "\"", Run: u.Run},
		{Title: "The debugger's server answers at the address gefyra run printed", Run: u.CheckDebugger},
		{Title: "gefyra bridge -N " + LocalContainer + " -n " + Namespace + " --deployment " + Deployment + " --port " + BridgePort + " --container-name " + AppContainer + " -I " + BridgeName, Run: u.Bridge},
		{Title: "Item 123 again: the request now reaches the local container, through oauth2-proxy and the bridge, bug and all", Run: u.ExpectLocalBug},
		{Title: "Fixing the bug in $LOCAL_DIR (the one line that names the claim); the local container rebuilds and restarts by itself", Run: u.Fix},
		{Title: "Item 123 once more: fixed, with the token that oauth2-proxy added in the cluster", Run: u.ExpectFixed},
	}
	steps = append(steps, extra...)
	return append(steps,
		Step{Title: "gefyra status and gefyra list", Run: u.Status},
		Step{Title: "gefyra down", Run: u.Down},
		Step{Title: "The cluster is as before: the original image runs again and item 123 fails as it did", Run: u.ExpectRestored},
	)
}

// InstallAddon applies deploy/ (removed again in a cleanup, after every
// gefyra resource) and waits until the control plane and stowaway run.
func (u *Tutorial) InstallAddon(t testworld.T) {
	t.Helper()
	u.Addon.Images = u.Demo.Images
	u.Addon.LoadImages(t)
	u.Addon.Install(t)
	u.Addon.WaitReady(t)
	t.Logf("gefyra's control plane and stowaway are available in namespace %s", AddonNamespace)
}

// Prepare builds the gefyra CLI (static: the CLI builds its agent's image
// FROM scratch out of its own binary), loads the development image into
// Docker and copies the backend's source, as it is, to LocalDir. It
// registers `gefyra down` as a cleanup, so that a story that fails half-way
// leaves nothing behind.
func (u *Tutorial) Prepare(t testworld.T) {
	t.Helper()
	dir, err := os.MkdirTemp("", "gefyra-tutorial-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	u.dir, u.Home, u.LocalDir = dir, filepath.Join(dir, "home"), filepath.Join(dir, "app")
	u.CLI = filepath.Join(dir, "gefyra")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := goBuild(ctx, u.Demo.Root, u.CLI, "./cli/cmd/gefyra"); err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("built %s", u.CLI)
	out, err := exec.CommandContext(ctx, "docker", "load", "-i", u.Demo.Image(DevImage)).CombinedOutput()
	if err != nil {
		t.Fatalf("docker load -i %s: %v\n%s", u.Demo.Image(DevImage), err, out)
	}
	logLines(t, string(out))
	if err := appsrc.Copy(filepath.Join(u.Demo.Root, "demo", "app"), u.LocalDir); err != nil {
		t.Fatalf("copying the backend's source: %v", err)
	}
	t.Logf("export LOCAL_DIR=%s (a copy of demo/app, the bug included)", u.LocalDir)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if out, err := u.run(ctx, "down"); err != nil {
			t.Errorf("cleanup: gefyra down: %v\n%s", err, out)
		}
	})
}

// Gefyra runs the CLI with args, logs its output and returns it; a
// non-zero exit fails the step.
func (u *Tutorial) Gefyra(t testworld.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := u.run(ctx, args...)
	logLines(t, out)
	if err != nil {
		t.Fatalf("gefyra %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (u *Tutorial) run(ctx context.Context, args ...string) (string, error) {
	if u.CLI == "" {
		return "", fmt.Errorf("the gefyra CLI is not built")
	}
	cmd := exec.CommandContext(ctx, u.CLI, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+u.Demo.World.Kubeconfig, "GEFYRA_HOME="+u.Home, "LOCAL_DIR="+u.LocalDir)
	out, err := cmd.CombinedOutput()
	return strings.TrimRight(string(out), "\n"), err
}

// Up runs `gefyra up`. Stowaway carries the local containers' traffic into the cluster's
// Service and Pod networks (deploy/stowaway.yaml), and up says so.
func (u *Tutorial) Up(t testworld.T) {
	t.Helper()
	out := u.Gefyra(t, "up")
	_, line, ok := strings.Cut(out, "[INFO] Local containers reach the cluster through the tunnel: ")
	line, _, _ = strings.Cut(line, "\n")
	if !ok || !strings.Contains(line, "10.96.0.0/12") || !strings.Contains(line, "10.244.0.0/16") || !strings.Contains(line, "DNS "+u.Demo.World.DNSIP) {
		t.Fatalf("gefyra up did not say that local containers reach the cluster's networks 10.96.0.0/12 and 10.244.0.0/16 with DNS %s", u.Demo.World.DNSIP)
	}
}

var runIP = regexp.MustCompile(`is running at ([0-9.]+)`)

// Run runs the tutorial's `gefyra run` and waits until the backend has
// been built and listens in the local container.
func (u *Tutorial) Run(t testworld.T) {
	t.Helper()
	out := u.Gefyra(t, "run", "-i", DevImageRef, "-N", LocalContainer, "-n", Namespace, "-v", u.LocalDir+":/app", "-c", DevCommand)
	m := runIP.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("gefyra run did not print the container's address")
	}
	u.IP = m[1]
	testworld.WaitFor(t, "the backend built and listening in "+LocalContainer, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		logs, err := u.containerLog(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		if strings.Contains(logs, "Build failed") {
			return false, "", fmt.Errorf("the build in %s failed:\n%s", LocalContainer, logs)
		}
		return strings.Contains(logs, "Application running"), lastLine(logs), nil
	})
	logs, _ := u.containerLog(context.Background())
	logLines(t, logs)
}

func (u *Tutorial) containerLog(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", "logs", LocalContainer).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker logs %s: %v: %s", LocalContainer, err, out)
	}
	return string(out), nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// CheckDebugger asks Delve, at the address gefyra run printed, for its
// version over its JSON-RPC API, as an IDE's remote attach starts.
func (u *Tutorial) CheckDebugger(t testworld.T) {
	t.Helper()
	addr := net.JoinHostPort(u.IP, DebugPort)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connecting to the debugger at %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, `{"method":"RPCServer.GetVersion","params":[{}],"id":1}`+"\n"); err != nil {
		t.Fatalf("debugger at %s: %v", addr, err)
	}
	var resp struct {
		Result struct {
			DelveVersion string
			APIVersion   int
		} `json:"result"`
		Error any `json:"error"`
	}
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil {
		t.Fatalf("debugger at %s: %v", addr, err)
	}
	if resp.Error != nil || resp.Result.DelveVersion == "" {
		t.Fatalf("debugger at %s answered %+v", addr, resp)
	}
	t.Logf("Delve %s (API v%d) at %s: an IDE attaches here", strings.TrimSpace(strings.Split(resp.Result.DelveVersion, "\n")[0]), resp.Result.APIVersion, addr)
}

// Bridge runs the tutorial's `gefyra bridge` and checks that it says what
// the tutorial shows.
func (u *Tutorial) Bridge(t testworld.T) {
	t.Helper()
	out := u.Gefyra(t, "bridge", "-N", LocalContainer, "-n", Namespace, "--deployment", Deployment,
		"--port", BridgePort, "--container-name", AppContainer, "-I", BridgeName)
	for _, want := range []string{
		"[INFO] Creating bridge for Pod " + u.Demo.Pod(),
		"[INFO] Waiting for the bridge(s) to become active",
		"[INFO] Bridge " + BridgeName + " established",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("gefyra bridge did not say %q", want)
		}
	}
	p, err := u.Demo.World.Client.CoreV1().Pods(Namespace).Get(context.Background(), u.Demo.Pod(), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("%v", err)
	}
	for _, c := range p.Spec.Containers {
		t.Logf("Pod %s: container %s runs %s", p.Name, c.Name, c.Image)
	}
}

// ExpectLocalBug checks that /items/123 still fails, now in the local
// container: its log names the claim it missed.
func (u *Tutorial) ExpectLocalBug(t testworld.T) {
	t.Helper()
	a := u.Demo.Get(t, ItemPath)
	t.Logf("%s", a)
	if a.Status != http.StatusInternalServerError {
		t.Fatalf("%s, want 500 from the local container (it still has the bug)", a)
	}
	testworld.WaitFor(t, "the local container's log of the missing claim", logTimeout, func(ctx context.Context) (bool, string, error) {
		logs, err := u.containerLog(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		claim := MissingClaim(logs)
		if claim != "" {
			t.Logf("%s logged: claim %q missing from the access token: the token has \"email\", the code asks for %q", LocalContainer, claim, claim)
		}
		return claim != "", "not logged yet", nil
	})
}

// Fix applies the one-line fix to LocalDir and waits until the local
// container has rebuilt and restarted the backend.
func (u *Tutorial) Fix(t testworld.T) {
	t.Helper()
	before, _ := u.containerLog(context.Background())
	starts := strings.Count(before, "Application running")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := appsrc.Fix(ctx, u.LocalDir); err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("sed -i '%s' $LOCAL_DIR/main.go", appsrc.FixSed)
	testworld.WaitFor(t, "the backend rebuilt and restarted in "+LocalContainer, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		logs, err := u.containerLog(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		return strings.Count(logs, "Application running") > starts, lastLine(logs), nil
	})
	after, _ := u.containerLog(context.Background())
	logLines(t, after[min(len(before), len(after)):])
}

// ExpectFixed checks the tutorial's answer through the bridge.
func (u *Tutorial) ExpectFixed(t testworld.T) {
	t.Helper()
	a := u.Demo.Get(t, ItemPath)
	t.Logf("%s", a)
	if a.Status != http.StatusOK || a.Body != FixedItem {
		t.Fatalf("%s, want 200 %s", a, FixedItem)
	}
}

// Status shows `gefyra status` and `gefyra list`, and checks that the
// status counts the requests the bridge carried (read from carrier's
// metrics): at least the one that failed and the one that was fixed.
func (u *Tutorial) Status(t testworld.T) {
	t.Helper()
	out := u.Gefyra(t, "status")
	if !strings.Contains(out, BridgeName+" (namespace "+Namespace+")") || !strings.Contains(out, " requests, ") {
		t.Errorf("gefyra status does not show the bridge %s with its request count", BridgeName)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := u.run(ctx, "status", "-o", "json")
	if err != nil {
		t.Fatalf("gefyra status -o json: %v\n%s", err, js)
	}
	var s struct {
		Bridges []struct {
			Name    string
			Traffic *struct {
				Requests  uint64
				ErrorRate float64
			}
		}
	}
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		t.Fatalf("gefyra status -o json: %v\n%s", err, js)
	}
	for _, b := range s.Bridges {
		if b.Name != BridgeName {
			continue
		}
		if b.Traffic == nil || b.Traffic.Requests < 2 || b.Traffic.ErrorRate <= 0 || b.Traffic.ErrorRate >= 1 {
			t.Errorf("bridge %s traffic %+v, want at least 2 requests, some (not all) of them 500", BridgeName, b.Traffic)
		}
		u.Gefyra(t, "list")
		return
	}
	t.Errorf("gefyra status -o json has no bridge %s:\n%s", BridgeName, js)
}

// Down runs `gefyra down` and checks that no container of gefyra is left.
func (u *Tutorial) Down(t testworld.T) {
	t.Helper()
	u.Gefyra(t, "down")
	out, err := exec.Command("docker", "ps", "-a", "--filter", "name="+LocalContainer, "--format", "{{.Names}}").CombinedOutput()
	if err != nil {
		t.Fatalf("docker ps: %v: %s", err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("containers left after gefyra down: %s", s)
	}
}

// ExpectRestored checks that the backend's Pod runs its original image
// again, with the bug.
func (u *Tutorial) ExpectRestored(t testworld.T) {
	t.Helper()
	var image string
	testworld.WaitFor(t, "the original image in "+u.Demo.Pod(), readyTimeout, func(ctx context.Context) (bool, string, error) {
		p, err := u.Demo.World.Client.CoreV1().Pods(Namespace).Get(ctx, u.Demo.Pod(), metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, c := range p.Spec.Containers {
			if c.Name == AppContainer {
				image = c.Image
			}
		}
		cs, ok := testworld.ContainerStatus(p, AppContainer)
		return ok && cs.Ready && cs.State.Running != nil && !strings.Contains(image, "carrier") && !strings.Contains(cs.Image, "carrier"),
			image + " " + testworld.PodStatus(p), nil
	})
	t.Logf("Pod %s: container %s runs %s again", u.Demo.Pod(), AppContainer, image)
	u.Demo.WaitServing(t)
	u.Demo.ExpectBug(t)
}

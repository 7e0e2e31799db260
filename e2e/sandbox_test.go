//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gefyra.dev/gefyra/demo/appsrc"
	"gefyra.dev/gefyra/demo/browser"
	"gefyra.dev/gefyra/demo/sandbox"
	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/testworld"
)

// sandboxNext are the tutorial's commands as `gefyra sandbox up` must
// print them: typed into a shell with KUBECONFIG and LOCAL_DIR exported,
// they are the tutorial's, flags as written.
var sandboxNext = []string{
	"kubectl --namespace oauth2-demo get pod,service,ingress",
	"gefyra up",
	`gefyra run -i gefyra.dev/oauth2-demo-dev:0.1.0 -N myfastapi-demo -n oauth2-demo -v $LOCAL_DIR:/app -c "devloop -listen 0.0.0.0:5678"`,
	"gefyra bridge -N myfastapi-demo -n oauth2-demo --deployment oauth2-demo --port 8155:8155 --container-name oauth2-demo-app -I myfastapi",
	`sed -i 's/emailClaim = "Email"/emailClaim = "email"/' $LOCAL_DIR/main.go`,
	"gefyra down",
}

// sandboxFixed is /items/123 answered by the fixed backend.
const sandboxFixed = `{"item_id":123,"Email":"john@gefyra.dev"}`

// TestSandbox drives `gefyra sandbox` the way a person does: the real
// gefyra binary, each command a separate invocation through a shell,
// `sandbox up`, the tutorial's commands as it prints them, a browser-style
// login with the expected answers, `sandbox down`, and then nothing of it
// left on this machine.
//
// When the test world runs already (it is shared), the sandbox must leave
// it and Docker Engine running and remove only what it deployed; when it
// does not, the sandbox starts both and stops them again, and the machine
// must be exactly as before (world/snapshot.sh).
func TestSandbox(t *testing.T) {
	root := repoRoot(t)
	if _, err := os.Stat(sandbox.DefaultDir); err == nil {
		t.Fatalf("a sandbox is recorded in %s already: `gefyra sandbox down` first", sandbox.DefaultDir)
	}
	sh := newSandboxShell(t, root)
	worldWasUp := exec.Command(filepath.Join(root, "world", "world.sh"), "status").Run() == nil
	if worldWasUp {
		t.Log("the test world runs already (it is shared): this run covers the sandbox that leaves the world and Docker Engine running " +
			"and removes only what it deployed; the path that starts and stops the world runs when the world is down at the start")
	} else {
		t.Log("the test world is not running: the sandbox starts it (and Docker Engine, if needed), and its removal must leave the machine as before")
	}
	before := takeMachineState(t, root, worldWasUp)
	t.Cleanup(func() {
		if _, err := os.Stat(sandbox.DefaultDir); err == nil {
			t.Errorf("the sandbox is still recorded at the end: removing it")
			sh.run(t, 10*time.Minute, "gefyra sandbox down")
		}
	})

	t.Run("without root: one line, nothing started", func(t *testing.T) {
		for _, cmd := range []string{"up", "down"} {
			r := sh.runAs(t, time.Minute, "gefyra sandbox "+cmd, 65534)
			r.wantOneError(t, "gefyra sandbox "+cmd+" needs root")
		}
		if _, err := os.Stat(sandbox.DefaultDir); err == nil {
			t.Fatalf("%s exists", sandbox.DefaultDir)
		}
	})
	if worldWasUp {
		t.Run("the demo's ClusterIP taken: one line, nothing started", func(t *testing.T) {
			w := testworld.Get(t)
			ns := w.Namespace(t, "sandbox-taken")
			w.KubectlStdin(t, "apiVersion: v1\nkind: Service\nmetadata: {name: taken, namespace: "+ns+"}\n"+
				"spec: {clusterIP: 10.96.100.20, ports: [{port: 8080}]}\n", "apply", "-f", "-")
			r := sh.run(t, 2*time.Minute, "gefyra sandbox up")
			r.wantOneError(t, "ClusterIP 10.96.100.20 (for Service oauth2-demo/oauth2-demo) is taken by Service "+ns+"/taken")
			if _, err := os.Stat(sandbox.DefaultDir); err == nil {
				t.Errorf("%s exists", sandbox.DefaultDir)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if out, err := w.RunKubectl(ctx, "", "get", "namespace", story.Namespace, story.AddonNamespace, "--ignore-not-found", "-o", "name"); err != nil || out != "" {
				t.Errorf("after the refused up: %q %v, want no namespaces", out, err)
			}
		})
	}

	up := sh.run(t, 30*time.Minute, "gefyra sandbox up")
	up.wantOK(t)
	printed := parseSandboxUp(t, up.stdout)
	if !strings.Contains(up.stderr, "==> Deploying the tutorial's workload") || !strings.Contains(up.stderr, "==> Installing gefyra's add-on") {
		t.Errorf("sandbox up showed no progress:\n%s", up.stderr)
	}
	if printed.url != "http://10.96.100.20:8080/" || printed.login != "john@gefyra.dev, password john@gefyra.dev" {
		t.Errorf("sandbox up printed URL %q, login %q", printed.url, printed.login)
	}
	if !slices.Equal(printed.next, sandboxNext) {
		t.Errorf("sandbox up printed the next commands\n%s\nwant\n%s", strings.Join(printed.next, "\n"), strings.Join(sandboxNext, "\n"))
	}
	// A person's second shell: the two exports.
	sh.env = append(sh.env, "KUBECONFIG="+printed.kubeconfig, "LOCAL_DIR="+printed.localDir)

	t.Run("a second up says it runs already", func(t *testing.T) {
		r := sh.run(t, 2*time.Minute, "gefyra sandbox up")
		r.wantOK(t)
		if !strings.Contains(r.stderr, "running already") || !strings.Contains(r.stdout, "export KUBECONFIG="+printed.kubeconfig) {
			t.Errorf("second up: stderr %q, stdout %q", r.stderr, r.stdout)
		}
		if strings.Contains(r.stderr, "==> ") {
			t.Errorf("the second up started something:\n%s", r.stderr)
		}
	})
	t.Run("status says what runs", func(t *testing.T) {
		r := sh.run(t, 2*time.Minute, "gefyra sandbox status")
		r.wantOK(t)
		for _, want := range []string{"The sandbox is up since", "ok Docker Engine", "ok test world", "ok OIDC provider",
			"ok oauth2-demo ", "2/2 Running", "ok control plane", "ok stowaway"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("status lacks %q:\n%s", want, r.stdout)
			}
		}
	})

	w := testworld.Get(t)
	b := browser.New(browser.Options{Transport: w.HTTPClient().Transport, Timeout: 30 * time.Second})
	t.Run("kubectl shows the Pod 2/2 Running, the Services and the Ingress", func(t *testing.T) {
		r := sh.run(t, time.Minute, printed.next[0])
		r.wantOK(t)
		pod := ""
		for line := range strings.Lines(r.stdout) {
			if f := strings.Fields(line); len(f) > 2 && strings.HasPrefix(f[0], "pod/oauth2-demo-") {
				pod = line
				if f[1] != "2/2" || f[2] != "Running" {
					t.Errorf("%s: want 2/2 Running", strings.TrimSpace(line))
				}
			}
		}
		if pod == "" || findRow(r.stdout, "service/oauth2-demo") == nil || findRow(r.stdout, "ingress.networking.k8s.io/oauth2-demo") == nil {
			t.Errorf("kubectl get pod,service,ingress lacks the Pod, Service or Ingress:\n%s", r.stdout)
		}
	})
	t.Run("a browser logs in at the URL and sees the bug", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		page, err := b.Login(ctx, printed.url, story.User, story.Password)
		if err != nil {
			t.Fatalf("login at %s: %v", printed.url, err)
		}
		if got := strings.TrimSpace(page.Text()); page.Status != http.StatusOK || got != `{"Hello":"World"}` {
			t.Fatalf("after the login: %d %s, want 200 {\"Hello\":\"World\"}", page.Status, got)
		}
		if a := sandboxGet(t, b, printed.url); a.Status != http.StatusInternalServerError {
			t.Fatalf("%s, want 500", a)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// The tutorial, as the sandbox printed it.
	sh.run(t, 3*time.Minute, printed.next[1]).wantOK(t) // gefyra up
	if err := appsrc.Fix(context.Background(), printed.localDir); err != nil {
		t.Fatal(err)
	}
	sh.run(t, 3*time.Minute, printed.next[2]).wantOK(t) // gefyra run
	ours := inspectOurDocker(t)
	sh.run(t, 3*time.Minute, printed.next[3]).wantOK(t) // gefyra bridge
	t.Run("through the bridge the fixed backend answers", func(t *testing.T) {
		testworld.WaitFor(t, "the fixed answer through the bridge", 3*time.Minute, func(context.Context) (bool, string, error) {
			a := sandboxGet(t, b, printed.url)
			return a.Status == http.StatusOK && a.Body == sandboxFixed, a.String(), nil
		})
	})
	sh.run(t, 3*time.Minute, printed.next[5]).wantOK(t) // gefyra down
	t.Run("after gefyra down the workload has its bug again", func(t *testing.T) {
		testworld.WaitFor(t, "the bug again", 2*time.Minute, func(context.Context) (bool, string, error) {
			a := sandboxGet(t, b, printed.url)
			return a.Status == http.StatusInternalServerError, a.String(), nil
		})
	})

	down := sh.run(t, 15*time.Minute, "gefyra sandbox down")
	down.wantOK(t)
	if !strings.Contains(down.stderr, "[INFO] The sandbox is down") {
		t.Errorf("sandbox down said:\n%s", down.stderr)
	}
	t.Run("nothing of the sandbox is left", func(t *testing.T) {
		if _, err := os.Stat(sandbox.DefaultDir); err == nil {
			t.Errorf("%s is still there", sandbox.DefaultDir)
		}
		if entries, _ := os.ReadDir(sh.home); len(entries) > 0 {
			t.Errorf("gefyra's state is still in %s: %v", sh.home, entries)
		}
		checkMachineState(t, root, before, ours)
		if r := sh.run(t, time.Minute, "gefyra sandbox down"); r.code != 0 || !strings.Contains(r.stderr, "No sandbox is running") {
			t.Errorf("a second down: exit %d, %s", r.code, r.stderr)
		}
	})
}

// sandboxShell runs command lines as a person types them: through bash,
// with the freshly built gefyra first on PATH and gefyra's state in a
// directory of the test.
type sandboxShell struct {
	root string
	bin  string // the directory of the gefyra binary
	home string // GEFYRA_HOME
	env  []string
}

func newSandboxShell(t *testing.T, root string) *sandboxShell {
	t.Helper()
	// A directory others may read: one test runs gefyra as an unprivileged
	// user.
	bin, err := os.MkdirTemp("", "gefyra-sandbox-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(bin, "gefyra"), "./cli/cmd/gefyra")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building gefyra: %v\n%s", err, out)
	}
	home := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "KUBECONFIG", "GEFYRA_HOME", "GEFYRA_KUBECONFIG", "LOCAL_DIR":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "GEFYRA_HOME="+home)
	return &sandboxShell{root: root, bin: bin, home: home, env: env}
}

// shellResult is one command line's outcome.
type shellResult struct {
	line           string
	stdout, stderr string
	code           int
}

func (r shellResult) wantOK(t *testing.T) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("$ %s\nexit status %d\n%s%s", r.line, r.code, r.stdout, r.stderr)
	}
}

// wantOneError: a failure of exit status 1 with one line on stderr, the
// error, which contains want, and nothing on stdout.
func (r shellResult) wantOneError(t *testing.T, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "[ERROR] ") || !strings.Contains(lines[0], want) || r.stdout != "" {
		t.Errorf("$ %s\nexit status %d, stdout %q, stderr:\n%s\nwant exit status 1 and one line [ERROR] ...%s...", r.line, r.code, r.stdout, r.stderr, want)
	}
}

func (s *sandboxShell) run(t *testing.T, timeout time.Duration, line string) shellResult {
	t.Helper()
	return s.runAs(t, timeout, line, 0)
}

// runAs runs line as uid (0: as the test).
func (s *sandboxShell) runAs(t *testing.T, timeout time.Duration, line string, uid uint32) shellResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", line)
	cmd.Dir = s.root
	cmd.Env = s.env
	if uid != 0 {
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := shellResult{line: line, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("$ %s: %v", line, err)
	}
	t.Logf("$ %s  (exit status %d after %s)\n%s%s", line, r.code, time.Since(start).Round(100*time.Millisecond), indent(r.stderr), indent(r.stdout))
	return r
}

func indent(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString("    " + line)
	}
	if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

// sandboxUp is what `gefyra sandbox up` printed for the person.
type sandboxUp struct {
	kubeconfig, localDir, url, login string
	next                             []string
}

func parseSandboxUp(t *testing.T, out string) sandboxUp {
	t.Helper()
	var p sandboxUp
	inNext := false
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\n")
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "export KUBECONFIG="):
			p.kubeconfig = strings.TrimPrefix(trimmed, "export KUBECONFIG=")
		case strings.HasPrefix(trimmed, "export LOCAL_DIR="):
			p.localDir = strings.TrimPrefix(trimmed, "export LOCAL_DIR=")
		case strings.HasPrefix(trimmed, "URL:"):
			if f := strings.Fields(trimmed); len(f) > 1 {
				p.url = f[1]
			}
		case strings.HasPrefix(trimmed, "Login:"):
			p.login = strings.TrimSpace(strings.TrimPrefix(trimmed, "Login:"))
		case strings.HasPrefix(line, "The tutorial's next commands:"):
			inNext = true
		case inNext && strings.HasPrefix(line, "  ") && !strings.HasPrefix(trimmed, "#"):
			p.next = append(p.next, trimmed)
		case inNext && trimmed != "" && !strings.HasPrefix(line, " "):
			inNext = false
		}
	}
	if p.kubeconfig == "" || p.localDir == "" || p.url == "" || len(p.next) != len(sandboxNext) {
		t.Fatalf("sandbox up printed no KUBECONFIG, LOCAL_DIR, URL or next commands:\n%s", out)
	}
	return p
}

// sandboxGet sends GET /items/123 with the logged-in browser.
func sandboxGet(t *testing.T, b *browser.Browser, base string) story.Answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := strings.TrimSuffix(base, "/") + story.ItemPath
	page, err := b.Get(ctx, path)
	if err != nil {
		return story.Answer{Path: story.ItemPath, Body: err.Error()}
	}
	if page.URL.Path != story.ItemPath {
		t.Fatalf("GET %s ended on %s (%d): the login did not hold", path, page.URL, page.Status)
	}
	return story.Answer{Path: story.ItemPath, Status: page.Status, Body: strings.TrimSpace(page.Text())}
}

// machineState is what the sandbox could leave behind.
type machineState struct {
	worldWasUp bool
	// snapshot is world/snapshot.sh: all of it when the world was down,
	// else the sections a sandbox on a running world may touch, without
	// what other programs' Docker containers and networks bring and take
	// meanwhile (see foreignDocker).
	snapshot string
	raw      string // all of world/snapshot.sh
	// docker: the tutorial's containers and network, the development
	// image, gefyra's images.
	docker string
	images []string
	// cluster: namespaces and cluster-wide objects (world up only).
	cluster string
}

// hostSections are the snapshot's sections checked while the world runs
// (its own files and processes change as Pods come and go).
var hostSections = []string{"links", "addresses", "routes", "network namespaces", "mounts", "iptables", "sysctls", "cgroups"}

// foreignDocker matches the snapshot's lines of Docker networks and
// containers: on a shared machine other programs make and remove their
// own while the sandbox runs. The tutorial's own network and containers
// are checked by name.
var foreignDocker = regexp.MustCompile(`\bbr-[0-9a-f]{12}\b|\bveth[0-9a-z]+\b|/var/lib/docker/|/run/docker/`)

func takeMachineState(t *testing.T, root string, worldUp bool) machineState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := machineState{worldWasUp: worldUp}
	out, err := exec.CommandContext(ctx, filepath.Join(root, "world", "snapshot.sh")).Output()
	if err != nil {
		t.Fatalf("world/snapshot.sh: %v", err)
	}
	m.raw = string(out)
	m.snapshot = snapshotSections(m.raw, worldUp)
	if exec.CommandContext(ctx, "docker", "info").Run() == nil {
		var b strings.Builder
		for _, args := range [][]string{
			{"ps", "--all", "--filter", "name=^myfastapi-demo$", "--format", "container {{.Names}}"},
			{"ps", "--all", "--filter", "name=^gefyra-agent$", "--format", "container {{.Names}}"},
			{"network", "ls", "--filter", "name=^gefyra$", "--format", "network {{.Name}}"},
			{"image", "ls", "--no-trunc", "--format", "image {{.Repository}}:{{.Tag}} {{.ID}}", sandbox.DevImage},
		} {
			out, err := exec.CommandContext(ctx, "docker", args...).Output()
			if err != nil {
				t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
			}
			b.Write(out)
		}
		m.docker = b.String()
		out, err := exec.CommandContext(ctx, "docker", "image", "ls", "--no-trunc", "--quiet", "--filter", "label=dev.gefyra.managed=true").Output()
		if err != nil {
			t.Fatalf("docker image ls: %v", err)
		}
		m.images = strings.Fields(string(out))
	}
	if worldUp {
		w := testworld.Get(t)
		out, err := w.RunKubectl(ctx, "", "get", "namespaces,customresourcedefinitions,clusterroles,clusterrolebindings,"+
			"validatingadmissionpolicies,validatingadmissionpolicybindings", "-o", "name")
		if err != nil {
			t.Fatal(err)
		}
		m.cluster = out
	}
	return m
}

// snapshotSections keeps the snapshot's lines outside /tmp (other
// programs' tests run world binaries from there); with shared, only
// hostSections, and not other programs' Docker lines.
func snapshotSections(out string, shared bool) string {
	var b strings.Builder
	keep := true
	for line := range strings.Lines(out) {
		if name, ok := strings.CutPrefix(line, "## "); ok {
			keep = !shared || slices.Contains(hostSections, strings.TrimSpace(name))
		}
		if !keep || strings.HasPrefix(line, "/tmp/") || shared && foreignDocker.MatchString(line) {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// checkMachineState compares the machine with before, and checks that
// the tutorial's Docker network (its bridge) and the local agent's image
// (ours, seen while the sandbox ran) are gone. The kubelet finishes
// removing a deleted Pod's mounts and links shortly after the Pod object
// is gone, so it waits a little for the two to agree.
func checkMachineState(t *testing.T, root string, before machineState, ours ourDocker) {
	t.Helper()
	var after machineState
	same := func() bool {
		return after.snapshot == before.snapshot && after.docker == before.docker && after.cluster == before.cluster
	}
	deadline := time.Now().Add(time.Minute)
	for {
		after = takeMachineState(t, root, before.worldWasUp)
		if same() || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	for _, c := range []struct{ what, before, after string }{
		{"this machine (world/snapshot.sh)", before.snapshot, after.snapshot},
		{"Docker", before.docker, after.docker},
		{"the cluster", before.cluster, after.cluster},
	} {
		if c.before != c.after {
			t.Errorf("%s is not as before the sandbox:\n%s", c.what, lineDiff(c.before, c.after))
		}
	}
	if ours.bridge != "" && strings.Contains(after.raw, ours.bridge) {
		t.Errorf("the gefyra network's bridge %s is still on this machine", ours.bridge)
	}
	if ours.agentImage != "" && !slices.Contains(before.images, ours.agentImage) && slices.Contains(after.images, ours.agentImage) {
		t.Errorf("the local agent's image %s is still in Docker", ours.agentImage)
	}
}

// ourDocker is what the tutorial's commands made in Docker, seen while
// they ran.
type ourDocker struct {
	bridge     string // the gefyra network's bridge, br-<ID>
	agentImage string
}

func inspectOurDocker(t *testing.T) ourDocker {
	t.Helper()
	var o ourDocker
	if out, err := exec.Command("docker", "network", "inspect", "--format", "{{.Id}}", "gefyra").Output(); err == nil && len(out) > 12 {
		o.bridge = "br-" + string(out[:12])
	} else {
		t.Errorf("no gefyra network after gefyra run: %v", err)
	}
	if out, err := exec.Command("docker", "container", "inspect", "--format", "{{.Image}}", "gefyra-agent").Output(); err == nil {
		o.agentImage = strings.TrimSpace(string(out))
	} else {
		t.Errorf("no gefyra-agent container after gefyra up: %v", err)
	}
	return o
}

// lineDiff lists the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out strings.Builder
	for _, l := range la {
		if !slices.Contains(lb, l) {
			out.WriteString("- " + l + "\n")
		}
	}
	for _, l := range lb {
		if !slices.Contains(la, l) {
			out.WriteString("+ " + l + "\n")
		}
	}
	return out.String()
}

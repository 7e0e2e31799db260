package story

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gefyra.dev/gefyra/demo/appsrc"
	"gefyra.dev/gefyra/internal/testworld"
)

// Process is a program the story runs on this machine (the developer's
// side): its output goes to a log file, and it is killed, by its PID, when
// the caller is done.
type Process struct {
	Name string
	Path string
	Args []string
	// Log is the file that holds its standard output and error.
	Log string
	// Env is added to this process's environment (KEY=value).
	Env []string

	mu   sync.Mutex // guards the fields below
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	err  error         // cmd's exit, once done is closed
}

// NewProcess returns a process that logs to a file in dir; Start runs it,
// and a cleanup registered here stops it (and, if the caller failed, logs
// the end of its output).
func NewProcess(t testworld.T, dir, name, path string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Path: path, Args: args, Log: filepath.Join(dir, name+".log")}
	t.Cleanup(func() {
		p.Kill(t)
		if testworld.Failed(t) {
			p.DumpLog(t, 60)
		}
	})
	return p
}

// Start starts the process (again, after Kill).
func (p *Process) Start(t testworld.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			t.Fatalf("%s runs already (pid %d)", p.Name, p.cmd.Process.Pid)
		}
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	defer f.Close()
	cmd := exec.Command(p.Path, p.Args...)
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a terminal's ^C reaches the story, which
	// stops it in its cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.Name, err)
	}
	p.cmd, p.done, p.err = cmd, make(chan struct{}), nil
	done := p.done
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	t.Logf("started %s (pid %d): %s %s", p.Name, cmd.Process.Pid, filepath.Base(p.Path), strings.Join(p.Args, " "))
}

// PID is the running process's ID, 0 if it does not run.
func (p *Process) PID() int {
	if ok, _ := p.Running(); !ok {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Running reports whether the process runs; if not, err is how it ended.
func (p *Process) Running() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false, errors.New("not started")
	}
	select {
	case <-p.done:
		return false, p.err
	default:
		return true, nil
	}
}

// Kill kills the process (SIGKILL, by its PID) and waits until it is gone.
// A process that does not run is left alone.
func (p *Process) Kill(t testworld.T) {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("killing %s (pid %d): %v", p.Name, cmd.Process.Pid, err)
	}
	select {
	case <-done:
		t.Logf("killed %s (pid %d)", p.Name, cmd.Process.Pid)
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) did not exit after SIGKILL", p.Name, cmd.Process.Pid)
	}
}

// DumpLog logs the last n lines of the process's output.
func (p *Process) DumpLog(t testworld.T, n int) {
	t.Helper()
	b, err := os.ReadFile(p.Log)
	if err != nil {
		t.Logf("%s: no log: %v", p.Name, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("the last lines of %s's output:\n%s", p.Name, strings.Join(lines, "\n"))
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testworld.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// LocalBackend is the tutorial's backend built from demo/app and run on this
// machine, as the developer's local container serves it: with the fix
// (appsrc.FixSed applied: the claim read as "email") or as it is, with the
// bug.
type LocalBackend struct {
	*Process
	// Addr is where it listens: 127.0.0.1:port.
	Addr string
}

// StartLocalBackend builds the backend (fixed if fix is set) into dir and
// starts it as name on a free port of 127.0.0.1; it answers before this
// returns.
func StartLocalBackend(t testworld.T, dir, name string, fix bool) *LocalBackend {
	t.Helper()
	bin := filepath.Join(dir, name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := appsrc.Build(ctx, bin, fix); err != nil {
		t.Fatalf("building the backend %s: %v", name, err)
	}
	port := strconv.Itoa(FreePort(t))
	b := &LocalBackend{
		Process: NewProcess(t, dir, name, bin, "-host", "127.0.0.1", "-port", port, "-log-format", "json"),
		Addr:    net.JoinHostPort("127.0.0.1", port),
	}
	b.Start(t)
	c := &http.Client{Timeout: 2 * time.Second}
	testworld.WaitFor(t, name+" at "+b.Addr, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		if ok, err := b.Running(); !ok {
			return false, "", fmt.Errorf("%s exited: %v", name, err)
		}
		return testworld.Answers(c, "http://"+b.Addr+"/")(ctx)
	})
	return b
}

// Served returns the status of every request for path the backend logged,
// in order.
func (b *LocalBackend) Served(path string) []int {
	data, err := os.ReadFile(b.Log)
	if err != nil {
		return nil
	}
	var out []int
	for line := range strings.Lines(string(data)) {
		var l struct {
			Path   string `json:"path"`
			Status int    `json:"status"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Path == path && l.Status != 0 {
			out = append(out, l.Status)
		}
	}
	return out
}

// goBuild builds the package pkg of the module at root into out.
func goBuild(ctx context.Context, root, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "grpcnotrace", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

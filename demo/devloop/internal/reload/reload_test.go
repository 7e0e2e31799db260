package reload

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/golang-jwt/jwt/v5"

	"gefyra.dev/gefyra/demo/appsrc"
)

type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until re matches at least n times in the output.
func waitFor(t *testing.T, out *syncBuffer, re string, n int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(3 * time.Minute)
	for len(rx.FindAllStringIndex(out.String(), -1)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("waited for %d× %q:\n%s", n, re, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

// fixture is a copy of the demo backend's source with the module files the
// development image ships.
type fixture struct {
	src, modDir, work string
	port              string
	out               *syncBuffer
	token             string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	root, err := appsrc.RepoRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{src: filepath.Join(t.TempDir(), "app"), modDir: t.TempDir(), work: t.TempDir(), port: freePort(t), out: &syncBuffer{}}
	if err := appsrc.Copy(filepath.Join(root, "demo", "app"), f.src); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, gosum, err := appsrc.ModuleFiles(sum)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.modDir, "go.mod"), gomod, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.modDir, "go.sum"), gosum, 0o644); err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f.token, err = jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"email": "john@gefyra.dev"}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) config(t *testing.T) Config {
	return Config{
		SourceDir:  f.src,
		ModuleDir:  f.modDir,
		WorkDir:    f.work,
		BuildFlags: []string{"-gcflags=all=-N -l"},
		Env:        append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "CGO_ENABLED=0", "GOWORK=off"),
		Args:       []string{"-host", "127.0.0.1", "-port", f.port},
		Debounce:   100 * time.Millisecond,
		Stdout:     f.out,
		Stderr:     f.out,
		Logger:     slog.New(NewUvicornHandler(f.out, slog.LevelDebug)),
	}
}

// start runs the loop until the test ends.
func start(t *testing.T, cfg Config) {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// item asks the running backend for /items/123 with a Keycloak-style token,
// waiting until it answers.
func (f *fixture) item(t *testing.T) (int, string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+f.port+"/items/123", nil)
		req.Header.Set("X-Forwarded-Access-Token", f.token)
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend not answering: %v\n%s", err, f.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var startedPID = regexp.MustCompile(`Started server process \[(\d+)\]`)

func (f *fixture) pids() []int {
	var pids []int
	for _, m := range startedPID.FindAllStringSubmatch(f.out.String(), -1) {
		p, _ := strconv.Atoi(m[1])
		pids = append(pids, p)
	}
	return pids
}

func TestReloadPlain(t *testing.T) {
	f := newFixture(t)
	start(t, f.config(t))
	waitFor(t, f.out, `Will watch for changes in these directories: \['`+regexp.QuoteMeta(f.src)+`'\]`, 1)
	waitFor(t, f.out, `Started reloader process \[\d+\] using fsnotify`, 1)
	waitFor(t, f.out, `Started server process`, 1)
	if status, body := f.item(t); status != 500 {
		t.Fatalf("shipped backend: %d %q, want 500", status, body)
	}

	// The developer saves the fix.
	if err := appsrc.Fix(context.Background(), f.src); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.out, `WARNING:  Changes detected in 'main.go'\. Reloading\.\.\.`, 1)
	waitFor(t, f.out, `Started server process`, 2)
	if status, body := f.item(t); status != 200 || body != `{"item_id":123,"Email":"john@gefyra.dev"}` {
		t.Fatalf("fixed backend: %d %q", status, body)
	}

	// A typo: the build fails, the fixed version keeps answering.
	broken := filepath.Join(f.src, "broken.go")
	if err := os.WriteFile(broken, []byte("package main\n\nfunc broken() { return 1 }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.out, `ERROR:    Build failed; process \[\d+\] keeps running the last good version`, 1)
	waitFor(t, f.out, `broken\.go:3:\d+: too many return values`, 1)
	if status, _ := f.item(t); status != 200 {
		t.Fatalf("after a failed build: %d, want the last good version's 200", status)
	}
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.out, `Started server process`, 3)
	if status, _ := f.item(t); status != 200 {
		t.Fatalf("after the typo was removed: %d", status)
	}

	// Test files and dot files do not trigger a rebuild.
	before := strings.Count(f.out.String(), "Reloading")
	for _, name := range []string{"main_test.go", ".main.go.swp", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(f.src, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if after := strings.Count(f.out.String(), "Reloading"); after != before {
		t.Fatalf("irrelevant files triggered a reload:\n%s", f.out.String())
	}
	for _, pid := range f.pids()[:2] {
		if alive(pid) {
			t.Errorf("replaced process %d still runs", pid)
		}
	}
}

func TestDebounce(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t)
	cfg.Debounce = time.Second
	start(t, cfg)
	waitFor(t, f.out, `Started server process`, 1)
	main := filepath.Join(f.src, "main.go")
	src, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := os.WriteFile(main, append(src, fmt.Sprintf("\n// save %d\n", i)...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, f.out, `Started server process`, 2)
	if n := strings.Count(f.out.String(), "Reloading"); n != 1 {
		t.Fatalf("%d reloads for one burst of saves, want 1:\n%s", n, f.out.String())
	}
}

func TestProgramExits(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t)
	cfg.Args = []string{"-port", "not-a-port"} // the backend refuses to start
	start(t, cfg)
	waitFor(t, f.out, `ERROR:    Application process \[\d+\] exited: exit status 1; waiting for changes`, 1)
	if err := appsrc.Fix(context.Background(), f.src); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.out, `exited: exit status 1`, 2)
}

// delvePath returns the dlv binary the world scripts build.
func delvePath(t *testing.T) string {
	t.Helper()
	root, err := appsrc.RepoRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "world", "build.sh"), "--dir", "delve").Output()
	if err != nil {
		t.Fatalf("world/build.sh --dir delve: %v", err)
	}
	dlv := filepath.Join(strings.TrimSpace(string(out)), "dlv")
	if _, err := os.Stat(dlv); err != nil {
		t.Fatalf("Delve is not built (%v): run world/build.sh delve", err)
	}
	return dlv
}

// dlvClient is a JSON-RPC connection to Delve's API server.
type dlvClient struct {
	t    *testing.T
	conn net.Conn
	dec  *json.Decoder
	id   int
}

func dialDelve(t *testing.T, addr string) *dlvClient {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			t.Cleanup(func() { conn.Close() })
			return &dlvClient{t: t, conn: conn, dec: json.NewDecoder(bufio.NewReader(conn))}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial Delve at %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call makes one call and returns its result; it does not fail the test
// itself, so it can run on another goroutine.
func (c *dlvClient) call(method string, params any) (json.RawMessage, error) {
	c.id++
	req, _ := json.Marshal(map[string]any{"method": "RPCServer." + method, "params": []any{params}, "id": c.id})
	_ = c.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := c.conn.Write(append(req, '\n')); err != nil {
		return nil, err
	}
	var resp struct {
		Result json.RawMessage `json:"result"`
		Error  any             `json:"error"`
	}
	if err := c.dec.Decode(&resp); err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("%s: %v", method, resp.Error)
	}
	return resp.Result, nil
}

func (c *dlvClient) mustCall(method string, params any) json.RawMessage {
	c.t.Helper()
	r, err := c.call(method, params)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

func TestReloadUnderDelve(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t)
	dlvAddr := "127.0.0.1:" + freePort(t)
	cfg.Delve = &Delve{Path: delvePath(t), Listen: dlvAddr}
	start(t, cfg)
	waitFor(t, f.out, `Started server process \[\d+\] under Delve, debug server on `+regexp.QuoteMeta(dlvAddr), 1)
	if status, _ := f.item(t); status != 500 {
		t.Fatalf("shipped backend under Delve: %d, want 500", status)
	}
	// The tutorial's debugging session: attach, break on the line that reads
	// the claim, send the request, look at the token's claims, go on.
	dlv := dialDelve(t, dlvAddr)
	if v := dlv.mustCall("GetVersion", map[string]any{}); !strings.Contains(string(v), "DelveVersion") {
		t.Fatalf("GetVersion: %s", v)
	}
	dlv.mustCall("Command", map[string]any{"name": "halt"})
	// The debug information names the sources by their real path, so a
	// breakpoint on the mounted main.go resolves.
	var sources struct{ Sources []string }
	if err := json.Unmarshal(dlv.mustCall("ListSources", map[string]any{"Filter": "main.go$"}), &sources); err != nil {
		t.Fatal(err)
	}
	mainGo := filepath.Join(f.src, "main.go")
	if !slices.Contains(sources.Sources, mainGo) {
		t.Fatalf("Delve does not know %s: %v", mainGo, sources.Sources)
	}
	line := lineOf(t, mainGo, "mail, ok := claims[h.emailClaim]")
	var bp struct{ Breakpoint struct{ ID int } }
	if err := json.Unmarshal(dlv.mustCall("CreateBreakpoint", map[string]any{"Breakpoint": map[string]any{"file": mainGo, "line": line}}), &bp); err != nil || bp.Breakpoint.ID == 0 {
		t.Fatalf("breakpoint on the buggy line: %v %+v", err, bp)
	}
	stopped := make(chan json.RawMessage, 1)
	go func() {
		r, err := dlv.call("Command", map[string]any{"name": "continue"})
		if err != nil {
			r = json.RawMessage(fmt.Sprintf("%q", err.Error()))
		}
		stopped <- r
	}()
	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+f.port+"/items/123", nil)
		req.Header.Set("X-Forwarded-Access-Token", f.token)
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	var state json.RawMessage
	select {
	case state = <-stopped:
	case <-time.After(2 * time.Minute):
		t.Fatal("breakpoint not hit")
	}
	if !strings.Contains(string(state), fmt.Sprintf(`"line":%d`, line)) {
		t.Fatalf("stopped elsewhere: %s", state)
	}
	select {
	case s := <-answered:
		t.Fatalf("request answered (%d) while stopped at the breakpoint", s)
	default:
	}
	claims := dlv.mustCall("Eval", map[string]any{"Scope": map[string]any{"GoroutineID": -1, "Frame": 0}, "Expr": "claims"})
	if !strings.Contains(string(claims), `\"email\"`) && !strings.Contains(string(claims), `"email"`) {
		t.Fatalf("claims at the breakpoint lack email: %s", claims)
	}
	t.Logf("stopped at the breakpoint; claims: %.300s", claims)
	dlv.mustCall("ClearBreakpoint", map[string]any{"Id": bp.Breakpoint.ID})
	go func() { _, _ = dialDelve(t, dlvAddr).call("Command", map[string]any{"name": "continue"}) }()
	select {
	case s := <-answered:
		if s != 500 {
			t.Fatalf("after the breakpoint: %d, want 500", s)
		}
	case <-time.After(time.Minute):
		t.Fatal("request not answered after continue")
	}

	first := descendants(f.pids()[0])
	if err := appsrc.Fix(context.Background(), f.src); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.out, `Started server process`, 2)
	if status, body := f.item(t); status != 200 || body != `{"item_id":123,"Email":"john@gefyra.dev"}` {
		t.Fatalf("fixed backend under Delve: %d %q", status, body)
	}
	if v := dialDelve(t, dlvAddr).mustCall("GetVersion", map[string]any{}); !strings.Contains(string(v), "DelveVersion") {
		t.Fatalf("Delve after the reload: %s", v)
	}
	for _, pid := range append(first, f.pids()[0]) {
		if alive(pid) {
			t.Errorf("process %d of the first run still alive", pid)
		}
	}
}

func lineOf(t *testing.T, file, needle string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, needle) {
			return i + 1
		}
	}
	t.Fatalf("%q not in %s", needle, file)
	return 0
}

func TestNewErrors(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{name: "no logger", mutate: func(c *Config) { c.Logger = nil }, wantErr: "logger"},
		{name: "no source", mutate: func(c *Config) { c.SourceDir = filepath.Join(f.src, "missing") }, wantErr: "not a directory"},
		{name: "no module dir", mutate: func(c *Config) { c.ModuleDir = "" }, wantErr: "no go.mod"},
		{name: "module dir without files", mutate: func(c *Config) { c.ModuleDir = t.TempDir() }, wantErr: "module files"},
		{name: "no dlv", mutate: func(c *Config) { c.Delve = &Delve{Path: "/nonexistent/dlv"} }, wantErr: "delve"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := f.config(t)
			tc.mutate(&c)
			if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestRelevant(t *testing.T) {
	tests := []struct {
		name string
		ev   fsnotify.Event
		want bool
	}{
		{name: "write go file", ev: fsnotify.Event{Name: "/app/main.go", Op: fsnotify.Write}, want: true},
		{name: "sed rename", ev: fsnotify.Event{Name: "/app/main.go", Op: fsnotify.Create}, want: true},
		{name: "removed file", ev: fsnotify.Event{Name: "/app/jwks.go", Op: fsnotify.Remove}, want: true},
		{name: "go.mod", ev: fsnotify.Event{Name: "/app/go.mod", Op: fsnotify.Write}, want: true},
		{name: "chmod only", ev: fsnotify.Event{Name: "/app/main.go", Op: fsnotify.Chmod}, want: false},
		{name: "test file", ev: fsnotify.Event{Name: "/app/main_test.go", Op: fsnotify.Write}, want: false},
		{name: "editor swap file", ev: fsnotify.Event{Name: "/app/.main.go.swp", Op: fsnotify.Write}, want: false},
		{name: "sed temp file", ev: fsnotify.Event{Name: "/app/sedAbC123", Op: fsnotify.Create}, want: false},
		{name: "readme", ev: fsnotify.Event{Name: "/app/README.md", Op: fsnotify.Write}, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := relevant(tc.ev); got != tc.want {
				t.Fatalf("relevant(%v) = %v", tc.ev, got)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name      string
		stat      string
		wantState byte
		wantPPID  int
		wantOK    bool
	}{
		{name: "plain", stat: "42 (dlv) S 7 42 7 0 -1", wantState: 'S', wantPPID: 7, wantOK: true},
		{name: "name with spaces and parens", stat: "42 (a) b (c) Z 9 1 1", wantState: 'Z', wantPPID: 9, wantOK: true},
		{name: "truncated", stat: "42 (x", wantOK: false},
		{name: "no ppid", stat: "42 (x) R", wantOK: false},
		{name: "empty", stat: "", wantOK: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state, ppid, ok := parseStat([]byte(tc.stat))
			if ok != tc.wantOK || (ok && (state != tc.wantState || ppid != tc.wantPPID)) {
				t.Fatalf("got %c %d %v", state, ppid, ok)
			}
		})
	}
	if st, ppid, ok := parseStat(must(os.ReadFile("/proc/self/stat"))); !ok || ppid != os.Getppid() || st == 'Z' {
		t.Fatalf("own stat: %c %d %v", st, ppid, ok)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0 -1 4194560"))
	f.Add([]byte("2 ()) R -5"))
	f.Fuzz(func(t *testing.T, stat []byte) {
		state, ppid, ok := parseStat(stat)
		if !ok {
			return
		}
		again := append([]byte("1 (c) "), state)
		again = append(again, " "+strconv.Itoa(ppid)+" 1 1"...)
		if s2, p2, ok2 := parseStat(again); !ok2 || s2 != state || p2 != ppid {
			t.Fatalf("%q parsed as %q %d, but %q as %q %d %v", stat, state, ppid, again, s2, p2, ok2)
		}
	})
}

func TestUvicornHandler(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(NewUvicornHandler(&b, slog.LevelInfo)).With("gen", 2)
	log.Info("Will watch for changes in these directories: ['/app']")
	log.Warn("Changes detected in 'main.go'. Reloading...", "path", "/app/main go")
	log.Debug("hidden")
	log.Error("Build failed", "err", "")
	want := "INFO:     Will watch for changes in these directories: ['/app'] gen=2\n" +
		"WARNING:  Changes detected in 'main.go'. Reloading... gen=2 path=\"/app/main go\"\n" +
		"ERROR:    Build failed gen=2 err=\"\"\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

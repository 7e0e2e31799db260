package multicall

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/internal/carrierimage"
)

// TestHelperProcess is run as a child: it decides its role with the lock
// given in the environment and reports it, then (as the proxy) holds the
// lock until killed.
func TestHelperProcess(t *testing.T) {
	lock := os.Getenv("MULTICALL_TEST_LOCK")
	if lock == "" {
		t.Skip("helper process only")
	}
	role, f, err := Decide(lock, os.Getpid())
	if err != nil {
		os.Stdout.WriteString("error " + err.Error() + "\n")
		os.Exit(2)
	}
	os.Stdout.WriteString(role.String() + "\n")
	if role == RoleProxy {
		defer f.Close()
		time.Sleep(time.Minute)
	}
	os.Exit(0)
}

func helper(t *testing.T, lock string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "MULTICALL_TEST_LOCK="+lock)
	return cmd
}

func TestFirstProcessIsTheProxyOthersExit0(t *testing.T) {
	lock := t.TempDir() // a directory, like the container's "/"
	proxy := helper(t, lock)
	out, err := proxy.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		proxy.Process.Kill()
		proxy.Wait()
	}()
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf) != "proxy\n" {
		t.Fatalf("first process: %q, %v", buf, err)
	}
	// What kubelet runs for an exec probe meanwhile.
	start := time.Now()
	got, err := helper(t, lock).Output()
	if err != nil || strings.TrimSpace(string(got)) != "exec" {
		t.Fatalf("second process: %q, %v", got, err)
	}
	t.Logf("exec'd command decided in %v", time.Since(start))
	// The proxy dies: the lock goes with it, and the next first process
	// (a restarted container) is the proxy again.
	proxy.Process.Kill()
	proxy.Wait()
	next := helper(t, lock)
	out2, _ := next.StdoutPipe()
	next.Start()
	defer func() {
		next.Process.Kill()
		next.Wait()
	}()
	if _, err := out2.Read(buf); err != nil || string(buf) != "proxy\n" {
		t.Fatalf("after the proxy died: %q, %v", buf, err)
	}
}

func TestPID1IsAlwaysTheProxy(t *testing.T) {
	lock := t.TempDir()
	role, f, err := Decide(lock, os.Getpid())
	if err != nil || role != RoleProxy {
		t.Fatalf("%v %v", role, err)
	}
	defer f.Close()
	// flock locks belong to the open file: a second open in this process
	// conflicts like another process would.
	if role, _, _ := Decide(lock, 12345); role != RoleExec {
		t.Fatalf("second decision %v, want exec", role)
	}
	if role, g, err := Decide(lock, 1); role != RoleProxy || err != nil {
		t.Fatalf("pid 1: %v %v", role, err)
	} else if g != nil {
		g.Close()
	}
	if role, _, err := Decide(filepath.Join(lock, "missing"), 1); role != RoleProxy || err != nil {
		t.Fatalf("pid 1 without a lock file: %v %v", role, err)
	}
}

// TestExecBeforeTheProxyLocked: while PID 1 runs carrier's own binary,
// any other carrier process is an exec'd command, also before the proxy
// has taken the lock (kubelet may run a probe at once); where PID 1 runs
// something else, the free lock makes it the proxy.
func TestExecBeforeTheProxyLocked(t *testing.T) {
	lock := t.TempDir()
	defer func(i string) { initExe = i }(initExe)
	tests := []struct {
		name string
		init string
		pid  int
		want Role
	}{
		{"PID 1 runs this binary", selfExe, 4242, RoleExec},
		{"this process is PID 1", selfExe, 1, RoleProxy},
		{"PID 1 runs another binary", "/bin/sh", 4242, RoleProxy},
		{"PID 1 cannot be looked at", filepath.Join(lock, "missing"), 4242, RoleProxy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			initExe = tt.init
			role, f, err := Decide(lock, tt.pid)
			if f != nil {
				f.Close() // the lock stays free for the next case
			}
			if err != nil || role != tt.want {
				t.Fatalf("Decide: %v, %v; want %v", role, err, tt.want)
			}
		})
	}
}

func TestFilterArgs(t *testing.T) {
	known := map[string]bool{"xds-server": false, "log-level": false, "version": true}
	tests := []struct {
		name          string
		args          []string
		kept, dropped []string
	}{
		{name: "uvicorn args", args: []string{"main:app", "--host", "0.0.0.0", "--port", "8155"}, dropped: []string{"main:app", "--host", "0.0.0.0", "--port", "8155"}},
		{name: "own flags", args: []string{"--xds-server", "cp:18000", "-log-level=debug", "--version"}, kept: []string{"-xds-server=cp:18000", "-log-level=debug", "-version"}},
		{name: "mixed", args: []string{"--port", "8155", "--xds-server=cp:1"}, kept: []string{"-xds-server=cp:1"}, dropped: []string{"--port", "8155"}},
		{name: "missing value", args: []string{"--xds-server"}, dropped: []string{"--xds-server"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept, dropped := FilterArgs(tt.args, known)
			if !reflect.DeepEqual(kept, tt.kept) || !reflect.DeepEqual(dropped, tt.dropped) {
				t.Fatalf("kept %q dropped %q", kept, dropped)
			}
		})
	}
}

func TestIsOwnName(t *testing.T) {
	if !IsOwnName("/carrier") || !IsOwnName("carrier") || IsOwnName("/usr/local/bin/uvicorn") {
		t.Fatal("IsOwnName")
	}
}

func TestWriteLayout(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(t.TempDir(), "carrier")
	os.WriteFile(bin, []byte("binary"), 0o755)
	if err := WriteLayout(dir, bin); err != nil {
		t.Fatal(err)
	}
	for _, p := range append([]string{carrierimage.Binary}, carrierimage.Paths()...) {
		// Resolve each link inside dir as the container would inside its root.
		path := filepath.Join(dir, p)
		if target, err := os.Readlink(path); err == nil {
			if target != carrierimage.Binary {
				t.Fatalf("%s links to %s", p, target)
			}
			path = filepath.Join(dir, target)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != "binary" {
			t.Fatalf("%s: %q, %v", p, b, err)
		}
	}
}

package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gefyra.dev/gefyra/internal/carrierimage"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestBinary starts the built binary the way kubelet would after the image
// swap: under the original program's name and arguments, then runs an
// exec probe inside the same "container" (the same lock), then stops it.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "carrier")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// The build steps of the image: its environment and its file tree.
	out, err := exec.Command(bin, "-image-env").Output()
	if err != nil || string(out) != "PATH="+carrierimage.PATH+"\n" {
		t.Fatalf("-image-env: %q, %v", out, err)
	}
	root := t.TempDir()
	if out, err := exec.Command(bin, "-image-layout", root).CombinedOutput(); err != nil {
		t.Fatalf("-image-layout: %v %s", err, out)
	}
	for _, cmd := range []string{"uvicorn", "sh", "/app/server"} {
		file, ok := carrierimage.Resolve(cmd, carrierimage.PATH, "")
		if !ok {
			t.Fatalf("%s does not resolve in the image", cmd)
		}
		// The runtime follows the link inside the image's root.
		target, err := os.Readlink(filepath.Join(root, file))
		if err != nil || target != carrierimage.Binary {
			t.Fatalf("%s in the layout: %q, %v", file, target, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, carrierimage.Binary)); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("the binary in the layout: %v, %v", fi, err)
	}

	lock := t.TempDir()
	admin := freeAddr(t)
	env := append(os.Environ(),
		"GEFYRA_CARRIER_LOCK="+lock,
		"GEFYRA_XDS_SERVER="+freeAddr(t), // nobody there: carrier waits for it
		"GEFYRA_NODE_ID=oauth2-demo/oauth2-demo-abc",
		"GEFYRA_TOKEN_FILE=",
		"GEFYRA_ADMIN_ADDR="+admin,
		"GEFYRA_LOG_FORMAT=text",
	)
	proxy := &exec.Cmd{Path: bin, Args: []string{"uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8155"}, Env: env}
	var logs strings.Builder
	proxy.Stderr = &logs
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- proxy.Wait() }()
	defer func() {
		proxy.Process.Kill()
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) == "ok\n" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin endpoint never answered: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// No configuration yet: not ready.
	if resp, err := http.Get("http://" + admin + "/readyz"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("readyz before any configuration: %v %v", resp, err)
	}

	tests := []struct {
		name string
		args []string
	}{
		{name: "cat probe", args: []string{"cat", "/tmp/healthy"}},
		{name: "grpc_health_probe", args: []string{"/bin/grpc_health_probe", "-addr=:9000"}},
		{name: "shell", args: []string{"sh", "-c", "test -f /tmp/healthy || exit 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probe := &exec.Cmd{Path: bin, Args: tt.args, Env: env}
			start := time.Now()
			out, err := probe.CombinedOutput()
			if err != nil || len(out) != 0 {
				t.Fatalf("exec probe: %v %q", err, out)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("exec probe took %v", d)
			}
		})
	}

	if err := proxy.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit after SIGTERM\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "arguments are ignored") {
		t.Fatalf("logs do not say the original arguments were ignored:\n%s", logs.String())
	}
}

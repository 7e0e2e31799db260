package refs

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, addr string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status + " " + string(b)
}

// TestServers starts the backend and both proxies from the written
// configurations and sends a request through each listener.
func TestServers(t *testing.T) {
	for _, bin := range []string{"nginx", "haproxy"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (the harness installs it)", bin)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	addr := map[string]string{}
	for _, k := range []string{"backend", "nh", "nt", "hh", "ht"} {
		a, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr[k] = a
	}
	b, err := Backend(ctx, dir, addr["backend"], 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	n, err := NginxProxy(ctx, dir, addr["nh"], addr["nt"], addr["backend"], 1)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	h, err := Haproxy(ctx, dir, addr["hh"], addr["ht"], addr["backend"], 1)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	for _, k := range []string{"backend", "nh", "nt", "hh", "ht"} {
		if got := get(t, addr[k]); got != "200 OK ok" {
			t.Errorf("%s: got %q", k, got)
		}
	}
	h.Stop()
	if _, err := (&http.Client{Timeout: time.Second}).Get("http://" + addr["hh"] + "/"); err == nil {
		t.Error("haproxy still answers after Stop")
	}
}

func TestStartFails(t *testing.T) {
	tests := []struct {
		name, want string
		argv       []string
	}{
		{name: "no such binary", argv: []string{"/nonexistent/server"}, want: "no such file"},
		{name: "exits at once", argv: []string{"sh", "-c", "echo broken config; exit 1"}, want: "broken config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, err := FreePort()
			if err != nil {
				t.Fatal(err)
			}
			_, err = Start(context.Background(), "x", addr, nil, tc.argv...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

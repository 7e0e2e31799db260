package admin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestServer(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "gefyra_test_things_total", Help: "things"})
	reg.MustRegister(c)
	c.Add(3)
	s := &Server{Addr: "127.0.0.1:0", Registry: reg}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.ListenAddr() == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	base := "http://" + s.ListenAddr()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "gefyra_test_things_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics = %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready = %d", code)
	}
	s.SetReady(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready = %d", code)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope = %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestProfiling: the profiling endpoints are there only when
// GEFYRA_PPROF=1 asks for them, and a CPU profile is a real pprof file.
func TestProfiling(t *testing.T) {
	tests := []struct {
		name string
		env  string
		want int
	}{
		{name: "off by default", env: "", want: http.StatusNotFound},
		{name: "off for another value", env: "yes", want: http.StatusNotFound},
		{name: "on", env: "1", want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(ProfilingEnv, tt.env)
			s := &Server{Registry: NewRegistry()}
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/debug/pprof/profile?seconds=1")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("GET /debug/pprof/profile: %s, want %d", resp.Status, tt.want)
			}
			if tt.want == http.StatusOK {
				// A CPU profile is gzip-compressed protobuf.
				if len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
					t.Fatalf("the profile is not gzip data: %q", body[:min(len(body), 32)])
				}
			}
			// The other endpoints stay as they were.
			resp, err = http.Get(srv.URL + "/healthz")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("/healthz: %v %v", resp, err)
			}
			resp.Body.Close()
		})
	}
}

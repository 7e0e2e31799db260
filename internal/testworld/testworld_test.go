package testworld

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseEnv(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr bool
	}{
		{name: "lines", in: "A=1\nB=x=y\n", want: map[string]string{"A": "1", "B": "x=y"}},
		{name: "comments and blanks", in: "# c\n\n  A=1  \n", want: map[string]string{"A": "1"}},
		{name: "empty value", in: "A=\n", want: map[string]string{"A": ""}},
		{name: "no equals", in: "A\n", wantErr: true},
		{name: "no key", in: "=1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseEnv("world.env", []byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseEnv(%q) error = %v, want error %t", tt.in, err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("parseEnv(%q) = %v, want %v", tt.in, got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("parseEnv(%q)[%s] = %q, want %q", tt.in, k, got[k], v)
				}
			}
		})
	}
}

func FuzzParseEnv(f *testing.F) {
	for _, s := range []string{"A=1\n", "# x\nB=2=3", "", "=", "\x00=\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		env, err := parseEnv("fuzz", []byte(s))
		if err != nil {
			return
		}
		for k := range env {
			if k == "" || strings.ContainsAny(k, "=\n") {
				t.Fatalf("parseEnv(%q) gave key %q", s, k)
			}
		}
	})
}

func TestOpenWithoutWorld(t *testing.T) {
	tests := []struct {
		name  string
		setup func(dir string) string // returns the kubeconfig path
		want  string
	}{
		{name: "no kubeconfig", setup: func(dir string) string { return filepath.Join(dir, "kubeconfig") }, want: "no kubeconfig"},
		{name: "no world.env", setup: func(dir string) string {
			p := filepath.Join(dir, "kubeconfig")
			os.WriteFile(p, []byte("apiVersion: v1\nkind: Config\n"), 0o600)
			return p
		}, want: "world.env"},
		{name: "api server gone", setup: func(dir string) string {
			// A port that was just free: nothing answers there.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			p := filepath.Join(dir, "kubeconfig")
			os.WriteFile(p, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: w\n  cluster:\n    server: https://"+addr+"\n"+
				"    insecure-skip-tls-verify: true\ncontexts:\n- name: w\n  context:\n    cluster: w\ncurrent-context: w\n"), 0o600)
			os.WriteFile(filepath.Join(dir, "world.env"), []byte("GEFYRA_WORLD_POD_CIDR=10.244.0.0/24\nGEFYRA_WORLD_SERVICE_CIDR=10.96.0.0/16\nGEFYRA_WORLD_KUBECTL=/bin/true\n"), 0o600)
			return p
		}, want: "does not answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("GEFYRA_KUBECONFIG", tt.setup(t.TempDir()))
			_, err := Open(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open() error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestReachable(t *testing.T) {
	_, pods, _ := net.ParseCIDR("10.244.0.0/24")
	_, svcs, _ := net.ParseCIDR("10.96.0.0/16")
	w := &World{NodeIP: "10.250.0.2", PodCIDR: pods, ServiceCIDR: svcs}
	tests := []struct {
		name string
		ip   string
		want bool
	}{
		{name: "service", ip: "10.96.3.4", want: true},
		{name: "pod", ip: "10.244.0.17", want: true},
		{name: "node", ip: "10.250.0.2", want: true},
		{name: "loopback", ip: "127.0.0.1", want: true},
		{name: "host end of the link", ip: "10.250.0.1", want: false},
		{name: "elsewhere", ip: "192.0.2.1", want: false},
		{name: "next to the pods", ip: "10.244.1.1", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := w.Reachable(net.ParseIP(tt.ip)); got != tt.want {
				t.Errorf("Reachable(%s) = %t, want %t", tt.ip, got, tt.want)
			}
		})
	}
	if _, err := w.Dialer()(context.Background(), "tcp", "192.0.2.1:80"); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("dialing outside the world: err = %v, want a refusal", err)
	}
}

func TestPoll(t *testing.T) {
	tests := []struct {
		name    string
		cond    Condition
		timeout time.Duration
		wantErr string
	}{
		{name: "done at once", cond: func(context.Context) (bool, string, error) { return true, "", nil }, timeout: time.Second},
		{name: "failure ends the wait", cond: func(context.Context) (bool, string, error) { return false, "x", errors.New("boom") }, timeout: time.Minute, wantErr: "boom"},
		{name: "deadline", cond: func(context.Context) (bool, string, error) { return false, "still pending", nil }, timeout: 300 * time.Millisecond, wantErr: "still pending"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			var seen []string
			err := poll(ctx, tt.cond, func(s string) { seen = append(seen, s) })
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("poll: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("poll error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// failer is a T that can tell whether it failed.
type failer struct {
	T
	failed bool
}

func (f failer) Failed() bool { return f.failed }

func TestFailed(t *testing.T) {
	tests := []struct {
		name string
		t    T
		want bool
	}{
		{name: "a passing test", t: t, want: false},
		{name: "a failed T", t: failer{failed: true}, want: true},
		{name: "a T that did not fail", t: failer{}, want: false},
		{name: "a T that cannot tell", t: struct{ T }{}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Failed(tt.t); got != tt.want {
				t.Errorf("Failed() = %t, want %t", got, tt.want)
			}
		})
	}
}

func TestAnswers(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(int(status.Load())) }))
	cond := Answers(srv.Client(), srv.URL+"/healthz")
	if done, st, err := cond(context.Background()); done || err != nil || st != "503 Service Unavailable" {
		t.Fatalf("503: done %v, status %q, err %v", done, st, err)
	}
	status.Store(http.StatusOK)
	if done, _, err := cond(context.Background()); !done || err != nil {
		t.Fatalf("200: done %v, err %v", done, err)
	}
	srv.Close()
	if done, st, err := cond(context.Background()); done || err != nil || !strings.Contains(st, "refused") {
		t.Fatalf("closed server: done %v, status %q, err %v", done, st, err)
	}
	if _, _, err := Answers(http.DefaultClient, "http://bad host/")(context.Background()); err == nil {
		t.Fatal("a malformed URL is waited out instead of ending the wait")
	}
}

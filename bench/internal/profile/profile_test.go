package profile

import (
	"context"
	"crypto/sha256"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/internal/admin"
)

func TestTrimTop(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "header dropped", in: "File: xds.test\nType: cpu\nTime: now\nShowing nodes accounting for 1s, 100% of 1s total\n      flat  flat%\n", want: "Showing nodes accounting for 1s, 100% of 1s total\n      flat  flat%"},
		{name: "dropped nodes line first", in: "Type: inuse_space\nDropped 3 nodes (cum <= 1MB)\nShowing nodes accounting for 2MB\n", want: "Dropped 3 nodes (cum <= 1MB)\nShowing nodes accounting for 2MB"},
		{name: "no table", in: "something else\n", want: "something else"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TrimTop(tt.in); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestViews reads a real CPU profile of this test's own work with
// `go tool pprof`: both views, titled, with pprof's table.
func TestViews(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	file := filepath.Join(t.TempDir(), "spin.cpu.pprof")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(nil)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		sum = sha256.Sum256(sum[:])
	}
	pprof.StopCPUProfile()
	f.Close()
	got, err := Views(context.Background(), ".", file, "CPU of the test")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Title != "CPU of the test, flat" || got[1].Title != "CPU of the test, cumulative" {
		t.Fatalf("views %+v", got)
	}
	for _, v := range got {
		if v.File != "spin.cpu.pprof" || !strings.HasPrefix(v.Top, "Showing nodes") || !strings.Contains(v.Top, "sha256") {
			t.Fatalf("view %q of %s:\n%s", v.Title, v.File, v.Top)
		}
	}
	if _, err := Views(context.Background(), ".", filepath.Join(t.TempDir(), "missing.pprof"), "x"); err == nil {
		t.Fatal("a missing profile gave no error")
	}
}

// TestFetch takes a CPU profile from a component's real admin endpoints,
// and says what to do when they serve none.
func TestFetch(t *testing.T) {
	tests := []struct {
		name, env, wantErr string
	}{
		{name: "profiling on", env: "1"},
		{name: "profiling off", env: "", wantErr: "does the process run with GEFYRA_PPROF=1?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(admin.ProfilingEnv, tt.env)
			srv := httptest.NewServer((&admin.Server{Registry: admin.NewRegistry()}).Handler())
			defer srv.Close()
			file := filepath.Join(t.TempDir(), "c.cpu.pprof")
			err := Fetch(context.Background(), nil, srv.URL, 1, file)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Fetch = %v, want an error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(file)
			if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
				t.Fatalf("the profile is not gzip data (%d bytes, %v)", len(b), err)
			}
		})
	}
}

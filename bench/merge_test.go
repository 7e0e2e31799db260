package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/bench/internal/report"
)

func TestMerge(t *testing.T) {
	old := &report.Data{Started: time.Date(2026, 11, 28, 23, 38, 0, 0, time.UTC), Command: "make bench", Runs: 5, Duration: 5 * time.Second,
		Machine:  map[string]string{"load average at start (1/5/15 min)": "1 2 3"},
		Versions: map[string]string{"nginx": "1.22", "go": "old"},
		HTTP:     []report.Series{{Target: "carrier http", Kind: "http", Conns: 1}},
		Tunnels:  []report.Tunnel{{Name: "plain TCP"}},
		Backend:  "nginx",
	}
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "data.json")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		skip       []string
		wantHTTP   bool
		wantTunnel bool
		notDone    int
	}{
		{name: "skipped parts taken", skip: []string{"http", "h2", "footprint", "tunnel", "bridge"}, wantHTTP: true, wantTunnel: true, notDone: 1},
		{name: "measured parts kept", skip: []string{"bridge"}, notDone: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := settings{merge: file, skip: map[string]bool{}}
			d := &report.Data{Versions: map[string]string{"go": "new"}, ControlPlane: &report.ControlPlane{}}
			for _, k := range tt.skip {
				st.skip[k] = true
			}
			if st.skip["tunnel"] {
				d.NotDone = append(d.NotDone, "tunnel throughput: skipped (BENCH_SKIP)")
			}
			d.NotDone = append(d.NotDone, "the full bridge path: skipped (BENCH_SKIP)") // the old run has none: stays
			if err := merge(d, st); err != nil {
				t.Fatal(err)
			}
			if (len(d.HTTP) > 0) != tt.wantHTTP || (len(d.Tunnels) > 0) != tt.wantTunnel {
				t.Fatalf("HTTP %v, tunnels %v", d.HTTP, d.Tunnels)
			}
			if len(d.NotDone) != tt.notDone {
				t.Fatalf("not done %q, want %d entries", d.NotDone, tt.notDone)
			}
			if d.Versions["go"] != "new" || (tt.wantHTTP && d.Versions["nginx"] != "1.22") {
				t.Fatalf("versions %v", d.Versions)
			}
			if tt.wantHTTP && (len(d.Merged) != 1 || !strings.Contains(d.Merged[0], "2026-11-28 23:38") || !strings.Contains(d.Merged[0], "HTTP/1.1 and TCP proxying")) {
				t.Fatalf("merged note %q", d.Merged)
			}
			if !tt.wantHTTP && len(d.Merged) != 0 {
				t.Fatalf("merged note %q for nothing taken", d.Merged)
			}
		})
	}
}

// TestMergeChain merges from a run that itself merged: a part taken from
// that run's own earlier run keeps its line, and a part measured now is
// in no line.
func TestMergeChain(t *testing.T) {
	older := "HTTP/2, tunnel throughput, control plane: from the earlier run of 2026-11-28 23:38 UTC (`make bench`, 5 runs × 5s per point); the load average then was 1 2 3."
	old := &report.Data{Started: time.Date(2026, 11, 29, 0, 37, 0, 0, time.UTC), Command: "BENCH_SKIP=h2,tunnel make bench", Runs: 1, Duration: 2 * time.Second, Quick: true,
		Machine:      map[string]string{"load average at start (1/5/15 min)": "4 5 6"},
		HTTP:         []report.Series{{Target: "carrier http", Kind: "http", Conns: 1}},
		H2:           &report.H2{},
		Tunnels:      []report.Tunnel{{Name: "plain TCP"}},
		ControlPlane: &report.ControlPlane{},
		Merged:       []string{older},
	}
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "data.json")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// This run measures HTTP and the control plane, and skips HTTP/2 and
	// the tunnel.
	d := &report.Data{Versions: map[string]string{}, HTTP: []report.Series{{Target: "nginx", Kind: "http", Conns: 1}}, ControlPlane: &report.ControlPlane{}}
	st := settings{merge: file, skip: map[string]bool{"h2": true, "tunnel": true}}
	if err := merge(d, st); err != nil {
		t.Fatal(err)
	}
	want := []string{"HTTP/2, tunnel throughput: from the earlier run of 2026-11-28 23:38 UTC (`make bench`, 5 runs × 5s per point); the load average then was 1 2 3."}
	if len(d.Merged) != len(want) || d.Merged[0] != want[0] {
		t.Fatalf("merged notes\n%q\nwant\n%q", d.Merged, want)
	}
}

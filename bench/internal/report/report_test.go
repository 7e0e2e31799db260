package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{name: "empty", want: 0},
		{name: "odd", in: []float64{5, 1, 3}, want: 3},
		{name: "even", in: []float64{4, 1, 3, 2}, want: 2.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Median(tc.in); got != tc.want {
				t.Fatalf("got %v", got)
			}
		})
	}
}

func sample(rps float64, reqs int64, cpu time.Duration) Sample {
	return Sample{RPS: rps, Requests: reqs, ProxyCPU: cpu, Percentiles: map[int]time.Duration{50: 100 * time.Microsecond, 99: time.Millisecond}}
}

func TestWrite(t *testing.T) {
	d := &Data{Runs: 1, Duration: time.Second, Command: "make bench", Machine: map[string]string{"cores (nproc)": "2"}, Versions: map[string]string{}}
	d.HTTP = []Series{
		{Target: "nginx proxy_pass", Kind: "http", Ref: "nginx proxy_pass", Conns: 1, Samples: []Sample{sample(1000, 1000, time.Second)}},
		{Target: "carrier http", Kind: "http", Ref: "nginx proxy_pass", Conns: 1, Samples: []Sample{sample(2000, 2000, 500*time.Millisecond)}},
		{Target: "nginx stream", Kind: "tcp", Ref: "nginx stream", Conns: 1, Samples: []Sample{sample(1000, 1000, time.Second)}},
		{Target: "carrier tcp", Kind: "tcp", Ref: "nginx stream", Conns: 1, Samples: []Sample{sample(500, 500, time.Second)},
			Profiles: []Profile{{Title: "CPU of carrier, carrier tcp", File: "carrier-tcp-c1.cpu.pprof", Top: "Showing nodes accounting for 3s"}}},
	}
	d.Tunnels = []Tunnel{{Name: "wgnet MTU 1420", Tunnel: true, MTU: 1420, VethMTU: 1500, MBps: []float64{150}, CPUPerGB: []float64{10},
		Profiles: []Profile{{Title: "CPU of the sending peer", File: "tunnel.cpu.pprof", Top: "Showing nodes accounting for 4s"}}}}
	var b strings.Builder
	if err := Write(&b, d); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| carrier http ≥ 1.3× nginx proxy_pass per proxy-CPU-second, 1 conn | 4000 vs 1000 req/CPU-s (4.00×) | yes |",
		"| carrier tcp ≥ 1.0× nginx stream per proxy-CPU-second, 1 conn | 500 vs 1000 req/CPU-s (0.50×) | **no** (50 % short) |",
		"| carrier http | 1 | 2000 | 2.00× | 100 | 1000 | 0.50 | 4000 | 4.00× | 0 |",
		"| carrier tcp | 1 | 500 | 0.50× | 100 | 1000 | 1.00 | 500 | 0.50× | 0 |\n\n<details><summary>CPU of carrier, carrier tcp (<code>go tool pprof</code>, carrier-tcp-c1.cpu.pprof)</summary>\n\n```\nShowing nodes accounting for 3s\n```",
		"| 150 | – | 10.00 |\n\n<details><summary>CPU of the sending peer (<code>go tool pprof</code>, tunnel.cpu.pprof)</summary>",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	file := filepath.Join(t.TempDir(), "c1.png")
	if err := LatencyChart(file, d, 1); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(file); err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
		t.Fatalf("chart: %v", err)
	}
	if err := LatencyChart(file, d, 32); err == nil {
		t.Fatal("chart without data: want an error")
	}
}

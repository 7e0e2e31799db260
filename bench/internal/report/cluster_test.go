package report

import (
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/bench/internal/measure"
)

func latencySample(rps float64, p50, p99 time.Duration) Sample {
	return Sample{RPS: rps, Requests: int64(rps), Percentiles: map[int]time.Duration{50: p50, 99: p99}}
}

func TestWriteClusterSections(t *testing.T) {
	tests := []struct {
		name        string
		bridgeP50   time.Duration
		lastMs      float64
		rss, peak   float64
		want, avoid []string
	}{
		{
			name: "every target met", bridgeP50: 500 * time.Microsecond, lastMs: 700, rss: 150, peak: 190,
			want: []string{
				"| the full bridge path adds ≤ 400 µs p50 at 1 connection | +400 µs (500 vs 100 µs) | yes |",
				"| a rule change reaches 1,000 carrier streams in ≤ 1 s | 700 ms (median; slowest 900 ms) | yes |",
				"| control plane ≤ 200 MB at 1,000 bridges | RSS 150 MB at rest (heap in use 100 MB), peak 190 MB during rule changes | yes |",
				"| bridge path | 1 | 2000 | 0.20× | 500 | 3000 | +400 | +2000 | 0 |",
				"| the workload's first (the operator swaps carrier into the Pod; kubelet restarts the container) | 5.2s | 1 |",
				"| 200 ms (median; 100–300) | 3 |",
				"| one-workload | 1000 | 1000 | 400 ms | 700 ms | 900 ms | 600 ms |",
				"| bridges=1000 | 500 | 80 | 1000000 |",
				"```\nShowing nodes accounting for 1s\n```",
				"| process | µs per request, 1 conn | share | µs per request, 32 conn | share |",
				"| carrier | 100.0 | 50 % | 10.0 | 25 % |",
				"| stowaway | 100.0 | 50 % | 30.0 | 75 % |",
				"| all of them | 200.0 | | 40.0 | |",
				"<details><summary>CPU of carrier on the bridge path (<code>go tool pprof</code>, c.cpu.pprof)</summary>\n\n```\nShowing nodes accounting for 2s\n```",
			},
		},
		{
			name: "every target missed", bridgeP50: 900 * time.Microsecond, lastMs: 1500, rss: 250, peak: 400,
			want: []string{
				"+800 µs (900 vs 100 µs) | **no** (400 µs over) |",
				"| 1500 ms (median; slowest 900 ms) | **no** (500 ms over) |",
				"peak 400 MB during rule changes | **no** (50 MB over) |",
			},
		},
		{
			name: "met at rest, not at the peak", bridgeP50: 200 * time.Microsecond, lastMs: 10, rss: 180, peak: 300,
			want: []string{"| at rest yes; **no** at its peak (100 MB over) |"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Data{Runs: 1, Duration: time.Second, Machine: map[string]string{}, Versions: map[string]string{}}
			d.BridgePath = &BridgePath{
				Series: []Series{
					{Target: "direct", Conns: 1, Samples: []Sample{latencySample(10000, 100*time.Microsecond, time.Millisecond)}},
					{Target: "bridge path", Conns: 1, Samples: []Sample{latencySample(2000, tt.bridgeP50, 3*time.Millisecond)}},
				},
				FirstBridge: 5200 * time.Millisecond,
				NextBridges: []time.Duration{300 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond},
				Backend:     "127.0.0.1:1234",
				CPU: []ProcessCPU{
					{Process: "carrier", Conns: 1, Requests: 1000, CPU: 100 * time.Millisecond},
					{Process: "stowaway", Conns: 1, Requests: 1000, CPU: 100 * time.Millisecond},
					{Process: "carrier", Conns: 32, Requests: 10000, CPU: 100 * time.Millisecond},
					{Process: "stowaway", Conns: 32, Requests: 10000, CPU: 300 * time.Millisecond},
				},
				Profiles: []Profile{{Title: "CPU of carrier on the bridge path", File: "c.cpu.pprof", Top: "Showing nodes accounting for 2s"}},
			}
			d.ControlPlane = &ControlPlane{
				Fanout: []measure.GoBench{
					{Name: "BenchmarkXDSRuleChange/one-workload", N: 3, Metrics: map[string]float64{"streams-affected": 1000, "streams-updated": 1000,
						"ms-to-median-stream": 400, "ms-to-last-stream": tt.lastMs, "ms-to-last-stream-max": 900, "ms-publish": 600}},
					{Name: "BenchmarkXDSRuleChange/spread", N: 3, Metrics: map[string]float64{"MB-rss": tt.rss, "MB-heap": 100, "MB-rss-peak": tt.peak}},
				},
				Translate: []measure.GoBench{{Name: "BenchmarkTranslateFleet/bridges=1000", N: 2, Metrics: map[string]float64{"ns/op": 500e6, "B/op": 80 << 20, "allocs/op": 1e6}}},
				Profiles:  []Profile{{Title: "CPU", File: "x.cpu.pprof", Top: "Showing nodes accounting for 1s"}},
			}
			var b strings.Builder
			if err := Write(&b, d); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

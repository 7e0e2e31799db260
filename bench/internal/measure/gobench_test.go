package measure

import (
	"strings"
	"testing"
)

const goBenchOut = `goos: linux
goarch: amd64
pkg: gefyra.dev/gefyra/controlplane/internal/xds
cpu: Intel(R) Xeon(R) Processor
BenchmarkXDSRuleChange/carriers=1000,bridges=10,one-workload-2         	       3	 699769385 ns/op	       111.5 MB-heap	      1000 streams-affected	68524573 B/op	  888989 allocs/op
BenchmarkTranslate-2   	       3	   2357691 ns/op
BenchmarkNoProcs 	      10	       5.5 ns/op
    bench_test.go:12: BenchmarkXDSRuleChange logged this
PASS
ok  	gefyra.dev/gefyra/controlplane/internal/xds	27.407s
`

func TestParseGoBench(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []GoBench
		wantErr bool
	}{
		{name: "results among other lines", in: goBenchOut, want: []GoBench{
			{Name: "BenchmarkXDSRuleChange/carriers=1000,bridges=10,one-workload", Procs: 2, N: 3,
				Metrics: map[string]float64{"ns/op": 699769385, "MB-heap": 111.5, "streams-affected": 1000, "B/op": 68524573, "allocs/op": 888989}},
			{Name: "BenchmarkTranslate", Procs: 2, N: 3, Metrics: map[string]float64{"ns/op": 2357691}},
			{Name: "BenchmarkNoProcs", Procs: 1, N: 10, Metrics: map[string]float64{"ns/op": 5.5}},
		}},
		{name: "nothing", in: "PASS\n"},
		{name: "unpaired", in: "BenchmarkX-2 3 100 ns/op 7\n", wantErr: true},
		{name: "bad value", in: "BenchmarkX-2 3 fast ns/op\n", wantErr: true},
		{name: "not a number of iterations", in: "BenchmarkX is slow\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseGoBench(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %t", err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d results, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Name != w.Name || g.Procs != w.Procs || g.N != w.N || len(g.Metrics) != len(w.Metrics) {
					t.Fatalf("result %d: %+v, want %+v", i, g, w)
				}
				for k, v := range w.Metrics {
					if g.Metrics[k] != v {
						t.Errorf("result %d: %s = %v, want %v", i, k, g.Metrics[k], v)
					}
				}
			}
			if len(tt.want) > 0 && FindGoBench(got, tt.want[0].Name) == nil {
				t.Errorf("FindGoBench(%q) found nothing", tt.want[0].Name)
			}
		})
	}
}

func FuzzParseGoBench(f *testing.F) {
	f.Add(goBenchOut)
	f.Add("BenchmarkX-2 3 1e9 ns/op NaN x\n")
	f.Add("Benchmark-1 1\n")
	f.Fuzz(func(t *testing.T, s string) {
		res, err := ParseGoBench(s)
		if err != nil {
			return
		}
		for _, r := range res {
			if r.N <= 0 || r.Procs <= 0 || !strings.HasPrefix(r.Name, "Benchmark") {
				t.Fatalf("bad result %+v from %q", r, s)
			}
		}
	})
}

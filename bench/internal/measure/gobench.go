package measure

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// GoBench is one result line of `go test -bench`.
type GoBench struct {
	// Name is the benchmark's full name without the -GOMAXPROCS suffix,
	// e.g. "BenchmarkTranslateFleet/bridges=1000".
	Name string
	// Procs is the GOMAXPROCS suffix (1 when there is none).
	Procs int
	// N is the number of iterations.
	N int64
	// Metrics maps each unit ("ns/op", "B/op", "MB-heap", ...) to its value.
	Metrics map[string]float64
}

// ParseGoBench reads the result lines of `go test -bench` output, in the
// order they appear; other lines (goos:, PASS, logs) are skipped. A line
// that starts like a result ("Benchmark..." and an iteration count) but
// whose value/unit pairs are malformed is an error.
func ParseGoBench(out string) ([]GoBench, error) {
	var res []GoBench
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || n <= 0 {
			continue // a benchmark's log line, not a result
		}
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("go bench: %q: values and units do not pair up", line)
		}
		b := GoBench{Name: f[0], Procs: 1, N: n, Metrics: map[string]float64{}}
		if i := strings.LastIndexByte(f[0], '-'); i > 0 {
			if p, err := strconv.Atoi(f[0][i+1:]); err == nil && p > 0 {
				b.Name, b.Procs = f[0][:i], p
			}
		}
		for i := 2; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("go bench: %q: value %q", line, f[i])
			}
			b.Metrics[f[i+1]] = v
		}
		res = append(res, b)
	}
	return res, nil
}

// FindGoBench returns the result named name, or nil.
func FindGoBench(res []GoBench, name string) *GoBench {
	for i := range res {
		if res[i].Name == name {
			return &res[i]
		}
	}
	return nil
}

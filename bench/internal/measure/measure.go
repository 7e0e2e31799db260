// Package measure parses what the benchmark harness reads: wrk's and
// h2load's reports and the kernel's per-process accounting in
// /proc/PID/stat and /proc/PID/status, and sums them over a process tree.
package measure

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Wrk is one wrk run's result.
type Wrk struct {
	// Requests is the number of completed requests.
	Requests int64
	// RPS is wrk's Requests/sec line.
	RPS float64
	// Percentiles maps 50, 75, 90, 99 to latency (needs wrk --latency).
	Percentiles map[int]time.Duration
	// Errors counts socket errors (connect, read, write, timeout) and
	// non-2xx/3xx responses.
	Errors int64
}

// ParseWrk reads wrk's text report. Requests/sec is required; the latency
// distribution is read if present.
func ParseWrk(out string) (Wrk, error) {
	w := Wrk{Percentiles: map[int]time.Duration{}}
	haveRPS := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "Requests/sec:" && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil || v < 0 {
				return Wrk{}, fmt.Errorf("wrk: bad Requests/sec %q", f[1])
			}
			w.RPS, haveRPS = v, true
		case len(f) == 2 && strings.HasSuffix(f[0], "%") && !strings.Contains(line, "Stdev"):
			p, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
			if err != nil || p <= 0 || p > 100 || p != float64(int(p)) {
				continue
			}
			d, err := ParseWrkDuration(f[1])
			if err != nil {
				return Wrk{}, fmt.Errorf("wrk: percentile %s: %w", f[0], err)
			}
			w.Percentiles[int(p)] = d
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil || n < 0 {
				return Wrk{}, fmt.Errorf("wrk: bad request count %q", f[0])
			}
			w.Requests = n
		case f[0] == "Socket" && len(f) > 2 && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil || n < 0 {
					return Wrk{}, fmt.Errorf("wrk: bad socket error count in %q", line)
				}
				w.Errors += n
			}
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
			if err != nil || n < 0 {
				return Wrk{}, fmt.Errorf("wrk: bad non-2xx count in %q", line)
			}
			w.Errors += n
		}
	}
	if !haveRPS {
		return Wrk{}, errors.New("wrk: no Requests/sec line in the output")
	}
	return w, nil
}

// ParseWrkDuration reads wrk's latency notation: a number with the unit
// us, ms, s, m or h.
func ParseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		d      time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"m", time.Minute}, {"h", time.Hour}, {"s", time.Second}}
	for _, u := range units {
		if !strings.HasSuffix(s, u.suffix) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(s, u.suffix), 64)
		if err != nil || v < 0 || v > 1e6 {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(v * float64(u.d)), nil
	}
	return 0, fmt.Errorf("bad duration %q: no unit", s)
}

// H2load is one h2load run's result.
type H2load struct {
	RPS      float64
	Requests int64
	Failed   int64
}

// ParseH2load reads h2load's summary ("finished in 2.00s, 1234.50 req/s,
// ..." and "requests: N total, N started, N done, N succeeded, N failed").
func ParseH2load(out string) (H2load, error) {
	var h H2load
	have := false
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "finished in"):
			for _, part := range strings.Split(line, ",") {
				part = strings.TrimSpace(part)
				if v, ok := strings.CutSuffix(part, " req/s"); ok {
					r, err := strconv.ParseFloat(v, 64)
					if err != nil || r < 0 {
						return H2load{}, fmt.Errorf("h2load: bad req/s %q", v)
					}
					h.RPS, have = r, true
				}
			}
		case strings.HasPrefix(line, "requests:"):
			for _, part := range strings.Split(strings.TrimPrefix(line, "requests:"), ",") {
				f := strings.Fields(part)
				if len(f) != 2 {
					continue
				}
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil || n < 0 {
					return H2load{}, fmt.Errorf("h2load: bad count %q", part)
				}
				switch f[1] {
				case "succeeded":
					h.Requests = n
				case "failed", "errored":
					h.Failed += n
				}
			}
		}
	}
	if !have {
		return H2load{}, errors.New("h2load: no req/s in the output")
	}
	return h, nil
}

// ParseStatCPU returns utime+stime in clock ticks from the text of
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func ParseStatCPU(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no ')' after the command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command name, want at least 13", len(f))
	}
	u, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat: utime %q: %w", f[11], err)
	}
	s, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat: stime %q: %w", f[12], err)
	}
	if u+s < u {
		return 0, errors.New("proc stat: utime+stime overflows")
	}
	return u + s, nil
}

// ParseVmRSS returns the VmRSS line of /proc/PID/status in bytes.
func ParseVmRSS(status string) (uint64, error) {
	for _, line := range strings.Split(status, "\n") {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("proc status: bad VmRSS line %q", line)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || n > 1<<44 {
			return 0, fmt.Errorf("proc status: bad VmRSS value %q", f[0])
		}
		return n * 1024, nil
	}
	return 0, errors.New("proc status: no VmRSS line")
}

// ClockTick is the kernel's USER_HZ, the unit of /proc/PID/stat times; it
// is 100 on every Linux architecture Go supports.
const ClockTick = 100

// Tree lists pid and all its descendants (read from
// /proc/PID/task/TID/children).
func Tree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// CPU returns the CPU time (user+system) used so far by pid and its live
// descendants.
func CPU(pid int) (time.Duration, error) {
	var ticks uint64
	for _, p := range Tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			if p == pid {
				return 0, err
			}
			continue // a child that just exited
		}
		t, err := ParseStatCPU(string(b))
		if err != nil {
			return 0, err
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / ClockTick, nil
}

// RSS returns the resident set of pid and its live descendants, in bytes.
func RSS(pid int) (uint64, error) {
	var sum uint64
	for _, p := range Tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			if p == pid {
				return 0, err
			}
			continue
		}
		n, err := ParseVmRSS(string(b))
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}

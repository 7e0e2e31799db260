package measure

import (
	"os"
	"testing"
	"time"
)

const wrkOut = `Running 2s test @ http://127.0.0.1:34567/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    45.10us   12.30us   1.20ms   95.00%
    Req/Sec    21.50k     1.10k   23.00k    70.00%
  Latency Distribution
     50%   42.00us
     75%   47.00us
     90%   55.00us
     99%    1.02ms
  43210 requests in 2.00s, 6.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  21605.00
Transfer/sec:      3.05MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		rps     float64
		reqs    int64
		errs    int64
		p50     time.Duration
		p99     time.Duration
		wantErr bool
	}{
		{name: "full report", in: wrkOut, rps: 21605, reqs: 43210, errs: 7, p50: 42 * time.Microsecond, p99: 1020 * time.Microsecond},
		{name: "no latency distribution", in: "  10 requests in 1.00s, 1KB read\nRequests/sec:     10.00\n", rps: 10, reqs: 10},
		{name: "seconds", in: "     50%    1.50s\n     99%    2.00m\nRequests/sec: 1.00\n", rps: 1, p50: 1500 * time.Millisecond, p99: 2 * time.Minute},
		{name: "empty", in: "", wantErr: true},
		{name: "connection refused", in: "unable to connect to 127.0.0.1:1 Connection refused\n", wantErr: true},
		{name: "bad rps", in: "Requests/sec:  abc\n", wantErr: true},
		{name: "negative rps", in: "Requests/sec:  -1\n", wantErr: true},
		{name: "bad percentile", in: "     50%   42.00xx\nRequests/sec: 1\n", wantErr: true},
		{name: "bad socket errors", in: "  Socket errors: connect x, read 0\nRequests/sec: 1\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := ParseWrk(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", w)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w.RPS != tc.rps || w.Requests != tc.reqs || w.Errors != tc.errs || w.Percentiles[50] != tc.p50 || w.Percentiles[99] != tc.p99 {
				t.Fatalf("got %+v", w)
			}
		})
	}
}

func TestParseH2load(t *testing.T) {
	out := `finished in 2.00s, 15000.50 req/s, 1.20MB/s
requests: 30001 total, 30001 started, 30001 done, 30000 succeeded, 1 failed, 1 errored, 0 timeout
`
	tests := []struct {
		name    string
		in      string
		rps     float64
		ok      int64
		failed  int64
		wantErr bool
	}{
		{name: "summary", in: out, rps: 15000.5, ok: 30000, failed: 2},
		{name: "empty", in: "", wantErr: true},
		{name: "bad rate", in: "finished in 2.00s, x req/s, 1MB/s\n", wantErr: true},
		{name: "bad count", in: "finished in 1s, 1 req/s\nrequests: -3 total\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseH2load(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.RPS != tc.rps || h.Requests != tc.ok || h.Failed != tc.failed {
				t.Fatalf("got %+v", h)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{name: "plain", in: "1234 (nginx) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 100 1000 200", want: 325},
		{name: "name with spaces and parens", in: "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0", want: 10},
		{name: "no paren", in: "1234 nginx S 1", wantErr: true},
		{name: "too short", in: "1 (x) S 1 2 3", wantErr: true},
		{name: "bad utime", in: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u 3 0 0", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatCPU(tc.in)
			if tc.wantErr != (err != nil) || got != tc.want {
				t.Fatalf("got %d, %v", got, err)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{name: "status", in: "Name:\tcarrier\nVmPeak:\t  9000 kB\nVmRSS:\t    8192 kB\nThreads:\t5\n", want: 8192 * 1024},
		{name: "missing", in: "Name:\tkthreadd\n", wantErr: true},
		{name: "bad unit", in: "VmRSS:\t1 MB\n", wantErr: true},
		{name: "bad value", in: "VmRSS:\tx kB\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseVmRSS(tc.in)
			if tc.wantErr != (err != nil) || got != tc.want {
				t.Fatalf("got %d, %v", got, err)
			}
		})
	}
}

// TestOwnProcess reads this test process's own accounting: the parsers
// must agree with the live kernel format.
func TestOwnProcess(t *testing.T) {
	start := time.Now()
	for time.Since(start) < 50*time.Millisecond {
	}
	cpu, err := CPU(os.Getpid())
	if err != nil || cpu <= 0 {
		t.Fatalf("CPU: %v, %v", cpu, err)
	}
	rss, err := RSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Fatalf("RSS: %d, %v", rss, err)
	}
}

func FuzzParseWrk(f *testing.F) {
	f.Add(wrkOut)
	f.Add("Requests/sec: 1\n 50% 1us\n")
	f.Add("  Socket errors: connect 1, read 2\n")
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWrk(s)
		if err == nil && (w.RPS < 0 || w.Errors < 0) {
			t.Fatalf("accepted negative values: %+v", w)
		}
		ParseH2load(s)
	})
}

func FuzzParseProc(f *testing.F) {
	f.Add("1234 (nginx) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0")
	f.Add("VmRSS:\t 8192 kB\n")
	f.Add("1 ()) ) S")
	f.Fuzz(func(t *testing.T, s string) {
		ParseStatCPU(s)
		if n, err := ParseVmRSS(s); err == nil && n%1024 != 0 {
			t.Fatalf("RSS %d not whole kB", n)
		}
	})
}

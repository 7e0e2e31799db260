package bridgepath

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    time.Duration
		wantErr bool
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice
		{name: "busy is all but idle and iowait", line: "cpu  100 5 50 1000 7 3 2 1 0 0", want: 1610 * time.Millisecond},
		{name: "an old kernel without guest fields", line: "cpu 1 0 1 5 0 0 0 0", want: 20 * time.Millisecond},
		{name: "a per-CPU line", line: "cpu0 1 2 3 4 5 6 7 8 9 10", wantErr: true},
		{name: "too short", line: "cpu 1 2 3", wantErr: true},
		{name: "not a number", line: "cpu 1 2 x 4 5 6 7 8", wantErr: true},
		{name: "empty", line: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProcStat(tt.line)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseProcStat(%q) = %v, %v; want %v, error %t", tt.line, got, err, tt.want, tt.wantErr)
			}
		})
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Skip("no /proc/stat here")
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if d, err := ParseProcStat(line); err != nil || d <= 0 {
		t.Fatalf("this machine's /proc/stat: %v, %v", d, err)
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add("cpu  100 5 50 1000 7 3 2 1 0 0")
	f.Add("cpu 1 2 3")
	f.Add("cpu 18446744073709551615 1 1 1 1 1 1 1")
	f.Fuzz(func(t *testing.T, line string) {
		d, err := ParseProcStat(line)
		if err == nil && !strings.HasPrefix(line, "cpu") {
			t.Fatalf("%q accepted", line)
		}
		if err != nil && d != 0 {
			t.Fatalf("%q: %v with an error", line, d)
		}
	})
}

func TestPidsNamed(t *testing.T) {
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Skip("no /proc here")
	}
	if got := pidsNamed(strings.TrimSpace(string(comm))); !slices.Contains(got, os.Getpid()) {
		t.Fatalf("pidsNamed(%q) = %v, without this process %d", strings.TrimSpace(string(comm)), got, os.Getpid())
	}
	if got := pidsNamed("no-such-process-name"); len(got) != 0 {
		t.Fatalf("pidsNamed of an unknown name = %v", got)
	}
}

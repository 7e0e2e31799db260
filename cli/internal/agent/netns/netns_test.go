package netns

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOptionsRejected(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{name: "no agent", o: Options{Networks: nets}, want: "agent's name"},
		{name: "no networks", o: Options{Agent: "gefyra-agent"}, want: "no networks"},
		{name: "everything", o: Options{Agent: "gefyra-agent", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, want: "prefix length"},
		{name: "invalid", o: Options{Agent: "gefyra-agent", Networks: []netip.Prefix{{}}}, want: "prefix length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Run(context.Background(), tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestAgentNotFound(t *testing.T) {
	o := Options{Agent: "gefyra-agent", Networks: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}, StartTimeout: 300 * time.Millisecond,
		Lookup: func(context.Context, string) ([]netip.Addr, error) { return nil, nil }}
	start := time.Now()
	err := Run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "cannot find the agent gefyra-agent") {
		t.Fatalf("Run: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("Run did not give up")
	}
}

func TestOthers(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"1", "self", "42", "net", "4711"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	n, err := others(dir)
	if err != nil || n != 3 {
		t.Fatalf("others = %d, %v; want 3 (every numeric entry but this process)", n, err)
	}
	if _, err := others(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing proc accepted")
	}
}

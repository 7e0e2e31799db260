package command

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The hidden `gefyra agent netns` (the process of a local container's
// network namespace holder) refuses bad input as every command does.
func TestAgentNetnsBadInput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no agent", args: []string{"agent", "netns", "--network", "10.96.0.0/12"}, want: "--agent is required"},
		{name: "no network", args: []string{"agent", "netns", "--agent", "gefyra-agent"}, want: "--network is required"},
		{name: "bad network", args: []string{"agent", "netns", "--agent", "gefyra-agent", "--network", "10.96.0.0"}, want: `--network "10.96.0.0"`},
		{name: "stray argument", args: []string{"agent", "netns", "--agent", "a", "--network", "10.96.0.0/12", "x"}, want: "takes no arguments"},
		{name: "bad log level", args: []string{"agent", "netns", "--agent", "a", "--network", "10.96.0.0/12", "--log-level", "loud"}, want: "loud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tt.args, Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
			if code != ExitUsage {
				t.Errorf("exit code %d, want %d (stderr %q)", code, ExitUsage, stderr.String())
			}
			if out := stderr.String(); !strings.HasPrefix(out, "[ERROR] ") || !strings.Contains(out, tt.want) {
				t.Errorf("stderr = %q, want one [ERROR] line saying %q", out, tt.want)
			}
		})
	}
}

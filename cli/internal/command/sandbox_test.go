package command

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/demo/sandbox"
)

func TestSandboxCommandLines(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want any
	}{
		{name: "up", args: []string{"sandbox", "up"}, want: &sandboxUpOptions{}},
		{name: "up with the repository and json", args: []string{"sandbox", "up", "--root", "/src/gefyra", "-o", "json"},
			want: &sandboxUpOptions{root: "/src/gefyra", output: "json"}},
		{name: "down", args: []string{"sandbox", "down"}, want: &sandboxDownOptions{}},
		{name: "status as yaml", args: []string{"sandbox", "status", "-o", "yaml"}, want: &sandboxStatusOptions{output: "yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := parse(t, tt.args...)
			if !reflect.DeepEqual(r, tt.want) {
				t.Fatalf("parsed %#v, want %#v", r, tt.want)
			}
		})
	}
}

func TestSandboxUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no command", args: []string{"sandbox"}, want: "`gefyra sandbox` needs a command: up, down or status"},
		{name: "an unknown command", args: []string{"sandbox", "start"}, want: "`gefyra sandbox start`: no such command; want up, down or status"},
		{name: "an argument", args: []string{"sandbox", "up", "now"}, want: "gefyra sandbox up takes no arguments"},
		{name: "an output format", args: []string{"sandbox", "status", "-o", "xml"}, want: `--output "xml": want json or yaml`},
		{name: "an unknown flag", args: []string{"sandbox", "down", "--force"}, want: "unknown flag: --force"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tt.args, Env{Stdout: &stdout, Stderr: &stderr})
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if code != ExitUsage || len(lines) != 1 || !strings.HasPrefix(lines[0], "[ERROR] ") || !strings.Contains(lines[0], tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d and one [ERROR] line with %q", code, stderr.String(), ExitUsage, tt.want)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout %q", stdout.String())
			}
		})
	}
}

func TestSandboxStatusText(t *testing.T) {
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	tests := []struct {
		name string
		st   sandbox.Status
		want []string
	}{
		{name: "none", st: sandbox.Status{}, want: []string{"No sandbox is running (`gefyra sandbox up` starts one).\n"}},
		{
			name: "half-started",
			st:   sandbox.Status{Running: true, Parts: []sandbox.Part{{Name: "test world", State: "not running"}}},
			want: []string{"its start failed half-way", "  !! test world        not running\n"},
		},
		{
			name: "up",
			st: sandbox.Status{Running: true, Ready: true,
				Parts: []sandbox.Part{{Name: "oauth2-demo", State: "Pod p: 2/2 Running", OK: true}},
				Info:  &sandbox.Info{Started: started, Kubeconfig: "/k", LocalDir: "/l", URL: "http://u/", User: "john@gefyra.dev", Password: "pw"}},
			want: []string{"The sandbox is up since 2026-01-02 03:04:05:\n", "  ok oauth2-demo       Pod p: 2/2 Running\n",
				"  export KUBECONFIG=/k\n", "  export LOCAL_DIR=/l\n", "  URL:    http://u/\n", "  Login:  john@gefyra.dev, password pw\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			writeSandboxStatus(&b, &tt.st)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("no %q in:\n%s", w, b.String())
				}
			}
		})
	}
}

package command

import (
	"bytes"
	"context"
	"errors"
	"path"
	"slices"
	"strings"
	"testing"

	"gefyra.dev/gefyra/cli/internal/shellwords"
)

func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{"8080:8155", "127.0.0.1:5678:5678", "9000/udp", "0.0.0.0:1:2/tcp", ":", "1:2:3:4", "80/sctp", "[::1]:1:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := parsePublish(s)
		if err != nil {
			return
		}
		if b.ContainerPort == 0 || b.Protocol != "tcp" && b.Protocol != "udp" || b.HostIP == "" {
			t.Fatalf("parsePublish(%q) = %+v", s, b)
		}
	})
}

func FuzzParseVolume(f *testing.F) {
	dir := f.TempDir()
	for _, s := range []string{dir + ":/app", dir + ":/app:ro", "cache:/cache", "./x:/y", ":/a", "a:b:c:d", "~:/home"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseVolume(s)
		if err != nil {
			return
		}
		if !path.IsAbs(m.Target) || m.Source == "" || strings.Contains(m.Source, ":") {
			t.Fatalf("parseVolume(%q) = %+v", s, m)
		}
	})
}

// Whatever -c holds, `gefyra run` either refuses it as bad input or runs
// exactly the words a shell would make of it.
func FuzzRunCommand(f *testing.F) {
	for _, s := range []string{
		"bash -c 'python -m debugpy --wait-for-client --listen 0.0.0.0:5678 -m uvicorn main:app --host 0.0.0.0 --port 8155 --reload'",
		`/server --greeting "a b"`, "a && b", "'", "", " ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, c string) {
		env := Env{}
		env.fill()
		root, a := newRoot(env)
		var got *runOptions
		a.capture = func(v any) { got = v.(*runOptions) }
		root.SetArgs([]string{"run", "-i", "x", "-N", "y", "-c", c})
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		err := root.ExecuteContext(context.Background())
		want, splitErr := shellwords.Split(c)
		switch {
		case err != nil:
			var ue usageError
			if !errors.As(err, &ue) {
				t.Fatalf("-c %q: %v is not a usage error", c, err)
			}
			if splitErr == nil && len(want) > 0 && c != "" {
				t.Fatalf("-c %q splits into %q but was refused: %v", c, want, err)
			}
		case c == "":
			if got.spec.Cmd != nil {
				t.Fatalf("-c '' set the command %q", got.spec.Cmd)
			}
		default:
			if splitErr != nil || !slices.Equal(got.spec.Cmd, want) {
				t.Fatalf("-c %q ran %q, want %q (%v)", c, got.spec.Cmd, want, splitErr)
			}
		}
	})
}

package shellwords

import (
	"slices"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "tutorial", in: `bash -c 'python -m debugpy --wait-for-client --listen 0.0.0.0:5678 -m uvicorn main:app --host 0.0.0.0 --port 8155 --reload'`,
			want: []string{"bash", "-c", "python -m debugpy --wait-for-client --listen 0.0.0.0:5678 -m uvicorn main:app --host 0.0.0.0 --port 8155 --reload"}},
		{name: "plain words", in: "  /server  --port 8155\t-v ", want: []string{"/server", "--port", "8155", "-v"}},
		{name: "empty", in: "", want: nil},
		{name: "blank", in: " \t\n", want: nil},
		{name: "empty quotes are a word", in: `a '' ""`, want: []string{"a", "", ""}},
		{name: "double quotes with escapes", in: `echo "a \"b\" \\ \$HOME c\d"`, want: []string{"echo", `a "b" \ $HOME c\d`}},
		{name: "adjacent quoting joins", in: `a'b c'"d e"f`, want: []string{"ab cd ef"}},
		{name: "backslash outside quotes", in: `a\ b \'c`, want: []string{"a b", "'c"}},
		{name: "line continuation", in: "a \\\nb", want: []string{"a", "b"}},
		{name: "shell syntax inside single quotes is literal", in: `sh -c 'a && b | c > d; $X'`, want: []string{"sh", "-c", "a && b | c > d; $X"}},
		{name: "escaped operator", in: `echo \&\& \$`, want: []string{"echo", "&&", "$"}},
		{name: "hash inside a word", in: `echo a#b`, want: []string{"echo", "a#b"}},
		{name: "globs stay literal", in: `ls *.go`, want: []string{"ls", "*.go"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Split(tt.in)
			if err != nil {
				t.Fatalf("Split(%q): %v", tt.in, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Split(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSplitErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "unterminated single quote", in: `bash -c 'echo`, want: "unterminated single quote"},
		{name: "unterminated double quote", in: `echo "a`, want: "unterminated double quote"},
		{name: "lone backslash", in: `echo \`, want: "lone backslash"},
		{name: "and list", in: `make && run`, want: `uses "&"`},
		{name: "pipe", in: `a | b`, want: `uses "|"`},
		{name: "redirection", in: `a > out`, want: `uses ">"`},
		{name: "variable", in: `echo $HOME`, want: `uses "$"`},
		{name: "variable in double quotes", in: `echo "$HOME"`, want: `uses "$"`},
		{name: "command substitution", in: "echo `id`", want: "uses \"`\""},
		{name: "comment", in: `run # note`, want: `uses "#"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Split(tt.in)
			if err == nil {
				t.Fatalf("Split(%q) succeeded, want an error", tt.in)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Split(%q): %v, want it to mention %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestJoinRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{name: "tutorial", args: []string{"bash", "-c", "python -m debugpy --listen 0.0.0.0:5678 --reload"}},
		{name: "quotes and specials", args: []string{"it's", `"x"`, "$HOME", "a b", "", "&&", "#", "\\", "\n"}},
		{name: "plain", args: []string{"/server", "--port=8155"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := Join(tt.args)
			got, err := Split(line)
			if err != nil {
				t.Fatalf("Split(Join(%q)) = Split(%q): %v", tt.args, line, err)
			}
			if !slices.Equal(got, tt.args) {
				t.Fatalf("Split(%q) = %q, want %q", line, got, tt.args)
			}
		})
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{
		`bash -c 'python -m debugpy --wait-for-client --listen 0.0.0.0:5678 -m uvicorn main:app --host 0.0.0.0 --port 8155 --reload'`,
		`echo "a \"b\" \\ \$HOME"`, `a'b'"c"\ d`, `'`, `"`, `\`, `a && b`, "", "x\\\ny", `'it'\''s'`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args, err := Split(s)
		if err != nil {
			return
		}
		// Whatever splits must survive a Join → Split round trip.
		line := Join(args)
		again, err := Split(line)
		if err != nil {
			t.Fatalf("Split(%q) = %q, but Split(Join) = Split(%q) fails: %v", s, args, line, err)
		}
		if !slices.Equal(again, args) {
			t.Fatalf("round trip of %q: %q → %q → %q", s, args, line, again)
		}
	})
}

package expansion_test

import (
	"strings"
	"testing"

	"gefyra.dev/gefyra/internal/expansion"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	tests := []struct {
		name, in, want string
	}{
		{name: "no variables", in: "/bin/sh", want: "/bin/sh"},
		{name: "defined", in: "$(A)/b", want: "x/b"},
		{name: "defined and empty", in: "a$(EMPTY)b", want: "ab"},
		{name: "undefined stays", in: "$(B)", want: "$(B)"},
		{name: "escaped", in: "$$(A)", want: "$(A)"},
		{name: "double dollar", in: "a$$b", want: "a$b"},
		{name: "unclosed", in: "$(A", want: "$(A"},
		{name: "lone dollar", in: "a$", want: "a$"},
		{name: "dollar and a letter", in: "$A", want: "$A"},
		{name: "several", in: "$(A)$(A)-$(B)", want: "xx-$(B)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expansion.Expand(tt.in, lookup); got != tt.want {
				t.Fatalf("Expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"$(A)", "$$(A)", "$(A", "a$", "$(A)$(B)", "plain"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		none := func(string) (string, bool) { return "", false }
		if got := expansion.Expand(s, none); !strings.Contains(s, "$") && got != s {
			t.Fatalf("Expand(%q) = %q without a $", s, got)
		}
		// Every reference replaced by nothing: the result never grows.
		empty := func(string) (string, bool) { return "", true }
		if got := expansion.Expand(s, empty); len(got) > len(s) {
			t.Fatalf("Expand(%q) = %q grew", s, got)
		}
	})
}

package cluster

import (
	"strings"
	"testing"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

func TestParseEnvRef(t *testing.T) {
	tests := []struct {
		name, in string
		want     EnvRef
		err      string
	}{
		{name: "deployment", in: "deployment/oauth2-demo", want: EnvRef{Kind: gefyrav1.KindDeployment, Name: "oauth2-demo"}},
		{name: "with container", in: "deploy/oauth2-demo/oauth2-demo-app", want: EnvRef{Kind: gefyrav1.KindDeployment, Name: "oauth2-demo", Container: "oauth2-demo-app"}},
		{name: "statefulset", in: "sts/keycloak", want: EnvRef{Kind: gefyrav1.KindStatefulSet, Name: "keycloak"}},
		{name: "pod", in: "pod/keycloak-0/keycloak", want: EnvRef{Kind: gefyrav1.KindPod, Name: "keycloak-0", Container: "keycloak"}},
		{name: "no name", in: "deployment", err: "want KIND/NAME[/CONTAINER]"},
		{name: "too many parts", in: "deployment/a/b/c", err: "want KIND/NAME[/CONTAINER]"},
		{name: "unknown kind", in: "cronjob/x", err: `unknown workload kind "cronjob"`},
		{name: "bad name", in: "deployment/Oauth2", err: `"Oauth2" is not a valid workload name`},
		{name: "empty container", in: "deployment/a/", err: `"" is not a valid container name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEnvRef(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseEnvRef(%q) = %+v, %v; want an error saying %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseEnvRef(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzParseEnvRef(f *testing.F) {
	for _, s := range []string{"deployment/oauth2-demo/oauth2-demo-app", "pod/x", "sts/a.b", "//", "deployment/-a", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseEnvRef(s)
		if err != nil {
			return
		}
		// What parses names a real workload kind and valid names, and
		// spells back to itself.
		if r.Kind == "" || !IsDNSSubdomain(r.Name) || r.Container != "" && !IsDNSLabel(r.Container) {
			t.Fatalf("ParseEnvRef(%q) = %+v", s, r)
		}
		back := KindRef(r.Kind) + "/" + r.Name
		if r.Container != "" {
			back += "/" + r.Container
		}
		again, err := ParseEnvRef(back)
		if err != nil || again != r {
			t.Fatalf("ParseEnvRef(%q) = %+v; its spelling %q gives %+v, %v", s, r, back, again, err)
		}
	})
}

func TestExpand(t *testing.T) {
	values := map[string]string{"HOST": "db", "PORT": "5432"}
	tests := []struct{ name, in, want string }{
		{name: "none", in: "plain", want: "plain"},
		{name: "references", in: "postgres://$(HOST):$(PORT)/x", want: "postgres://db:5432/x"},
		{name: "unknown stays", in: "$(NOPE)-$(HOST)", want: "$(NOPE)-db"},
		{name: "escaped", in: "$$(HOST) costs $$5", want: "$(HOST) costs $5"},
		{name: "unterminated", in: "$(HOST", want: "$(HOST"},
		{name: "lone dollar", in: "a$b$", want: "a$b$"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expand(tt.in, values); got != tt.want {
				t.Fatalf("expand(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"$(A)", "$$(A)", "$(", "$", "x$(B)y$$", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Without references there is nothing to replace; with no values
		// only $$ changes.
		got := expand(s, map[string]string{})
		if !strings.Contains(s, "$$") && got != s {
			t.Fatalf("expand(%q) with no values = %q", s, got)
		}
		if len(got) > len(s) {
			t.Fatalf("expand(%q) with no values grew to %q", s, got)
		}
	})
}

func TestNames(t *testing.T) {
	tests := []struct {
		in            string
		label, domain bool
	}{
		{"oauth2-demo", true, true},
		{"oauth2.demo", false, true},
		{"-a", false, false},
		{"a-", false, false},
		{"A", false, false},
		{"", false, false},
		{strings.Repeat("a", 64), false, false},
		{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63), false, true},
	}
	for _, tt := range tests {
		if IsDNSLabel(tt.in) != tt.label || IsDNSSubdomain(tt.in) != tt.domain {
			t.Errorf("%q: label %v subdomain %v, want %v %v", tt.in, IsDNSLabel(tt.in), IsDNSSubdomain(tt.in), tt.label, tt.domain)
		}
	}
}

package v1alpha1

import (
	"strings"
	"testing"
)

func TestSpecModel(t *testing.T) {
	tests := []struct {
		name    string
		spec    GefyraBridgeSpec
		want    string // rules as their model prints, or the error
		wantErr bool
	}{
		{name: "defaults", spec: GefyraBridgeSpec{Ports: []PortMapping{{8155, 8155}},
			Rules: []Rule{{Headers: []HeaderMatch{{Name: "x-user", Value: "john"}}, Path: &PathMatch{Value: "/items"}}}},
			want: "x-user Exact john; path Prefix /items"},
		{name: "no rules", spec: GefyraBridgeSpec{Ports: []PortMapping{{80, 8080}}}, want: ""},
		{name: "bad regex the API server cannot check", spec: GefyraBridgeSpec{Ports: []PortMapping{{80, 80}},
			Rules: []Rule{{Path: &PathMatch{Type: "RegularExpression", Value: "(["}}}}, wantErr: true},
		{name: "port out of range", spec: GefyraBridgeSpec{Ports: []PortMapping{{0, 80}}}, wantErr: true},
		{name: "duplicate remote", spec: GefyraBridgeSpec{Ports: []PortMapping{{80, 80}, {80, 81}}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ports, rules, err := tt.spec.Model()
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted: %v %v", ports, rules)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, r := range rules {
				for _, h := range r.Headers {
					parts = append(parts, h.Name+" "+string(h.Type)+" "+h.Value)
				}
				if r.Path != nil {
					parts = append(parts, "path "+string(r.Path.Type)+" "+r.Path.Value)
				}
			}
			if got := strings.Join(parts, "; "); got != tt.want {
				t.Fatalf("rules %q, want %q", got, tt.want)
			}
			// And back: the CLI builds specs from the model.
			backPorts, backRules := SpecFromModel(ports, rules)
			if len(backPorts) != len(tt.spec.Ports) || len(backRules) != len(tt.spec.Rules) {
				t.Fatalf("round trip lost something: %v %v", backPorts, backRules)
			}
		})
	}
}

func TestMountName(t *testing.T) {
	short := MountName(Target{Kind: KindDeployment, Name: "oauth2-demo", Container: "oauth2-demo-app"})
	if short != "deployment-oauth2-demo-oauth2-demo-app" {
		t.Fatalf("MountName = %q", short)
	}
	long := Target{Kind: KindStatefulSet, Name: strings.Repeat("a", 253), Container: "c"}
	a := MountName(long)
	long.Container = "d"
	b := MountName(long)
	if len(a) > 253 || len(b) > 253 || a == b {
		t.Fatalf("long names: %d %d, distinct %v", len(a), len(b), a != b)
	}
}

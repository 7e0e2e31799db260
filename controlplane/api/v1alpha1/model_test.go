package v1alpha1

import (
	"strings"
	"testing"
)

func TestSpecModel(t *testing.T) {
	tests := []struct {
		name string
		spec GefyraBridgeSpec
		want string // rules as their model prints
		// wantPorts are the ports as the CLI spells them; empty: not checked.
		wantPorts string
		wantErr   bool
	}{
		{name: "defaults", spec: GefyraBridgeSpec{Ports: []PortMapping{{Remote: 8155, Local: 8155}},
			Rules: []Rule{{Headers: []HeaderMatch{{Name: "x-user", Value: "john"}}, Path: &PathMatch{Value: "/items"}}}},
			want: "x-user Exact john; path Prefix /items"},
		{name: "no rules", spec: GefyraBridgeSpec{Ports: []PortMapping{{Remote: 80, Local: 8080}}}, want: ""},
		{name: "bad regex the API server cannot check", spec: GefyraBridgeSpec{Ports: []PortMapping{{Remote: 80, Local: 80}},
			Rules: []Rule{{Path: &PathMatch{Type: "RegularExpression", Value: "(["}}}}, wantErr: true},
		{name: "port out of range", spec: GefyraBridgeSpec{Ports: []PortMapping{{Remote: 0, Local: 80}}}, wantErr: true},
		{name: "tcp port", spec: GefyraBridgeSpec{Ports: []PortMapping{{Remote: 8080, Local: 8080}, {Remote: 5432, Local: 15432, Protocol: ProtocolTCP}}},
			want: "", wantPorts: "8080:8080 5432:15432/tcp"},
		{name: "tcp port with rules", spec: GefyraBridgeSpec{Ports: []PortMapping{{Remote: 5432, Local: 5432, Protocol: ProtocolTCP}},
			Rules: []Rule{{Headers: []HeaderMatch{{Name: "x-user", Value: "john"}}}}}, wantErr: true},
		{name: "unknown protocol", spec: GefyraBridgeSpec{Ports: []PortMapping{{Remote: 53, Local: 53, Protocol: "UDP"}}}, wantErr: true},
		{name: "duplicate remote", spec: GefyraBridgeSpec{Ports: []PortMapping{{Remote: 80, Local: 80}, {Remote: 80, Local: 81}}}, wantErr: true},
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
			var spelled []string
			for _, p := range ports {
				spelled = append(spelled, p.String())
			}
			if got := strings.Join(spelled, " "); tt.wantPorts != "" && got != tt.wantPorts {
				t.Fatalf("ports %q, want %q", got, tt.wantPorts)
			}
			// And back: the CLI builds specs from the model.
			backPorts, backRules := SpecFromModel(ports, rules)
			if len(backPorts) != len(tt.spec.Ports) || len(backRules) != len(tt.spec.Rules) {
				t.Fatalf("round trip lost something: %v %v", backPorts, backRules)
			}
			for i, p := range backPorts {
				want := tt.spec.Ports[i]
				if want.Protocol == "" {
					want.Protocol = ProtocolHTTP
				}
				if p != want {
					t.Fatalf("port %d: round trip gave %+v, want %+v", i, p, want)
				}
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

package state

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/internal/bridge"
)

func TestHome(t *testing.T) {
	dir := t.TempDir()
	got, err := Home(func(k string) string {
		if k == EnvHome {
			return dir
		}
		return ""
	})
	if err != nil || got != dir {
		t.Fatalf("Home with %s = %q, %v; want %q", EnvHome, got, err, dir)
	}
	t.Setenv("HOME", dir)
	got, err = Home(func(string) string { return "" })
	if err != nil || got != filepath.Join(dir, ".gefyra") {
		t.Fatalf("Home = %q, %v; want ~/.gefyra", got, err)
	}
}

func TestDirName(t *testing.T) {
	tests := []struct {
		name, context string
		want          string // exact, or a prefix when hashed
		hashed        bool
	}{
		{name: "plain", context: "kind-gefyra", want: "kind-gefyra"},
		{name: "arn", context: "arn:aws:eks:eu-1:123:cluster/dev", want: "arn_aws_eks_eu-1_123_cluster_dev-", hashed: true},
		{name: "user at cluster", context: "john@k3d", want: "john_k3d-", hashed: true},
		{name: "dot dot", context: "..", want: "..-", hashed: true},
		{name: "empty", context: "", want: "-", hashed: true},
		{name: "long", context: strings.Repeat("a", 100), want: strings.Repeat("a", 64) + "-", hashed: true},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DirName(tt.context)
			if !tt.hashed && got != tt.want || tt.hashed && (!strings.HasPrefix(got, tt.want) || len(got) == len(tt.want)) {
				t.Fatalf("DirName(%q) = %q, want %q%s", tt.context, got, tt.want, map[bool]string{true: "<hash>"}[tt.hashed])
			}
			if strings.ContainsAny(got, "/\\:") {
				t.Fatalf("DirName(%q) = %q is not a plain directory name", tt.context, got)
			}
			if other, ok := seen[got]; ok {
				t.Fatalf("contexts %q and %q share directory %q", other, tt.context, got)
			}
			seen[got] = tt.context
		})
	}
	if DirName("a/b") == DirName("a:b") {
		t.Fatal("contexts a/b and a:b share a directory")
	}
}

func TestStateRoundTrip(t *testing.T) {
	d := Open(t.TempDir(), "ctx")
	s, err := d.Load()
	if err != nil || !reflect.DeepEqual(s, &State{}) {
		t.Fatalf("Load of nothing = %+v, %v; want an empty state", s, err)
	}
	want := &State{Context: "ctx", Client: "john-gefyra.dev", Address: "10.122.0.2", Bridges: []Bridge{{
		Namespace: "oauth2-demo", Name: "myfastapi", Container: "myfastapi-demo", Kind: "Deployment", Workload: "oauth2-demo",
		WorkloadContainer: "oauth2-demo-app", Ports: []Port{{Remote: 8155, Local: 8155, Tunnel: 8155}}, Created: time.Unix(1700000000, 0).UTC()}}}
	if err := d.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := d.Load()
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Load = %+v, %v; want %+v", got, err, want)
	}
	if tg := got.Targets(); !reflect.DeepEqual(tg, map[uint16]string{8155: "myfastapi-demo:8155"}) {
		t.Fatalf("Targets = %v", tg)
	}
	if !got.Remove("oauth2-demo", "myfastapi") || got.Remove("oauth2-demo", "myfastapi") || got.Bridges != nil {
		t.Fatalf("Remove: bridges left %v", got.Bridges)
	}
	for _, f := range []string{d.stateFile(), d.Path()} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]os.FileMode{true: 0o700, false: 0o600}[fi.IsDir()]; fi.Mode().Perm() != want {
			t.Fatalf("%s has mode %v, want %v", f, fi.Mode().Perm(), want)
		}
	}
	if err := os.WriteFile(d.stateFile(), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Load(); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Fatalf("Load of a damaged file: %v, want it called damaged", err)
	}
}

func TestPrivateKey(t *testing.T) {
	d := Open(t.TempDir(), "ctx")
	k1, err := d.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := d.PrivateKey()
	if err != nil || k1 != k2 || k1.IsZero() {
		t.Fatalf("the key changed or is zero: %v %v %v", k1, k2, err)
	}
	fi, err := os.Stat(d.keyFile())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	cfg := agent.Config{PrivateKey: k1, Address: netip.MustParseAddr("10.122.0.2"),
		Stowaway: agent.Stowaway{Endpoint: "10.250.0.2:31820", PublicKey: k1.PublicKey()}, Targets: map[uint16]string{8155: "app:8155"}}
	if err := d.WriteAgentConfig(cfg); err != nil {
		t.Fatal(err)
	}
	back, err := d.ReadAgentConfig()
	if err != nil || !reflect.DeepEqual(back, cfg) {
		t.Fatalf("agent config round trip = %+v, %v; want %+v", back, err, cfg)
	}
	fi, err = os.Stat(filepath.Join(d.AgentDir(), AgentConfigFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent config mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if err := os.WriteFile(d.keyFile(), []byte("nonsense"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.PrivateKey(); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Fatalf("PrivateKey of a damaged file: %v", err)
	}
}

func TestAssignTunnelPorts(t *testing.T) {
	existing := []Bridge{
		{Name: "a", Container: "app", Ports: []Port{{Remote: 8155, Local: 8155, Tunnel: 8155}}},
		{Name: "b", Container: "other", Ports: []Port{{Remote: 8155, Local: 8155, Tunnel: 8156}, {Remote: 80, Local: 65535, Tunnel: 65535}}},
	}
	tests := []struct {
		name      string
		container string
		ports     []bridge.PortMapping
		want      []Port
	}{
		{name: "free port stays", container: "new", ports: []bridge.PortMapping{{Remote: 9000, Local: 9000}},
			want: []Port{{Remote: 9000, Local: 9000, Tunnel: 9000}}},
		{name: "same container and port share", container: "app", ports: []bridge.PortMapping{{Remote: 80, Local: 8155}},
			want: []Port{{Remote: 80, Local: 8155, Tunnel: 8155}}},
		{name: "taken port moves past every taken one", container: "third", ports: []bridge.PortMapping{{Remote: 8155, Local: 8155}},
			want: []Port{{Remote: 8155, Local: 8155, Tunnel: 8157}}},
		{name: "wraps around", container: "third", ports: []bridge.PortMapping{{Remote: 1, Local: 65535}},
			want: []Port{{Remote: 1, Local: 65535, Tunnel: 1024}}},
		{name: "two ports of one bridge", container: "third", ports: []bridge.PortMapping{{Remote: 1, Local: 9000}, {Remote: 2, Local: 9001}},
			want: []Port{{Remote: 1, Local: 9000, Tunnel: 9000}, {Remote: 2, Local: 9001, Tunnel: 9001}}},
		{name: "a TCP port keeps its protocol", container: "db", ports: []bridge.PortMapping{{Remote: 5432, Local: 5432, Protocol: bridge.ProtocolTCP}},
			want: []Port{{Remote: 5432, Local: 5432, Tunnel: 5432, Protocol: bridge.ProtocolTCP}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AssignTunnelPorts(existing, tt.container, tt.ports)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("AssignTunnelPorts = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestLock(t *testing.T) {
	d := Open(t.TempDir(), "ctx")
	unlock, err := d.Lock()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		u, err := d.Lock()
		if err == nil {
			u()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("a second Lock did not wait for the first")
	case <-time.After(100 * time.Millisecond):
	}
	unlock()
	<-got
}

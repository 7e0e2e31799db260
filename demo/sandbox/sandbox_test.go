package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseRoutes(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []hostAddr
	}{
		{
			name: "the world's routes and Docker's",
			in: "default via 192.0.2.1 dev eth0 \n" +
				"10.96.0.0/16 via 10.250.0.2 dev gfyw-host \n" +
				"172.17.0.0/16 dev docker0 proto kernel scope link src 172.17.0.1 linkdown \n" +
				"local 10.250.0.1 dev gfyw-host table local proto kernel scope host src 10.250.0.1 \n" +
				"broadcast 10.250.0.3 dev gfyw-host table local proto kernel scope link src 10.250.0.1 \n",
			want: []hostAddr{
				{Dev: "gfyw-host", Prefix: netip.MustParsePrefix("10.96.0.0/16"), Route: true},
				{Dev: "docker0", Prefix: netip.MustParsePrefix("172.17.0.0/16"), Route: true},
			},
		},
		{
			name: "typed routes, a host route, no device",
			in:   "unreachable 10.96.0.0/16 \nblackhole 10.244.0.0/24 proto static\nunicast 10.1.2.3 via 10.0.0.1 dev eth1\n",
			want: []hostAddr{
				{Prefix: netip.MustParsePrefix("10.96.0.0/16"), Route: true},
				{Prefix: netip.MustParsePrefix("10.244.0.0/24"), Route: true},
				{Dev: "eth1", Prefix: netip.MustParsePrefix("10.1.2.3/32"), Route: true},
			},
		},
		{
			name: "an unmasked prefix is masked",
			in:   "10.96.1.7/16 dev x\n",
			want: []hostAddr{{Dev: "x", Prefix: netip.MustParsePrefix("10.96.0.0/16"), Route: true}},
		},
		{
			name: "garbage, IPv6 and a dangling dev are skipped or kept without a device",
			in:   "\nnot-an-address dev x\nfe80::/64 dev eth0\n\t\nunicast\n10.0.0.0/8 dev\n",
			want: []hostAddr{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Route: true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseRoutes([]byte(tt.in)); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseRoutes = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func FuzzParseRoutes(f *testing.F) {
	f.Add([]byte("10.96.0.0/16 via 10.250.0.2 dev gfyw-host \n"))
	f.Add([]byte("unreachable 10.96.0.0/16\nlocal 127.0.0.1 dev lo\n"))
	f.Add([]byte("unicast\n dev\n1.2.3.4 dev"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, h := range parseRoutes(b) {
			if !h.Route || !h.Prefix.IsValid() || !h.Prefix.Addr().Is4() || h.Prefix != h.Prefix.Masked() {
				t.Fatalf("parseRoutes(%q) gave %+v", b, h)
			}
		}
	})
}

func TestAddressConflicts(t *testing.T) {
	world := worldNet{HostIf: "gfyw-host", Ranges: []netip.Prefix{
		netip.MustParsePrefix("10.250.0.0/30"), netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("10.96.0.0/16"),
	}}
	tests := []struct {
		name string
		have []hostAddr
		want []string
	}{
		{
			name: "a machine of its own",
			have: []hostAddr{
				{Dev: "lo", Prefix: netip.MustParsePrefix("127.0.0.1/8")},
				{Dev: "eth0", Prefix: netip.MustParsePrefix("192.0.2.2/24")},
				{Dev: "docker0", Prefix: netip.MustParsePrefix("172.17.0.0/16"), Route: true},
			},
		},
		{
			name: "what an earlier world left is the world's own",
			have: []hostAddr{
				{Dev: "gfyw-host", Prefix: netip.MustParsePrefix("10.250.0.1/30")},
				{Dev: "gfyw-host", Prefix: netip.MustParsePrefix("10.96.0.0/16"), Route: true},
			},
		},
		{
			name: "a VPN's route and a bridge's address in the world's ranges",
			have: []hostAddr{
				{Dev: "tun0", Prefix: netip.MustParsePrefix("10.0.0.0/8"), Route: true},
				{Dev: "br0", Prefix: netip.MustParsePrefix("10.244.0.7/28")},
				{Prefix: netip.MustParsePrefix("10.96.5.0/24"), Route: true},
			},
			want: []string{
				"a route to 10.0.0.0/8 on tun0 overlaps 10.250.0.0/30, which the test world needs",
				"a route to 10.0.0.0/8 on tun0 overlaps 10.244.0.0/24, which the test world needs",
				"a route to 10.0.0.0/8 on tun0 overlaps 10.96.0.0/16, which the test world needs",
				"address 10.244.0.7/28 on br0 overlaps 10.244.0.0/24, which the test world needs",
				"a route to 10.96.5.0/24 overlaps 10.96.0.0/16, which the test world needs",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := addressConflicts(world, tt.have); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("addressConflicts =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestParseClaims(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    claims
		wantErr string
	}{
		{
			name: "the demo's and the add-on's pins",
			in: "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: oauth2-demo\n---\n" +
				"apiVersion: v1\nkind: Service\nmetadata:\n  name: oauth2-demo\n  namespace: oauth2-demo\nspec:\n  clusterIP: 10.96.100.20\n  ports:\n  - port: 8080\n---\n" +
				"apiVersion: v1\nkind: Service\nmetadata:\n  name: headless\n  namespace: oauth2-demo\nspec:\n  clusterIP: None\n---\n" +
				"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: gefyrabridges.gefyra.dev\n---\n" +
				"apiVersion: v1\nkind: Service\nmetadata:\n  name: gefyra-stowaway-wireguard\n  namespace: gefyra\nspec:\n  type: NodePort\n  ports:\n  - port: 51820\n    nodePort: 31820\n---\n" +
				"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
			want: claims{
				Namespaces: []string{"oauth2-demo"},
				CRDs:       []string{"gefyrabridges.gefyra.dev"},
				ClusterIPs: map[string]string{"10.96.100.20": "oauth2-demo/oauth2-demo"},
				NodePorts:  map[int32]string{31820: "gefyra/gefyra-stowaway-wireguard"},
			},
		},
		{
			name: "nothing",
			in:   "",
			want: claims{ClusterIPs: map[string]string{}, NodePorts: map[int32]string{}},
		},
		{
			name:    "not YAML of objects",
			in:      "kind: [unclosed\n",
			wantErr: "reading the manifests",
		},
		{
			name:    "a port that is no number",
			in:      "kind: Service\nspec:\n  ports:\n  - nodePort: high\n",
			wantErr: "reading the manifests",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c claims
			err := parseClaims(&c, []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c, tt.want) {
				t.Fatalf("claims = %+v\nwant %+v", c, tt.want)
			}
		})
	}
}

func FuzzParseClaims(f *testing.F) {
	f.Add([]byte("kind: Service\nmetadata: {name: a, namespace: b}\nspec: {clusterIP: 10.96.100.20, ports: [{nodePort: 31820}]}\n---\nkind: Namespace\nmetadata: {name: c}\n"))
	f.Add([]byte("{\"kind\":\"CustomResourceDefinition\",\"metadata\":{\"name\":\"x.gefyra.dev\"}}"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c claims
		if err := parseClaims(&c, b); err != nil {
			return
		}
		for port := range c.NodePorts {
			if port == 0 {
				t.Fatalf("parseClaims(%q) claims NodePort 0", b)
			}
		}
		if _, ok := c.ClusterIPs["None"]; ok {
			t.Fatalf("parseClaims(%q) claims ClusterIP None", b)
		}
	})
}

func TestParseState(t *testing.T) {
	good := State{Version: stateVersion, Root: "/src/gefyra", Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), StartedWorld: true,
		Docker: &DockerState{DevImageBefore: "sha256:a", GefyraImages: []string{"sha256:b"}}}
	b, err := json.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "written by save", in: string(b)},
		{name: "another version", in: `{"version":2,"root":"/x"}`, wantErr: "version 2"},
		{name: "a relative root", in: `{"version":1,"root":"x"}`, wantErr: "not an absolute path"},
		{name: "no root", in: `{"version":1}`, wantErr: "not an absolute path"},
		{name: "not JSON", in: `version: 1`, wantErr: "invalid character"},
		{name: "a field of the wrong type", in: `{"version":1,"root":"/x","startedWorld":"yes"}`, wantErr: "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := parseState([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*st, good) {
				t.Fatalf("state = %+v, want %+v", st, good)
			}
		})
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"version":1,"root":"/src","startedDocker":true,"docker":{"gefyraImages":["a"]}}`))
	f.Add([]byte(`{"version":1,"root":"/"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, err := parseState(again)
		if err != nil || !reflect.DeepEqual(st, st2) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", b, st2, err, st)
		}
	})
}

func TestNeedRoot(t *testing.T) {
	if err := needRoot(0, "up"); err != nil {
		t.Fatalf("root: %v", err)
	}
	err := needRoot(1000, "down")
	if err == nil || err.Error() != "gefyra sandbox down needs root: it starts and stops Docker Engine and a Kubernetes node on this machine (sudo gefyra sandbox down)" {
		t.Fatalf("non-root: %v", err)
	}
}

// fakeMachine is a repository whose world scripts only record their
// calls, and a PATH with a docker command that does as told.
type fakeMachine struct {
	root, bin, log string
}

func newFakeMachine(t *testing.T) *fakeMachine {
	t.Helper()
	m := &fakeMachine{root: t.TempDir(), bin: t.TempDir()}
	m.log = filepath.Join(m.root, "calls.log")
	for _, f := range repoFiles {
		write(t, filepath.Join(m.root, f), "", 0o644)
	}
	// Each script logs "NAME ARGS"; status exits with what the file
	// NAME.status holds (0 when missing), everything else with NAME.rc;
	// snapshot.sh prints the file snapshot.now.
	for _, name := range []string{"world.sh", "docker.sh", "snapshot.sh"} {
		write(t, filepath.Join(m.root, "world", name), `#!/bin/sh
d=$(dirname "$0")/..
echo "`+name+` $*" >>"$d/calls.log"
[ "`+name+`" = snapshot.sh ] && { cat "$d/snapshot.now"; exit 0; }
if [ "$1" = status ]; then exit $(cat "$d/`+name+`.status" 2>/dev/null || echo 0); fi
exit $(cat "$d/`+name+`.rc" 2>/dev/null || echo 0)
`, 0o755)
	}
	write(t, filepath.Join(m.root, "world", "lib", "common.sh"),
		"HOST_IF=gfyt-host\nHOST_IP=10.251.0.1\nLINK_PREFIX=30\nPOD_CIDR=10.245.0.0/24\nSERVICE_CIDR=10.97.0.0/16\n", 0o644)
	// docker logs its arguments; info exits with docker.info (0 if
	// missing), image ls prints images.now, image rm and tag succeed.
	write(t, filepath.Join(m.bin, "docker"), `#!/bin/sh
b=`+m.bin+`
echo "$*" >>"$b/docker.log"
case "$1 $2" in
"info "*) exit $(cat "$b/docker.info" 2>/dev/null || echo 0) ;;
"image ls") cat "$b/images.now" 2>/dev/null; exit 0 ;;
"image rm" | "tag "*) exit 0 ;;
esac
exit 1
`, 0o755)
	for _, tool := range []string{"go", "diff", "ip", "bash", "sh", "cat", "dirname"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("no %s on this machine", tool)
		}
		if err := os.Symlink(p, filepath.Join(m.bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	// Only the fakes and the tools above: no dockerd, no real docker.
	t.Setenv("PATH", m.bin)
	// Never the real test world's cluster.
	t.Setenv("GEFYRA_KUBECONFIG", filepath.Join(m.root, "no-kubeconfig"))
	return m
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func (m *fakeMachine) set(t *testing.T, file, content string) {
	t.Helper()
	write(t, filepath.Join(m.root, file), content, 0o644)
}

func (m *fakeMachine) calls(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(m.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var calls []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		calls = append(calls, strings.TrimSpace(l))
	}
	return calls
}

func (m *fakeMachine) sandbox(t *testing.T, out *bytes.Buffer) *Sandbox {
	return &Sandbox{Root: m.root, Dir: filepath.Join(t.TempDir(), "sandbox"), Out: out, geteuid: func() int { return 0 }}
}

func TestUpRefuses(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, m *fakeMachine, s *Sandbox)
		wantErr string
	}{
		{
			name:    "without root",
			setup:   func(t *testing.T, m *fakeMachine, s *Sandbox) { s.geteuid = func() int { return 1000 } },
			wantErr: "gefyra sandbox up needs root",
		},
		{
			name: "outside the repository",
			setup: func(t *testing.T, m *fakeMachine, s *Sandbox) {
				os.Remove(filepath.Join(m.root, "world", "world.sh"))
			},
			wantErr: "is not the gefyra repository (no world/world.sh): the sandbox builds the cluster and the images from its source; run it inside the repository, or pass --root DIR",
		},
		{
			name: "Docker Engine neither running nor installed",
			setup: func(t *testing.T, m *fakeMachine, s *Sandbox) {
				write(t, filepath.Join(m.bin, "docker.info"), "1", 0o644)
			},
			wantErr: "Docker Engine is not running, and not installed (no dockerd on PATH)",
		},
		{
			name: "the world's addresses taken on this machine",
			setup: func(t *testing.T, m *fakeMachine, s *Sandbox) {
				m.set(t, "world.sh.status", "3")
				m.set(t, "world/lib/common.sh", "HOST_IF=gfyt-host\nHOST_IP=127.0.0.5\nLINK_PREFIX=30\nPOD_CIDR=10.245.0.0/24\nSERVICE_CIDR=10.97.0.0/16\n")
			},
			wantErr: "address 127.0.0.1/8 on lo overlaps 127.0.0.4/30, which the test world needs",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeMachine(t)
			var out bytes.Buffer
			s := m.sandbox(t, &out)
			tt.setup(t, m, s)
			_, err := s.Up(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Up: %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("the error has several lines: %q", err)
			}
			if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
				t.Errorf("the state directory is left: %v", err)
			}
			for _, c := range m.calls(t) {
				if !strings.HasSuffix(c, " status") {
					t.Errorf("something started: %s", c)
				}
			}
		})
	}
}

func TestUpFindsAnEarlierUp(t *testing.T) {
	m := newFakeMachine(t)
	var out bytes.Buffer
	s := m.sandbox(t, &out)
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.save(&State{Version: stateVersion, Root: m.root, Started: time.Now(), StartedWorld: true}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Up(context.Background())
	if err == nil || !strings.Contains(err.Error(), "did not finish: `gefyra sandbox down` removes what it started") {
		t.Fatalf("Up: %v", err)
	}
	if calls := m.calls(t); len(calls) > 0 {
		t.Errorf("Up ran %q", calls)
	}
}

// TestDown: Down undoes exactly what the state records, and stops the
// world and Docker Engine only if Up started them.
func TestDown(t *testing.T) {
	tests := []struct {
		name      string
		state     State
		files     map[string]string // of the fake machine
		before    string            // the snapshot Up took ("" for none)
		wantCalls []string
		wantErr   string
		wantKept  *State // what stays recorded for another Down (nil: nothing, the directory is gone)
	}{
		{
			name:      "the world and Docker were running: both stay",
			state:     State{},
			wantCalls: []string{"world.sh status"},
		},
		{
			name:      "the sandbox started both: both stop, the machine is as before",
			state:     State{StartedWorld: true, StartedDocker: true},
			files:     map[string]string{"world.sh.status": "3", "snapshot.now": "## links\nlo\n"},
			before:    "## links\nlo\n",
			wantCalls: []string{"world.sh status", "world.sh down", "snapshot.sh", "docker.sh down"},
		},
		{
			name:      "the world left a trace",
			state:     State{StartedWorld: true},
			files:     map[string]string{"world.sh.status": "3", "snapshot.now": "## links\nlo\ngfyw-host\n"},
			before:    "## links\nlo\n",
			wantCalls: []string{"world.sh status", "world.sh down", "snapshot.sh"},
			wantErr:   "+gfyw-host",
		},
		{
			name:      "the world does not stop: Docker still does, and the state stays",
			state:     State{StartedWorld: true, StartedDocker: true},
			files:     map[string]string{"world.sh.rc": "1"},
			before:    "## links\nlo\n",
			wantCalls: []string{"world.sh status", "world.sh down", "docker.sh down"},
			wantErr:   "`gefyra sandbox down` tries again",
			wantKept:  &State{StartedWorld: true},
		},
		{
			name:      "the world runs but does not answer: the workload stays recorded",
			state:     State{Demo: true, Addon: true},
			wantCalls: []string{"world.sh status"},
			wantErr:   "the test world runs, but",
			wantKept:  &State{Demo: true, Addon: true},
		},
		{
			name:      "the world stopped by someone else: nothing of the sandbox is left in it",
			state:     State{Demo: true, Addon: true},
			files:     map[string]string{"world.sh.status": "3"},
			wantCalls: []string{"world.sh status"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeMachine(t)
			for f, c := range tt.files {
				m.set(t, f, c)
			}
			var out bytes.Buffer
			s := m.sandbox(t, &out)
			if err := os.MkdirAll(s.Dir, 0o700); err != nil {
				t.Fatal(err)
			}
			st := tt.state
			st.Version, st.Root, st.Started = stateVersion, m.root, time.Now()
			if err := s.save(&st); err != nil {
				t.Fatal(err)
			}
			if tt.before != "" {
				write(t, s.snapshotPath(), tt.before, 0o600)
			}
			err := s.Down(context.Background())
			t.Logf("Down said:\n%s", out.String())
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Down: %v, want %q", err, tt.wantErr)
			}
			if got := m.calls(t); !reflect.DeepEqual(got, tt.wantCalls) {
				t.Errorf("calls %q, want %q", got, tt.wantCalls)
			}
			_, statErr := os.Stat(s.Dir)
			if kept := statErr == nil; kept != (tt.wantKept != nil) {
				t.Fatalf("state kept: %t, want %t", kept, tt.wantKept != nil)
			}
			if tt.wantKept != nil {
				left, err := s.load()
				if err != nil || left == nil {
					t.Fatalf("the state left: %v", err)
				}
				got := State{StartedWorld: left.StartedWorld, StartedDocker: left.StartedDocker, Demo: left.Demo, Addon: left.Addon}
				if !reflect.DeepEqual(got, *tt.wantKept) {
					t.Errorf("the state left: %+v, want %+v", got, *tt.wantKept)
				}
			}
		})
	}
}

func TestDownWithoutSandbox(t *testing.T) {
	m := newFakeMachine(t)
	var out bytes.Buffer
	s := m.sandbox(t, &out)
	for range 2 {
		if err := s.Down(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(out.String(), "No sandbox is running") {
		t.Errorf("Down said %q", out.String())
	}
	if calls := m.calls(t); len(calls) > 0 {
		t.Errorf("Down ran %q", calls)
	}
}

func TestDownRemovesTheHomeItFoundMissing(t *testing.T) {
	tests := []struct {
		name     string
		existed  bool
		content  bool
		wantGone bool
	}{
		{name: "made by the tutorial's commands and emptied by gefyra down", wantGone: true},
		{name: "there before", existed: true},
		{name: "not empty", content: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeMachine(t)
			var out bytes.Buffer
			s := m.sandbox(t, &out)
			s.Home = filepath.Join(t.TempDir(), ".gefyra")
			if err := os.MkdirAll(s.Dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := s.save(&State{Version: stateVersion, Root: m.root, Home: s.Home, HomeExisted: tt.existed}); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(s.Home, 0o700); err != nil {
				t.Fatal(err)
			}
			if tt.content {
				write(t, filepath.Join(s.Home, "other-context", "key"), "x", 0o600)
			}
			if err := s.Down(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(s.Home); os.IsNotExist(err) != tt.wantGone {
				t.Fatalf("home gone: %t, want %t", os.IsNotExist(err), tt.wantGone)
			}
		})
	}
}

func TestInfoText(t *testing.T) {
	i := (&State{Started: time.Now(), Kubeconfig: "/run/gefyra-sandbox/kubeconfig", URL: "http://10.96.100.20:8080/",
		LocalDir: "/run/gefyra-sandbox/oauth2-demo-app"}).info()
	var b bytes.Buffer
	i.WriteText(&b, "export PATH=/src/bin:$PATH")
	for _, want := range []string{
		"  export KUBECONFIG=/run/gefyra-sandbox/kubeconfig\n",
		"  export LOCAL_DIR=/run/gefyra-sandbox/oauth2-demo-app\n",
		"  export PATH=/src/bin:$PATH\n",
		"  URL:    http://10.96.100.20:8080/  ",
		"  Login:  john@gefyra.dev, password john@gefyra.dev\n",
		"  Bug:    http://10.96.100.20:8080/items/123 answers 500",
		"\n  gefyra up\n",
		"\n  gefyra run -i gefyra.dev/oauth2-demo-dev:0.1.0 -N myfastapi-demo -n oauth2-demo -v $LOCAL_DIR:/app -c \"devloop -listen 0.0.0.0:5678\"\n",
		"\n  gefyra bridge -N myfastapi-demo -n oauth2-demo --deployment oauth2-demo --port 8155:8155 --container-name oauth2-demo-app -I myfastapi\n",
		"\n  gefyra down\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in:\n%s", want, b.String())
		}
	}
}

func TestCheckRootOfThisRepository(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckRoot(root); err != nil {
		t.Fatalf("the repository itself: %v", err)
	}
	if err := CheckRoot(t.TempDir()); err == nil {
		t.Fatal("an empty directory passed")
	}
}

func TestRestoreImages(t *testing.T) {
	const ls = "image ls --no-trunc --quiet --filter label=dev.gefyra.managed=true"
	tests := []struct {
		name string
		ds   DockerState
		now  string // gefyra's images in Docker
		want []string
	}{
		{
			name: "the development image was missing",
			ds:   DockerState{DevImageLoaded: "sha256:new", GefyraImages: []string{"sha256:a"}},
			now:  "sha256:a\n",
			want: []string{"image rm sha256:new", ls},
		},
		{
			name: "an older development image gets its tag back",
			ds:   DockerState{DevImageBefore: "sha256:old", DevImageLoaded: "sha256:new"},
			want: []string{"tag sha256:old " + DevImage, "image rm sha256:new", ls},
		},
		{
			name: "the same development image stays; agent images built since go",
			ds:   DockerState{DevImageBefore: "sha256:dev", DevImageLoaded: "sha256:dev", GefyraImages: []string{"sha256:a"}},
			now:  "sha256:b\nsha256:a\nsha256:c\n",
			want: []string{ls, "image rm sha256:b", "image rm sha256:c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeMachine(t)
			write(t, filepath.Join(m.bin, "images.now"), tt.now, 0o644)
			restoreImages(t, &tt.ds)
			b, err := os.ReadFile(filepath.Join(m.bin, "docker.log"))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Split(strings.TrimSpace(string(b)), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("docker calls\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestUpStartsWhatIsMissingAndUndoesItOnFailure: on a machine where
// neither Docker Engine nor the world runs, Up starts both (the snapshot
// first), and when a later step fails it stops both again and leaves no
// state behind.
func TestUpStartsWhatIsMissingAndUndoesItOnFailure(t *testing.T) {
	m := newFakeMachine(t)
	write(t, filepath.Join(m.bin, "docker.info"), "1", 0o644)
	write(t, filepath.Join(m.bin, "dockerd"), "#!/bin/sh\nexit 1\n", 0o755)
	m.set(t, "world.sh.status", "3")
	m.set(t, "snapshot.now", "## links\nlo\n")
	var out bytes.Buffer
	s := m.sandbox(t, &out)
	_, err := s.Up(context.Background())
	t.Logf("Up said:\n%s", out.String())
	// The fake world has no kubeconfig: the step after its start fails.
	if err == nil || !strings.Contains(err.Error(), "the test world: no kubeconfig") {
		t.Fatalf("Up: %v", err)
	}
	want := []string{"world.sh status", "docker.sh up", "snapshot.sh", "world.sh up",
		"world.sh status", "world.sh down", "snapshot.sh", "docker.sh down"}
	if got := m.calls(t); !reflect.DeepEqual(got, want) {
		t.Errorf("calls\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, said := range []string{"==> Starting Docker Engine (world/docker.sh up)", "==> Starting the test world",
		"==> `gefyra sandbox up` failed: removing what it started", "==> Stopping the test world", "    the machine is as it was",
		"==> Stopping Docker Engine"} {
		if !strings.Contains(out.String(), said) {
			t.Errorf("Up did not say %q", said)
		}
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("the state directory is left: %v", err)
	}
}

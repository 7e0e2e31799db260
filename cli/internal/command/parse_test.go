package command

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/cli/internal/state"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/bridge"
)

// parse runs the command line up to the parsed options, which it returns
// instead of running them.
func parse(t *testing.T, args ...string) (runner, *app) {
	t.Helper()
	env := Env{Getenv: func(k string) string {
		if k == "FROM_HOST" {
			return "host-value"
		}
		return ""
	}}
	env.fill()
	root, a := newRoot(env)
	var got runner
	a.capture = func(v any) { got = v.(runner) }
	root.SetArgs(args)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("gefyra %s: %v", strings.Join(args, " "), err)
	}
	if got == nil {
		t.Fatalf("gefyra %s: no command ran", strings.Join(args, " "))
	}
	return got, a
}

// The tutorial's command lines, as the shell hands them to gefyra.
func TestTutorialCommandLines(t *testing.T) {
	localDir := t.TempDir()
	const debugCmd = "python -m debugpy --wait-for-client --listen 0.0.0.0:5678 -m uvicorn main:app --host 0.0.0.0 --port 8155 --reload"

	t.Run("up", func(t *testing.T) {
		r, _ := parse(t, "up")
		o := r.(*upOptions)
		if o.install || o.endpoint != "" || o.mtu != 0 || o.lease != DefaultLease || o.timeout != 2*time.Minute {
			t.Fatalf("up = %+v, want the defaults", o)
		}
	})
	t.Run("run", func(t *testing.T) {
		r, a := parse(t, "run", "-i", "quay.io/gefyra/oauth2-demo", "-N", "myfastapi-demo",
			"-n", "oauth2-demo", "-v", localDir+":/app",
			"-c", "bash -c '"+debugCmd+"'")
		o := r.(*runOptions)
		want := local.RunSpec{
			Name:   "myfastapi-demo",
			Image:  "quay.io/gefyra/oauth2-demo",
			Cmd:    []string{"bash", "-c", debugCmd},
			Mounts: []local.Mount{{Source: localDir, Target: "/app"}},
			Role:   local.RoleContainer,
		}
		if !reflect.DeepEqual(o.spec, want) {
			t.Fatalf("run spec = %+v\nwant        %+v", o.spec, want)
		}
		if o.namespace != "oauth2-demo" || a.namespace != "oauth2-demo" {
			t.Fatalf("namespace = %q, want oauth2-demo", o.namespace)
		}
	})
	t.Run("bridge", func(t *testing.T) {
		r, _ := parse(t, "bridge", "-N", "myfastapi-demo", "-n", "oauth2-demo",
			"--deployment", "oauth2-demo",
			"--port", "8155:8155", "--container-name", "oauth2-demo-app",
			"-I", "myfastapi")
		o := r.(*bridgeOptions)
		if o.container != "myfastapi-demo" || o.namespace != "oauth2-demo" || o.kind != gefyrav1.KindDeployment ||
			o.workload != "oauth2-demo" || o.workloadContainer != "oauth2-demo-app" || o.name != "myfastapi" {
			t.Fatalf("bridge = %+v", o)
		}
		if !slices.Equal(o.ports, []bridge.PortMapping{{Remote: 8155, Local: 8155}}) || o.rules != nil {
			t.Fatalf("bridge ports %v rules %v, want 8155:8155 and no rules", o.ports, o.rules)
		}
	})
	t.Run("down", func(t *testing.T) {
		r, _ := parse(t, "down")
		if o := r.(*downOptions); o.timeout != 2*time.Minute {
			t.Fatalf("down = %+v", o)
		}
	})
}

func TestParse(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, r runner, a *app)
	}{
		{name: "up with every flag", args: []string{"up", "--install", "--endpoint", "10.0.0.1:31820", "--mtu", "8920", "--lease", "1h", "--timeout", "30s", "-o", "json",
			"--kubeconfig", "/k", "--context", "c"},
			check: func(t *testing.T, r runner, a *app) {
				o := r.(*upOptions)
				want := upOptions{install: true, endpoint: "10.0.0.1:31820", mtu: 8920, lease: time.Hour, timeout: 30 * time.Second, output: "json"}
				if *o != want || a.kubeconfig != "/k" || a.kubeContext != "c" {
					t.Fatalf("up = %+v (kubeconfig %q, context %q), want %+v", *o, a.kubeconfig, a.kubeContext, want)
				}
			}},
		{name: "run with ports, env and docker options", args: []string{"run", "-i", "myapp:dev", "-N", "app", "-p", "8080:8155", "-p", "0.0.0.0:5678:5678",
			"-p", "9000/udp", "--env", "A=1", "--env", "FROM_HOST", "--env-from", "deployment/backend/app", "--rm", "-v", dir + ":/src:ro", "-v", "cache:/cache",
			"--", "--workdir", "/src", "-e", "B=2", "--entrypoint", "/bin/app --verbose", "-l", "team=blue", "--add-host", "db:10.0.0.5", "--tmpfs", "/tmp:size=1m"},
			check: func(t *testing.T, r runner, _ *app) {
				o := r.(*runOptions)
				s := o.spec
				wantPorts := []local.PortBinding{
					{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 8155, Protocol: "tcp"},
					{HostIP: "0.0.0.0", HostPort: 5678, ContainerPort: 5678, Protocol: "tcp"},
					{HostIP: "127.0.0.1", ContainerPort: 9000, Protocol: "udp"},
				}
				if !reflect.DeepEqual(s.Ports, wantPorts) {
					t.Errorf("ports = %+v, want %+v", s.Ports, wantPorts)
				}
				if !slices.Equal(s.Env, []string{"A=1", "FROM_HOST=host-value", "B=2"}) {
					t.Errorf("env = %q", s.Env)
				}
				if *o.envRef != (cluster.EnvRef{Kind: gefyrav1.KindDeployment, Name: "backend", Container: "app"}) {
					t.Errorf("env-from = %+v", o.envRef)
				}
				wantMounts := []local.Mount{{Source: dir, Target: "/src", ReadOnly: true}, {Source: "cache", Target: "/cache"}}
				if !reflect.DeepEqual(s.Mounts, wantMounts) {
					t.Errorf("mounts = %+v", s.Mounts)
				}
				if !s.AutoRemove || s.WorkingDir != "/src" || !slices.Equal(s.Entrypoint, []string{"/bin/app", "--verbose"}) ||
					s.Labels["team"] != "blue" || !slices.Equal(s.ExtraHosts, []string{"db:10.0.0.5"}) || s.Tmpfs["/tmp"] != "size=1m" || s.Cmd != nil {
					t.Errorf("spec = %+v", s)
				}
			}},
		{name: "run makes a name", args: []string{"run", "-i", "quay.io/gefyra/oauth2-demo:1.2"},
			check: func(t *testing.T, r runner, _ *app) {
				if n := r.(*runOptions).spec.Name; !strings.HasPrefix(n, "oauth2-demo-") || len(n) != len("oauth2-demo-")+6 {
					t.Fatalf("name = %q, want oauth2-demo-XXXXXX", n)
				}
			}},
		{name: "bridge with rules", args: []string{"bridge", "-N", "app", "--statefulset", "db", "-p", "5432", "--port", "8080:8000",
			"--match-header", "x-user:john", "--match-header", "x-debug: 1", "--match-path", "/items", "--match-path", "/api", "--timeout", "10s", "--ttl", "1h"},
			check: func(t *testing.T, r runner, _ *app) {
				o := r.(*bridgeOptions)
				h := []bridge.HeaderMatch{{Name: "x-user", Type: bridge.Exact, Value: "john"}, {Name: "x-debug", Type: bridge.Exact, Value: "1"}}
				want := []bridge.Rule{
					{Headers: h, Path: &bridge.PathMatch{Type: bridge.Prefix, Value: "/items"}},
					{Headers: h, Path: &bridge.PathMatch{Type: bridge.Prefix, Value: "/api"}},
				}
				if o.kind != gefyrav1.KindStatefulSet || o.workload != "db" || o.timeout != 10*time.Second || o.ttl != time.Hour {
					t.Errorf("bridge = %+v", o)
				}
				if !slices.Equal(o.ports, []bridge.PortMapping{{Remote: 5432, Local: 5432}, {Remote: 8080, Local: 8000}}) {
					t.Errorf("ports = %v", o.ports)
				}
				if !reflect.DeepEqual(o.rules, want) {
					t.Errorf("rules = %+v, want %+v", o.rules, want)
				}
			}},
		{name: "bridge headers only", args: []string{"bridge", "-N", "app", "--pod", "web-0", "--port", "80:8080", "--match-header", "x-user:john"},
			check: func(t *testing.T, r runner, _ *app) {
				o := r.(*bridgeOptions)
				if o.kind != gefyrav1.KindPod || len(o.rules) != 1 || o.rules[0].Path != nil || len(o.rules[0].Headers) != 1 {
					t.Fatalf("bridge = %+v", o)
				}
			}},
		{name: "unbridge one", args: []string{"unbridge", "-I", "myfastapi", "-n", "oauth2-demo"},
			check: func(t *testing.T, r runner, _ *app) {
				if o := r.(*unbridgeOptions); o.name != "myfastapi" || o.all || o.namespace != "oauth2-demo" {
					t.Fatalf("unbridge = %+v", o)
				}
			}},
		{name: "unbridge all", args: []string{"unbridge", "--all"},
			check: func(t *testing.T, r runner, _ *app) {
				if o := r.(*unbridgeOptions); !o.all || o.name != "" {
					t.Fatalf("unbridge = %+v", o)
				}
			}},
		{name: "list json", args: []string{"list", "-o", "json"},
			check: func(t *testing.T, r runner, _ *app) {
				if o := r.(*listOptions); o.output != "json" {
					t.Fatalf("list = %+v", o)
				}
			}},
		{name: "status yaml", args: []string{"status", "-o", "yaml"},
			check: func(t *testing.T, r runner, _ *app) {
				if o := r.(*statusOptions); o.output != "yaml" {
					t.Fatalf("status = %+v", o)
				}
			}},
		{name: "version", args: []string{"version"},
			check: func(t *testing.T, r runner, _ *app) { _ = r.(*versionOptions) }},
		{name: "agent", args: []string{"agent", "--config", "/etc/gefyra/agent.json", "--status-addr", "127.0.0.1:8099"},
			check: func(t *testing.T, r runner, _ *app) {
				if o := r.(*agentOptions); o.ConfigFile != "/etc/gefyra/agent.json" || o.StatusAddr != "127.0.0.1:8099" {
					t.Fatalf("agent = %+v", o)
				}
			}},
		{name: "agent status", args: []string{"agent", "status", "--addr", "127.0.0.1:8099"},
			check: func(t *testing.T, r runner, _ *app) {
				if o := r.(*agentStatusOptions); o.addr != "127.0.0.1:8099" {
					t.Fatalf("agent status = %+v", o)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, a := parse(t, tt.args...)
			tt.check(t, r, a)
		})
	}
}

// Bad input: exit code 2 and one line that says what is wrong.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown command", args: []string{"brige"}, want: `unknown command "brige"`},
		{name: "unknown flag", args: []string{"run", "--imag", "x"}, want: "unknown flag: --imag"},
		{name: "run without image", args: []string{"run", "-N", "x"}, want: "-i/--image is required"},
		{name: "bad image", args: []string{"run", "-i", "UPPER/Case"}, want: "not a valid image reference"},
		{name: "bad container name", args: []string{"run", "-i", "x", "-N", "-bad"}, want: `-N "-bad": a container name`},
		{name: "shell syntax in -c", args: []string{"run", "-i", "x", "-c", "make && ./app"}, want: `only a shell understands`},
		{name: "unterminated quote in -c", args: []string{"run", "-i", "x", "-c", "bash -c 'echo"}, want: "unterminated single quote"},
		{name: "empty -c", args: []string{"run", "-i", "x", "-c", "   "}, want: "-c is empty"},
		{name: "missing volume source", args: []string{"run", "-i", "x", "-v", dir + "/nope:/app"}, want: "does not exist on this machine"},
		{name: "empty volume source", args: []string{"run", "-i", "x", "-v", ":/app"}, want: "is $LOCAL_DIR set?"},
		{name: "relative volume target", args: []string{"run", "-i", "x", "-v", dir + ":app"}, want: "must be an absolute path"},
		{name: "volume without target", args: []string{"run", "-i", "x", "-v", dir}, want: "want SRC:DST[:ro]"},
		{name: "bad port", args: []string{"run", "-i", "x", "-p", "80:http"}, want: `container port: "http" is not a port`},
		{name: "env without name", args: []string{"run", "-i", "x", "--env", "=1"}, want: "the name is empty"},
		{name: "env not set here", args: []string{"run", "-i", "x", "--env", "NOT_SET_ANYWHERE"}, want: "is not set here"},
		{name: "bad env-from", args: []string{"run", "-i", "x", "--env-from", "job/x"}, want: `unknown workload kind "job"`},
		{name: "stray argument", args: []string{"run", "-i", "x", "python"}, want: `unexpected argument "python"`},
		{name: "unsupported docker option", args: []string{"run", "-i", "x", "--", "--privileged"}, want: "gefyra run supports --entrypoint"},
		{name: "gefyra label", args: []string{"run", "-i", "x", "--", "-l", "dev.gefyra.managed=false"}, want: "dev.gefyra.* labels are gefyra's own"},
		{name: "bridge without -N", args: []string{"bridge", "--deployment", "d", "--port", "1:1"}, want: "-N is required"},
		{name: "bridge without workload", args: []string{"bridge", "-N", "x", "--port", "1:1"}, want: "name the workload to bridge"},
		{name: "bridge with two workloads", args: []string{"bridge", "-N", "x", "--deployment", "a", "--pod", "b", "--port", "1:1"}, want: "name one workload, not 2"},
		{name: "bridge without port", args: []string{"bridge", "-N", "x", "--deployment", "a"}, want: "--port is required"},
		{name: "bridge bad port", args: []string{"bridge", "-N", "x", "--deployment", "a", "--port", "8155:0"}, want: "out of range 1-65535"},
		{name: "bridge port twice", args: []string{"bridge", "-N", "x", "--deployment", "a", "--port", "80:1", "--port", "80:2"}, want: "remote port 80 is mapped twice"},
		{name: "bridge bad header", args: []string{"bridge", "-N", "x", "--deployment", "a", "--port", "80", "--match-header", "x-user"}, want: "want name:value"},
		{name: "bridge bad path", args: []string{"bridge", "-N", "x", "--deployment", "a", "--port", "80", "--match-path", "items"}, want: "must start with /"},
		{name: "bridge bad name", args: []string{"bridge", "-N", "x", "--deployment", "a", "--port", "80", "-I", "My_Bridge"}, want: `-I "My_Bridge"`},
		{name: "bridge bad workload", args: []string{"bridge", "-N", "x", "--deployment", "A", "--port", "80"}, want: `"A" is not a valid workload name`},
		{name: "bridge bad ttl", args: []string{"bridge", "-N", "x", "--deployment", "a", "--port", "80", "--ttl", "1s"}, want: "--ttl 1s: want 10s-168h"},
		{name: "unbridge without name", args: []string{"unbridge"}, want: "name the bridge with -I"},
		{name: "unbridge name and all", args: []string{"unbridge", "-I", "x", "--all"}, want: "exclude each other"},
		{name: "list bad output", args: []string{"list", "-o", "xml"}, want: `--output "xml": want json or yaml`},
		{name: "up bad mtu", args: []string{"up", "--mtu", "100"}, want: "--mtu 100: want 1280-"},
		{name: "up bad endpoint", args: []string{"up", "--endpoint", "10.0.0.1"}, want: "want HOST:PORT"},
		{name: "up bad lease", args: []string{"up", "--lease", "48h"}, want: "want 10s-24h"},
		{name: "down with argument", args: []string{"down", "now"}, want: "takes no arguments"},
		{name: "agent without config", args: []string{"agent"}, want: "--config is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tt.args, Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
			if code != ExitUsage {
				t.Errorf("exit code %d, want %d", code, ExitUsage)
			}
			out := stderr.String()
			if !strings.HasPrefix(out, "[ERROR] ") || strings.Count(out, "\n") != 1 {
				t.Errorf("stderr = %q, want one [ERROR] line", out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("stderr = %q, want it to say %q", out, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"A=1", "B=2"}, []string{"B=3", "C=4"})
	if !slices.Equal(got, []string{"A=1", "B=3", "C=4"}) {
		t.Fatalf("mergeEnv = %q", got)
	}
}

func TestPortsString(t *testing.T) {
	tests := []struct {
		name  string
		ports []state.Port
		want  string
	}{
		{name: "HTTP", ports: []state.Port{{Remote: 8155, Local: 8155, Tunnel: 8155}}, want: "8155:8155"},
		{name: "TCP", ports: []state.Port{{Remote: 5432, Local: 5432, Tunnel: 5432, Protocol: bridge.ProtocolTCP}}, want: "5432:5432/tcp"},
		{name: "another tunnel port", ports: []state.Port{{Remote: 80, Local: 8155, Tunnel: 8156}, {Remote: 5432, Local: 5433, Tunnel: 5434, Protocol: bridge.ProtocolTCP}},
			want: "80:8155 (tunnel 8156),5432:5433/tcp (tunnel 5434)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := portsString(tt.ports); got != tt.want {
				t.Fatalf("portsString = %q, want %q", got, tt.want)
			}
		})
	}
}

package command

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/cli/internal/agent/netns"
	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/cli/internal/localagent"
	"gefyra.dev/gefyra/cli/internal/shellwords"
	"gefyra.dev/gefyra/internal/logging"
)

type runOptions struct {
	// As typed.
	image     string
	name      string
	volumes   []string
	command   string
	ports     []string
	env       []string
	envFrom   string
	rm        bool
	output    string
	namespace string // -n, empty: the context's

	// Parsed.
	spec    local.RunSpec
	envRef  *cluster.EnvRef
	argv    []string
	getenv  func(string) string
	extraDk []string // the docker options after --
}

// supportedDockerArgs are the `docker run` options accepted after --.
const supportedDockerArgs = "--entrypoint, -w/--workdir, -u/--user, -e/--env, -l/--label, --cap-add, --add-host, --tmpfs, -p/--publish, -v/--volume"

func newRunCmd(a *app) *cobra.Command {
	o := runOptions{}
	cmd := &cobra.Command{
		Use:   "run -i IMAGE [-N NAME] [-n NAMESPACE] [-v SRC:DST] [-c CMD] [-- DOCKER-OPTIONS]",
		Short: "Start a local container that bridges can send cluster traffic to",
		Long: `run starts a Docker container from a local image on the gefyra network, where
the local agent reaches it by name, and prints its IP address (e.g. for a
debugger). -c is split into arguments the way a shell quotes them, but no
shell runs it (images FROM scratch have none): use -c "sh -c '...'" for
pipes, && and variables. -p binds to 127.0.0.1 unless an address is given.

Once gefyra is up, the container reaches the cluster's Services and Pods
through the tunnel, by address and by name as a Pod of the namespace (-n)
would: svc, svc.ns and svc.ns.svc.cluster.local. It needs no privileges
for that: it lives in the network namespace of a small companion container
(NAME-netns) that routes the cluster's networks to the agent and resolves
with the cluster DNS; both go together. With --rm the container shares the
companion's PID namespace too, and the companion ends with it.

A few docker run options may follow -- : ` + supportedDockerArgs + `.`,
		Example: `  gefyra run -i quay.io/gefyra/oauth2-demo -N myfastapi-demo -n oauth2-demo \
      -v $LOCAL_DIR:/app \
      -c "bash -c 'python -m debugpy --wait-for-client --listen 0.0.0.0:5678 -m uvicorn main:app --host 0.0.0.0 --port 8155 --reload'"
  gefyra run -i myapp:dev -N myapp --env-from deployment/myapp/app -- --workdir /src`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.namespace = a.namespace
			o.getenv = a.env.Getenv
			dash := cmd.ArgsLenAtDash()
			if dash < 0 {
				if len(args) > 0 {
					return usagef("unexpected argument %q: give the command with -c, docker options after --", args[0])
				}
			} else {
				if dash > 0 {
					return usagef("unexpected argument %q: give the command with -c, docker options after --", args[0])
				}
				o.extraDk = args[dash:]
			}
			if err := o.parse(); err != nil {
				return err
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.image, "image", "i", "", "the image to run (must be present locally)")
	f.StringVarP(&o.name, "name", "N", "", "the container's name (default: made from the image's)")
	f.StringArrayVarP(&o.volumes, "volume", "v", nil, "bind mount SRC:DST[:ro] (repeatable)")
	f.StringVarP(&o.command, "command", "c", "", "the command to run, quoted like a shell command line")
	f.StringArrayVarP(&o.ports, "port", "p", nil, "publish [HOST-IP:]HOST-PORT:CONTAINER-PORT[/udp] (repeatable)")
	f.StringArrayVar(&o.env, "env", nil, "set K=V in the container (repeatable; K alone copies it from here)")
	f.StringVar(&o.envFrom, "env-from", "", "copy the environment of a cluster container: deployment/NAME[/CONTAINER] (also statefulset/, pod/)")
	f.BoolVar(&o.rm, "rm", false, "remove the container when it exits")
	outputFlag(f, &o.output)
	return cmd
}

var containerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// parse checks everything that can be checked without Docker and builds
// the container's spec, so bad input fails before anything is made.
func (o *runOptions) parse() error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	if o.image == "" {
		return usagef("-i/--image is required")
	}
	if err := checkImageRef(o.image); err != nil {
		return usagef("-i %q: %v", o.image, err)
	}
	if o.name == "" {
		o.name = defaultName(o.image)
	}
	if !containerName.MatchString(o.name) || len(o.name) > 128 {
		return usagef("-N %q: a container name is letters, digits, '_', '.' and '-', starting with a letter or digit", o.name)
	}
	o.spec = local.RunSpec{Name: o.name, Image: o.image, AutoRemove: o.rm, Role: local.RoleContainer}
	if o.command != "" {
		argv, err := shellwords.Split(o.command)
		if err != nil {
			return usagef("-c: %v", err)
		}
		if len(argv) == 0 {
			return usagef("-c is empty")
		}
		o.argv = argv
		o.spec.Cmd = argv
	}
	for _, v := range o.volumes {
		m, err := parseVolume(v)
		if err != nil {
			return usagef("-v %q: %v", v, err)
		}
		o.spec.Mounts = append(o.spec.Mounts, m)
	}
	for _, p := range o.ports {
		b, err := parsePublish(p)
		if err != nil {
			return usagef("-p %q: %v", p, err)
		}
		o.spec.Ports = append(o.spec.Ports, b)
	}
	for _, e := range o.env {
		kv, err := parseEnv(e, o.getenv)
		if err != nil {
			return usagef("--env %q: %v", e, err)
		}
		o.spec.Env = append(o.spec.Env, kv)
	}
	if o.envFrom != "" {
		ref, err := cluster.ParseEnvRef(o.envFrom)
		if err != nil {
			return usageError{err}
		}
		o.envRef = &ref
	}
	return o.parseDockerArgs()
}

func (o *runOptions) parseDockerArgs() error {
	if len(o.extraDk) == 0 {
		return nil
	}
	fs := pflag.NewFlagSet("docker options", pflag.ContinueOnError)
	fs.SetOutput(discard{})
	var (
		entrypoint, workdir, user string
		env, labels, capAdd       []string
		hosts, tmpfs, publish     []string
		volumes                   []string
	)
	fs.StringVar(&entrypoint, "entrypoint", "", "")
	fs.StringVarP(&workdir, "workdir", "w", "", "")
	fs.StringVarP(&user, "user", "u", "", "")
	fs.StringArrayVarP(&env, "env", "e", nil, "")
	fs.StringArrayVarP(&labels, "label", "l", nil, "")
	fs.StringArrayVar(&capAdd, "cap-add", nil, "")
	fs.StringArrayVar(&hosts, "add-host", nil, "")
	fs.StringArrayVar(&tmpfs, "tmpfs", nil, "")
	fs.StringArrayVarP(&publish, "publish", "p", nil, "")
	fs.StringArrayVarP(&volumes, "volume", "v", nil, "")
	if err := fs.Parse(o.extraDk); err != nil {
		return usagef("docker options after --: %v (gefyra run supports %s)", err, supportedDockerArgs)
	}
	if fs.NArg() > 0 {
		return usagef("docker options after --: unexpected argument %q: give the command with -c", fs.Arg(0))
	}
	if fs.Changed("entrypoint") {
		if entrypoint == "" {
			o.spec.Entrypoint = []string{""}
		} else {
			argv, err := shellwords.Split(entrypoint)
			if err != nil || len(argv) == 0 {
				return usagef("--entrypoint %q: %v", entrypoint, err)
			}
			o.spec.Entrypoint = argv
		}
	}
	o.spec.WorkingDir, o.spec.User = workdir, user
	if workdir != "" && !path.IsAbs(workdir) {
		return usagef("--workdir %q must be an absolute path", workdir)
	}
	for _, e := range env {
		kv, err := parseEnv(e, o.getenv)
		if err != nil {
			return usagef("--env %q: %v", e, err)
		}
		o.spec.Env = append(o.spec.Env, kv)
	}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if k == "" || strings.HasPrefix(k, "dev.gefyra.") {
			return usagef("--label %q: want KEY=VALUE, and dev.gefyra.* labels are gefyra's own", l)
		}
		if o.spec.Labels == nil {
			o.spec.Labels = map[string]string{}
		}
		o.spec.Labels[k] = v
	}
	o.spec.CapAdd = capAdd
	for _, h := range hosts {
		name, ip, ok := strings.Cut(h, ":")
		if !ok || name == "" || ip == "" {
			return usagef("--add-host %q: want NAME:IP", h)
		}
	}
	o.spec.ExtraHosts = hosts
	for _, t := range tmpfs {
		dst, opts, _ := strings.Cut(t, ":")
		if !path.IsAbs(dst) {
			return usagef("--tmpfs %q: want an absolute path[:options]", t)
		}
		if o.spec.Tmpfs == nil {
			o.spec.Tmpfs = map[string]string{}
		}
		o.spec.Tmpfs[dst] = opts
	}
	for _, p := range publish {
		b, err := parsePublish(p)
		if err != nil {
			return usagef("--publish %q: %v", p, err)
		}
		o.spec.Ports = append(o.spec.Ports, b)
	}
	for _, v := range volumes {
		m, err := parseVolume(v)
		if err != nil {
			return usagef("--volume %q: %v", v, err)
		}
		o.spec.Mounts = append(o.spec.Mounts, m)
	}
	return nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// checkImageRef accepts what `docker run` accepts: a reference
// (quay.io/gefyra/oauth2-demo, myapp:dev, name@sha256:...) or an image ID.
func checkImageRef(s string) error {
	if isImageID(s) {
		return nil
	}
	if _, err := reference.ParseNormalizedNamed(s); err != nil {
		return fmt.Errorf("not a valid image reference: %v", err)
	}
	return nil
}

var imageID = regexp.MustCompile(`^(sha256:)?[a-f0-9]{12,64}$`)

func isImageID(s string) bool { return imageID.MatchString(s) && !strings.Contains(s, "/") }

// defaultName makes a container name from the image's last path element.
func defaultName(image string) string {
	base := image
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	if i := strings.IndexAny(base, ":@"); i >= 0 {
		base = base[:i]
	}
	base = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, base)
	if base == "" || !containerName.MatchString(base) {
		base = "gefyra"
	}
	if len(base) > 100 {
		base = base[:100]
	}
	b := make([]byte, 3)
	rand.Read(b)
	return base + "-" + hex.EncodeToString(b)
}

// parseVolume reads SRC:DST[:ro|rw]. A SRC that looks like a path (it
// starts with /, ., or ~) must exist and is made absolute; anything else
// is a named Docker volume.
func parseVolume(s string) (local.Mount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return local.Mount{}, errors.New("want SRC:DST[:ro]")
	}
	src, dst := parts[0], parts[1]
	m := local.Mount{Target: dst}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return local.Mount{}, fmt.Errorf("option %q: want ro or rw", parts[2])
		}
	}
	if src == "" {
		return local.Mount{}, errors.New("the source is empty (is $LOCAL_DIR set?)")
	}
	if !path.IsAbs(dst) {
		return local.Mount{}, fmt.Errorf("the target %q must be an absolute path in the container", dst)
	}
	if strings.HasPrefix(src, "/") || strings.HasPrefix(src, ".") || strings.HasPrefix(src, "~") {
		if strings.HasPrefix(src, "~/") || src == "~" {
			home, err := os.UserHomeDir()
			if err != nil {
				return local.Mount{}, err
			}
			src = filepath.Join(home, strings.TrimPrefix(src, "~"))
		}
		abs, err := filepath.Abs(src)
		if err != nil {
			return local.Mount{}, err
		}
		if _, err := os.Stat(abs); err != nil {
			return local.Mount{}, fmt.Errorf("%s does not exist on this machine", abs)
		}
		m.Source = abs
		return m, nil
	}
	if !containerName.MatchString(src) {
		return local.Mount{}, fmt.Errorf("%q is neither a path (start it with / or ./) nor a volume name", src)
	}
	m.Source = src
	return m, nil
}

// parsePublish reads [HOST-IP:]HOST-PORT:CONTAINER-PORT[/PROTO] or
// CONTAINER-PORT[/PROTO] (a free host port). The host IP defaults to
// 127.0.0.1: a development container is not for the network.
func parsePublish(s string) (local.PortBinding, error) {
	b := local.PortBinding{HostIP: "127.0.0.1", Protocol: "tcp"}
	spec, proto, hasProto := strings.Cut(s, "/")
	if hasProto {
		if proto != "tcp" && proto != "udp" {
			return b, fmt.Errorf("protocol %q: want tcp or udp", proto)
		}
		b.Protocol = proto
	}
	parts := strings.Split(spec, ":")
	var hostPort, ctrPort string
	switch len(parts) {
	case 1:
		ctrPort = parts[0]
	case 2:
		hostPort, ctrPort = parts[0], parts[1]
	case 3:
		ip, err := netip.ParseAddr(parts[0])
		if err != nil || !ip.Is4() {
			return b, fmt.Errorf("host address %q: want an IPv4 address", parts[0])
		}
		b.HostIP = parts[0]
		hostPort, ctrPort = parts[1], parts[2]
	default:
		return b, errors.New("want [HOST-IP:]HOST-PORT:CONTAINER-PORT")
	}
	c, err := parsePort(ctrPort)
	if err != nil {
		return b, fmt.Errorf("container port: %v", err)
	}
	b.ContainerPort = c
	if hostPort != "" {
		h, err := parsePort(hostPort)
		if err != nil {
			return b, fmt.Errorf("host port: %v", err)
		}
		b.HostPort = h
	}
	return b, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(n), nil
}

// parseEnv reads K=V, or K alone for this machine's value of K.
func parseEnv(s string, getenv func(string) string) (string, error) {
	k, _, hasValue := strings.Cut(s, "=")
	if k == "" {
		return "", errors.New("the name is empty: want NAME=VALUE")
	}
	if strings.ContainsAny(k, " \t\n\x00") {
		return "", fmt.Errorf("%q is not a variable name", k)
	}
	if hasValue {
		return s, nil
	}
	if getenv == nil || getenv(k) == "" {
		return "", fmt.Errorf("%s is not set here: write %s=VALUE", k, k)
	}
	return k + "=" + getenv(k), nil
}

type runResult struct {
	local.Container
	Command []string `json:"command,omitempty"`
}

func (o *runOptions) run(ctx context.Context, a *app) error {
	u := a.ui
	eng, err := a.docker(ctx)
	if err != nil {
		return err
	}
	defer eng.Close()
	ns := o.namespace
	if o.envRef != nil {
		cl, err := a.cluster(ctx)
		if err != nil {
			return err
		}
		if ns == "" {
			ns = cl.Namespace
		}
		vals, warnings, err := cl.Env(ctx, ns, *o.envRef)
		if err != nil {
			return fmt.Errorf("--env-from %s: %w", o.envFrom, err)
		}
		for _, w := range warnings {
			u.Warn("--env-from %s: %s", o.envFrom, w)
		}
		o.spec.Env = mergeEnv(vals, o.spec.Env)
		u.Info("Copied %d environment variables from %s in namespace %s", len(vals), o.envFrom, ns)
	}
	if ns == "" {
		if cl, err := a.loadCluster(); err == nil {
			ns = cl.Namespace
		} else {
			ns = "default"
		}
	}
	o.spec.Namespace = ns
	for k, v := range a.env.Labels {
		if o.spec.Labels == nil {
			o.spec.Labels = map[string]string{}
		}
		o.spec.Labels[k] = v
	}
	created, err := eng.EnsureNetwork(ctx)
	if err != nil {
		return err
	}
	c, err := o.start(ctx, a, eng)
	if err != nil {
		if created {
			eng.RemoveNetwork(context.WithoutCancel(ctx))
		}
		return err
	}
	u.Info("Container %s is running at %s (namespace %s)", c.Name, c.IP, ns)
	if o.output != "" {
		return printResult(a.env.Stdout, o.output, runResult{Container: c, Command: o.argv})
	}
	return nil
}

// start starts the container: in a network namespace that reaches the
// cluster through the tunnel if the local agent offers that, else plainly
// on the gefyra network.
func (o *runOptions) start(ctx context.Context, a *app, eng *local.Engine) (local.Container, error) {
	ag, eg, why := o.egress(ctx, a, eng)
	if ag == nil {
		if why != "" {
			a.ui.Warn("%s does not reach the cluster's Services by name: %s", o.spec.Name, why)
		}
		return eng.Run(ctx, o.spec)
	}
	c, err := ag.RunInNetns(ctx, o.spec, eg)
	if err != nil {
		return local.Container{}, err
	}
	a.ui.Info("%s reaches the cluster's Services by name through the tunnel (DNS %s, search %s)", c.Name, eg.DNS,
		strings.Join(eg.Info().SearchDomains(o.spec.Namespace), " "))
	return c, nil
}

// egress asks the local agent for its way into the cluster; why says why
// there is none, if that is worth a warning (not without `gefyra up`).
//
// The networks and the DNS come from stowaway, which is configured with
// the cluster's Service and Pod networks (its --egress-networks) and
// reads the cluster DNS from its Pod's resolv.conf; the agent asks it
// through the tunnel. So the CLI needs no rights to read Nodes,
// ServiceCIDRs or kube-system, and routes exactly what stowaway carries.
func (o *runOptions) egress(ctx context.Context, a *app, eng *local.Engine) (*localagent.Agent, agent.EgressStatus, string) {
	cl, err := a.loadCluster()
	if err != nil {
		return nil, agent.EgressStatus{}, ""
	}
	dir, err := a.stateDir(cl)
	if err != nil {
		return nil, agent.EgressStatus{}, err.Error()
	}
	ag, err := a.agent(eng, dir, cl.Context)
	if err != nil {
		return nil, agent.EgressStatus{}, err.Error()
	}
	if c, ok, err := ag.Container(ctx); err != nil {
		return nil, agent.EgressStatus{}, err.Error()
	} else if !ok || !c.Running() {
		return nil, agent.EgressStatus{}, ""
	}
	eg, err := ag.Egress(ctx, localagent.DefaultEgressWait)
	if err != nil {
		return nil, agent.EgressStatus{}, err.Error()
	}
	switch eg.State {
	case agent.EgressReady:
		if len(localagent.Networks(eg)) == 0 {
			return nil, eg, "the cluster announces no IPv4 networks, and Docker's networks are IPv4"
		}
		return ag, eg, ""
	case agent.EgressOff, "": // "": an agent of an older gefyra
		return nil, eg, "the local agent runs without it (run `gefyra up` again to update it)"
	case agent.EgressWaiting:
		return nil, eg, "the local agent is still asking stowaway for it: " + eg.Error
	default:
		return nil, eg, eg.Error
	}
}

type netnsOptions struct {
	netns.Options
	networks            []string
	logLevel, logFormat string
}

// newAgentNetnsCmd is the hidden `gefyra agent netns`: the process of the
// container that holds a local container's network namespace (see
// cli/internal/agent/netns and cli/internal/localagent).
func newAgentNetnsCmd(a *app) *cobra.Command {
	o := netnsOptions{}
	cmd := &cobra.Command{
		Use:   "netns --agent NAME --network CIDR...",
		Short: "Route the cluster's networks to the agent (inside a local container's network namespace holder)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Agent == "" {
				return usagef("--agent is required")
			}
			if len(o.networks) == 0 {
				return usagef("--network is required")
			}
			for _, n := range o.networks {
				p, err := netip.ParsePrefix(n)
				if err != nil {
					return usagef("--network %q: %v", n, err)
				}
				o.Networks = append(o.Networks, p.Masked())
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Agent, "agent", "", "the agent container's name on the Docker network (or its address)")
	f.StringArrayVar(&o.networks, "network", nil, "a network to route to the agent (repeatable)")
	f.BoolVar(&o.ExitWhenAlone, "exit-when-alone", false, "end once the processes of the containers sharing this PID namespace are gone")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "", "json or text (default: text on a terminal, else json)")
	return cmd
}

func (o *netnsOptions) run(ctx context.Context, a *app) error {
	log, err := logging.New(logging.Options{Level: o.logLevel, Format: o.logFormat, Out: a.env.Stderr})
	if err != nil {
		return usageError{err}
	}
	opts := o.Options
	opts.Log = log
	return netns.Run(ctx, opts)
}

// mergeEnv returns base with over applied: a variable set in both keeps
// base's place and takes over's value.
func mergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	index := map[string]int{}
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		index[k] = i
	}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			out[i] = kv
			continue
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	return out
}

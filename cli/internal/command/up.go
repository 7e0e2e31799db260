package command

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/install"
	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/cli/internal/localagent"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/deploy"
	"gefyra.dev/gefyra/internal/bridge"
	"gefyra.dev/gefyra/internal/wgnet"
)

// DefaultLease is the lease `gefyra up` asks for.
//
// The heartbeat is renewed by every gefyra command that talks to the
// cluster, not by the agent: the agent container holds no cluster
// credentials (copying the developer's kubeconfig into a container breaks
// with exec plugins and widens what a container can do). So the lease
// must outlast a working session without commands. A long lease costs
// little: while the tunnel is down carrier sends the bridged traffic to the
// fallback clone, and `gefyra down` (or the lease) restores the workload.
const DefaultLease = 8 * time.Hour

type upOptions struct {
	install  bool
	endpoint string
	mtu      int
	lease    time.Duration
	timeout  time.Duration
	output   string
}

func newUpCmd(a *app) *cobra.Command {
	o := upOptions{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Connect this machine to the cluster: register as a client and start the local agent",
		Long: `up checks that gefyra's add-on is in the cluster (--install applies it),
registers you as a GefyraClient with a WireGuard key made on this machine,
and starts the local agent as a Docker container that holds the tunnel to
the cluster's stowaway. Running it again is harmless.`,
		Example: "  gefyra up\n  gefyra up --install\n  gefyra up --endpoint 192.168.1.10:31820",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.install, "install", false, "install gefyra's add-on (CRDs, control plane, stowaway) if it is missing")
	f.StringVar(&o.endpoint, "endpoint", "", "stowaway's WireGuard endpoint HOST:PORT (default: announced by the cluster, else a node's InternalIP and the NodePort)")
	f.IntVar(&o.mtu, "mtu", 0, fmt.Sprintf("tunnel MTU (%d-%d; default %d)", wgnet.MinMTU, wgnet.MaxMTU, wgnet.DefaultMTU))
	f.DurationVar(&o.lease, "lease", DefaultLease, "how long the cluster keeps your bridges without hearing from gefyra (10s-24h)")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the control plane and the tunnel")
	outputFlag(f, &o.output)
	return cmd
}

func (o *upOptions) validate() error {
	if o.endpoint != "" {
		if err := checkEndpoint(o.endpoint); err != nil {
			return usagef("--endpoint %q: %v", o.endpoint, err)
		}
		if host, _, _ := net.SplitHostPort(o.endpoint); isLoopback(host) {
			return usagef("--endpoint %s is a loopback address: the agent runs in a Docker container, where that is the container itself; "+
				"give an address of this machine (or the cluster's) that Docker containers reach", o.endpoint)
		}
	}
	if o.mtu != 0 && (o.mtu < wgnet.MinMTU || o.mtu > wgnet.MaxMTU) {
		return usagef("--mtu %d: want %d-%d", o.mtu, wgnet.MinMTU, wgnet.MaxMTU)
	}
	if o.lease < 10*time.Second || o.lease > 24*time.Hour {
		return usagef("--lease %s: want 10s-24h", o.lease)
	}
	if o.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	return checkOutput(o.output)
}

func checkEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return errors.New("want HOST:PORT")
	}
	if host == "" {
		return errors.New("the host is empty")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q is not 1-65535", port)
	}
	return nil
}

type upResult struct {
	Context        string `json:"context"`
	Client         string `json:"client"`
	User           string `json:"user"`
	Address        string `json:"address"`
	Endpoint       string `json:"endpoint"`
	AgentContainer string `json:"agentContainer"`
	Network        string `json:"network"`
	// Egress is the local containers' way into the cluster, as the agent
	// reports it (state "ready", "waiting", "unavailable" or "off").
	Egress agent.EgressStatus `json:"egress"`
}

// reportEgress waits a little for the agent to learn from stowaway how
// local containers reach the cluster, and says how they do (or why they
// do not): what `gefyra run` will give a container.
func reportEgress(ctx context.Context, u *ui, ag *localagent.Agent) agent.EgressStatus {
	eg, err := ag.Egress(ctx, localagent.DefaultEgressWait)
	switch {
	case err != nil:
		u.Warn("Cannot ask the local agent whether local containers reach the cluster: %v", err)
	case eg.State == agent.EgressReady:
		nets := make([]string, len(eg.Networks))
		for i, n := range eg.Networks {
			nets[i] = n.String()
		}
		u.Info("Local containers reach the cluster through the tunnel: %s, DNS %s (%s)", strings.Join(nets, ", "), eg.DNS, eg.ClusterDomain)
	case eg.State == agent.EgressWaiting:
		u.Info("The local agent is still asking stowaway how local containers reach the cluster (%s); `gefyra status` shows when they do", eg.Error)
	case eg.State == agent.EgressUnavailable:
		u.Warn("Local containers will not reach the cluster's Services: %s", eg.Error)
	}
	return eg
}

func (o *upOptions) run(ctx context.Context, a *app) error {
	u := a.ui
	eng, err := a.docker(ctx)
	if err != nil {
		return err
	}
	defer eng.Close()
	cl, err := a.cluster(ctx)
	if err != nil {
		return err
	}
	if err := cl.CheckInstalled(ctx); err != nil {
		if !errors.Is(err, cluster.ErrNotInstalled) || !o.install {
			return err
		}
	}
	if o.install {
		u.Info("Installing gefyra's add-on into context %s", cl.Context)
		objs, err := install.Render(deploy.FS, ".")
		if err != nil {
			return fmt.Errorf("the embedded add-on: %w", err)
		}
		if err := install.Apply(ctx, cl.Rest, objs, func(s string) { u.Info("%s", s) }); err != nil {
			return fmt.Errorf("installing gefyra: %w (you may lack the rights: ask a cluster admin to run `gefyra up --install` or `kubectl apply -k deploy/`)", err)
		}
		u.Info("Applied %d objects", len(objs))
	}
	dir, err := a.stateDir(cl)
	if err != nil {
		return err
	}
	if err := a.checkAgentContext(ctx, eng, cl.Context); err != nil {
		return err
	}
	user, err := cl.WhoAmI(ctx)
	if err != nil {
		return err
	}
	name, err := bridge.ClientName(user)
	if err != nil {
		return err
	}
	key, err := dir.PrivateKey()
	if err != nil {
		return err
	}
	u.Info("Registering client %s (user %s)", name, user)
	if _, err := cl.RegisterClient(ctx, name, user, key.PublicKey().String(), o.lease); err != nil {
		return err
	}
	u.Info("Waiting for the control plane to give the client a tunnel address")
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	w := newWaiter(u, 3*time.Second)
	gc, err := cl.WaitClient(wctx, name, func(gc *gefyrav1.GefyraClient) {
		if r, m := cluster.ClientProblem(gc); r != "" {
			w.Update(fmt.Sprintf("Still waiting for a tunnel address: %s: %s", r, m))
		} else {
			w.Update("Still waiting for a tunnel address")
		}
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			why := "is gefyra-controlplane running? (kubectl -n gefyra get pods)"
			if p := cl.ControlPlaneProblem(ctx); p != "" {
				why = p
			} else if gc != nil {
				if r, m := cluster.ClientProblem(gc); r != "" {
					why = r + ": " + m
				}
			}
			return fmt.Errorf("the control plane did not give client %s a tunnel address within %s: %s", name, o.timeout, why)
		}
		return err
	}
	cfg, endpoint, err := o.agentConfig(ctx, cl, key, gc)
	if err != nil {
		return err
	}
	unlock, err := dir.Lock()
	if err != nil {
		return err
	}
	st, err := dir.Load()
	if err != nil {
		unlock()
		return err
	}
	if st.Client != "" && st.Client != name {
		st.Bridges = nil // another identity's bridges are not ours
	}
	st.Context, st.Server, st.User, st.Client = cl.Context, cl.Server, user, name
	st.Address, st.Endpoint = gc.Status.Address, endpoint
	cfg.Targets = st.Targets()
	err = dir.Save(st)
	unlock()
	if err != nil {
		return err
	}

	created, err := eng.EnsureNetwork(ctx)
	if err != nil {
		return err
	}
	if created {
		u.Info("Created Docker network %s", eng.Network())
	}
	ag, err := a.agent(eng, dir, cl.Context)
	if err != nil {
		return err
	}
	tag, built, err := ag.EnsureImage(ctx)
	if err != nil {
		return err
	}
	if built {
		u.Info("Built the agent image %s", tag)
	}
	started, err := ag.Start(ctx, cfg)
	if err != nil {
		return err
	}
	if started {
		u.Info("Started the local agent (container %s)", ag.ContainerName())
	}
	u.Info("Waiting for the tunnel to stowaway at %s", endpoint)
	wctx, cancel = context.WithTimeout(ctx, o.timeout)
	w = newWaiter(u, 5*time.Second)
	_, err = ag.WaitUp(wctx, func(s agent.Status, err error) {
		switch {
		case err != nil:
			w.Update("Still waiting for the agent: " + err.Error())
		case s.HandshakeAgeSeconds < 0:
			w.Update("Still waiting for the first WireGuard handshake with stowaway")
		default:
			w.Update("Still waiting for stowaway to answer through the tunnel")
		}
	})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			host, port, _ := net.SplitHostPort(endpoint)
			return fmt.Errorf("no WireGuard handshake with stowaway at %s within %s: make sure UDP port %s of %s is reachable from this machine (a firewall? is gefyra-stowaway running?), or pass --endpoint HOST:PORT; the agent's log: docker logs %s",
				endpoint, o.timeout, port, host, ag.ContainerName())
		}
		return err
	}
	u.Info("gefyra is up: client %s, tunnel address %s, stowaway %s", name, gc.Status.Address, endpoint)
	eg := reportEgress(ctx, u, ag)
	if o.output != "" {
		return printResult(a.env.Stdout, o.output, upResult{Context: cl.Context, Client: name, User: user, Address: gc.Status.Address,
			Endpoint: endpoint, AgentContainer: ag.ContainerName(), Network: eng.Network(), Egress: eg})
	}
	return nil
}

// agentConfig builds the agent's config from what the operator reported.
// Stowaway's endpoint: --endpoint, else the one the cluster announces,
// else a node's InternalIP and the NodePort of stowaway's UDP Service.
func (o *upOptions) agentConfig(ctx context.Context, cl *cluster.Cluster, key wgnet.Key, gc *gefyrav1.GefyraClient) (agent.Config, string, error) {
	sw := gc.Status.Stowaway
	addr, err := netip.ParseAddr(gc.Status.Address)
	if err != nil {
		return agent.Config{}, "", fmt.Errorf("the control plane gave an invalid tunnel address %q", gc.Status.Address)
	}
	pub, err := wgnet.ParseKey(sw.PublicKey)
	if err != nil {
		return agent.Config{}, "", fmt.Errorf("the control plane reported an invalid stowaway key: %v", err)
	}
	endpoint := o.endpoint
	if endpoint == "" {
		endpoint = sw.Endpoint
	}
	if endpoint == "" {
		endpoint, err = cl.StowawayNodePortEndpoint(ctx)
		if err != nil {
			return agent.Config{}, "", fmt.Errorf("cannot find stowaway's endpoint (%v): pass --endpoint HOST:PORT (a node's address and port %d)", err, cluster.DefaultStowawayNodePort)
		}
	}
	if err := checkEndpoint(endpoint); err != nil {
		return agent.Config{}, "", fmt.Errorf("stowaway's endpoint %q: %v: pass --endpoint HOST:PORT", endpoint, err)
	}
	if host, _, _ := net.SplitHostPort(endpoint); isLoopback(host) {
		a := "the agent runs in a Docker container, where %s is the container itself: pass --endpoint with an address of this machine that Docker containers reach"
		return agent.Config{}, "", fmt.Errorf("stowaway's endpoint %s is a loopback address; "+a, endpoint, host)
	}
	cfg := agent.Config{
		PrivateKey: key,
		Address:    addr,
		Stowaway:   agent.Stowaway{Endpoint: endpoint, PublicKey: pub},
		MTU:        o.mtu,
	}
	if sw.Address != "" {
		if a, err := netip.ParseAddr(sw.Address); err == nil {
			cfg.Stowaway.Address = a
		}
	}
	if sw.CIDR != "" {
		if p, err := netip.ParsePrefix(sw.CIDR); err == nil {
			cfg.Stowaway.AllowedIPs = []netip.Prefix{p.Masked()}
		}
	}
	return cfg, endpoint, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkAgentContext refuses to start a second agent while one serves
// another context: one Docker host runs one gefyra at a time.
func (a *app) checkAgentContext(ctx context.Context, eng *local.Engine, context string) error {
	c, ok, err := eng.Inspect(ctx, a.env.AgentName)
	if err != nil || !ok {
		return err
	}
	if other := c.Labels[local.LabelContext]; other != "" && other != context && c.Running() {
		return fmt.Errorf("gefyra is up for context %s on this machine: run `gefyra down --context %s` first", other, other)
	}
	return nil
}

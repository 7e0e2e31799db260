package localagent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/cli/internal/agent/netns"
	"gefyra.dev/gefyra/cli/internal/errmark"
	"gefyra.dev/gefyra/cli/internal/local"
)

// The egress on the developer's side (see cli/internal/agent): the agent
// container routes the cluster's networks into its TUN device EgressDevice,
// and every local container of `gefyra run` lives in a network namespace
// held by a small container of its own (NetnsName; the gefyra executable
// from the agent's image, `gefyra agent netns`, see
// cli/internal/agent/netns) that routes those networks to the agent and
// resolves names with the cluster DNS and the namespace's search list.
// The developer's container joins it (--network container:HOLDER) and so
// needs no privilege or tool of its own; the holder carries the local
// container's name as its network alias, so the agent reaches the local
// container by name as before, and its address is the local container's.

// EgressDevice is the agent container's TUN device.
const EgressDevice = "gefyra0"

// NetnsName is the name of the container that holds the network namespace
// of the local container name.
func NetnsName(name string) string { return name + "-netns" }

// NetnsCommand is the holder's command line: route networks to the agent
// container named agentName; with exitWhenAlone, end once the containers
// that share its PID namespace are gone.
func NetnsCommand(agentName string, networks []netip.Prefix, exitWhenAlone bool) []string {
	cmd := []string{"agent", "netns", "--agent", agentName}
	for _, p := range networks {
		cmd = append(cmd, "--network", p.String())
	}
	if exitWhenAlone {
		cmd = append(cmd, "--exit-when-alone")
	}
	return cmd
}

// Networks are the networks of eg a local container's namespace routes to
// the agent: the IPv4 ones, as Docker's networks are.
func Networks(eg agent.EgressStatus) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range eg.Networks {
		if p.Addr().Is4() {
			out = append(out, p)
		}
	}
	return out
}

// DefaultEgressWait bounds how long Egress waits for an agent that is
// still asking stowaway.
const DefaultEgressWait = 10 * time.Second

// Egress returns the running agent's egress once it is settled (ready,
// unavailable or off), waiting up to wait while the agent still asks
// stowaway.
func (a *Agent) Egress(ctx context.Context, wait time.Duration) (agent.EgressStatus, error) {
	deadline := time.Now().Add(wait)
	for {
		s, err := a.Status(ctx)
		if err != nil {
			return agent.EgressStatus{}, err
		}
		if s.Egress.State != agent.EgressWaiting || time.Now().After(deadline) {
			return s.Egress, nil
		}
		select {
		case <-ctx.Done():
			return s.Egress, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// DNSConfig is the resolver of a local container of namespace with
// egress eg: the cluster DNS and the search list kubelet gives a Pod in
// that namespace (with its ndots:5), so "svc", "svc.ns" and
// "svc.ns.svc.cluster.local" all resolve as they do in the cluster.
// Docker's own DNS stays the container's resolver: it answers the names
// of the containers on the gefyra network and forwards the rest to the
// cluster DNS, from the container's network namespace, so through the
// tunnel.
func DNSConfig(eg agent.EgressStatus, namespace string) (servers, search, options []string) {
	if !eg.DNS.IsValid() {
		return nil, nil, nil
	}
	return []string{eg.DNS.String()}, eg.Info().SearchDomains(namespace), []string{"ndots:5"}
}

// RunInNetns starts spec as a local container in a network namespace of
// its own that routes eg's networks to the agent: the holder first, then,
// once its routes are in, the container itself in its namespace. The
// holder takes the container's published ports and extra hosts (which
// belong to a network namespace); with spec.AutoRemove it also shares its
// PID namespace and ends with it. A failure leaves neither behind.
func (a *Agent) RunInNetns(ctx context.Context, spec local.RunSpec, eg agent.EgressStatus) (local.Container, error) {
	nets := Networks(eg)
	if eg.State != agent.EgressReady || len(nets) == 0 {
		return local.Container{}, errors.New("the agent has no way into the cluster's IPv4 networks")
	}
	eng := a.Engine
	if c, ok, err := eng.Inspect(ctx, spec.Name); err != nil {
		return local.Container{}, err
	} else if ok {
		return local.Container{}, errmark.New(local.ErrNameTaken, "a container named %s already exists (%s): remove it (docker rm -f %s) or choose another name",
			spec.Name, c.State, spec.Name)
	}
	ag, ok, err := a.Container(ctx)
	if err != nil {
		return local.Container{}, err
	}
	if !ok || !ag.Running() {
		return local.Container{}, fmt.Errorf("%w: run `gefyra up`", ErrNotRunning)
	}
	name := NetnsName(spec.Name)
	if h, ok, err := eng.Inspect(ctx, name); err != nil {
		return local.Container{}, err
	} else if ok {
		if h.Labels[local.LabelNetnsOf] != spec.Name || h.Labels[local.LabelManaged] != "true" {
			return local.Container{}, errmark.New(local.ErrNameTaken, "a container named %s already exists: remove it (docker rm -f %s) or choose another name", name, name)
		}
		// Left by a local container that is gone.
		if err := eng.Remove(ctx, h.ID); err != nil {
			return local.Container{}, err
		}
	}
	dns, search, opts := DNSConfig(eg, spec.Namespace)
	labels := map[string]string{}
	maps.Copy(labels, a.Labels)
	maps.Copy(labels, spec.Labels)
	labels[local.LabelNetnsOf] = spec.Name
	holder := local.RunSpec{
		Name:       name,
		Image:      ag.Image,
		Entrypoint: []string{Executable},
		Cmd:        NetnsCommand(a.name(), nets, spec.AutoRemove),
		AutoRemove: spec.AutoRemove,
		Role:       local.RoleNetns,
		Namespace:  spec.Namespace,
		Labels:     labels,
		// Routes need CAP_NET_ADMIN, which only root has in effect.
		User:       "0:0",
		CapAdd:     []string{"NET_ADMIN"},
		Hardened:   true,
		Hostname:   spec.Name,
		Aliases:    []string{spec.Name},
		DNS:        dns,
		DNSSearch:  search,
		DNSOptions: opts,
		Ports:      spec.Ports,
		ExtraHosts: spec.ExtraHosts,
	}
	h, err := eng.Run(ctx, holder)
	if err != nil {
		return local.Container{}, fmt.Errorf("the network namespace of %s: %w", spec.Name, err)
	}
	cleanup := func() { eng.Remove(context.WithoutCancel(ctx), h.ID) }
	wctx, cancel := context.WithTimeout(ctx, netns.DefaultStartTimeout+5*time.Second)
	err = eng.WaitLog(wctx, h.ID, netns.RoutedMessage)
	cancel()
	if err != nil {
		cleanup()
		return local.Container{}, fmt.Errorf("the network namespace of %s: %w", spec.Name, err)
	}
	spec.NetworkOf = name
	if spec.AutoRemove {
		spec.PIDOf = name
	}
	spec.Ports, spec.ExtraHosts = nil, nil
	c, err := eng.Run(ctx, spec)
	if err != nil {
		cleanup()
		return local.Container{}, err
	}
	return c, nil
}

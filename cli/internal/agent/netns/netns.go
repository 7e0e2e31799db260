// Package netns is the process that holds the network namespace of a local
// container of `gefyra run` (in a small container of its own, made from
// the agent's image, that the developer's container joins with
// --network container:NAME): it routes the cluster's networks to the
// agent container, so the developer's container reaches cluster Services
// and Pods through the tunnel without any privilege or tool of its own,
// and then stays, following the agent's address should it change (the
// agent container was made anew). Its container is created with the
// cluster DNS as resolver and the namespace's search list, which the
// developer's container shares.
//
// With ExitWhenAlone the holder also shares its PID namespace with the
// developer's container (gefyra run --rm): it ends, and with it its
// container, once every other process there is gone. As PID 1 of that
// namespace it reaps the orphans the developer's processes leave.
package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"gefyra.dev/gefyra/cli/internal/agent/route"
)

// Defaults.
const (
	DefaultInterval = 2 * time.Second
	// DefaultStartTimeout bounds finding the agent at start.
	DefaultStartTimeout = 15 * time.Second
	// DefaultAloneGrace is how long a holder with ExitWhenAlone that has
	// never seen another process waits for one: a container that ended
	// between two looks must not leave it behind for good.
	DefaultAloneGrace = 30 * time.Second
	// procInterval is how often ExitWhenAlone looks at the processes.
	procInterval = 250 * time.Millisecond
)

// RoutedMessage is logged once the networks are routed; the CLI waits for
// it before it starts the developer's container.
const RoutedMessage = "the cluster's networks are routed to the agent"

// Options say what to route where.
type Options struct {
	// Agent is the agent container's name on the Docker network (looked
	// up with Docker's DNS) or its address.
	Agent string
	// Networks are routed to the agent.
	Networks []netip.Prefix
	// ExitWhenAlone ends Run once the processes of other containers that
	// shared the PID namespace are gone.
	ExitWhenAlone bool
	// Interval is how often the agent's address is looked up again and
	// the PID namespace looked at (DefaultInterval if 0).
	Interval time.Duration
	// StartTimeout bounds finding the agent at start
	// (DefaultStartTimeout if 0).
	StartTimeout time.Duration
	// AloneGrace is how long ExitWhenAlone waits for a first other
	// process (DefaultAloneGrace if 0).
	AloneGrace time.Duration
	// Lookup resolves the agent's name (Docker's DNS if nil).
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// Proc is the proc file system (/proc if empty).
	Proc string
	Log  *slog.Logger
}

func (o *Options) fill() error {
	if o.Agent == "" {
		return errors.New("netns: the agent's name is required")
	}
	if len(o.Networks) == 0 {
		return errors.New("netns: no networks to route")
	}
	for _, p := range o.Networks {
		if !p.IsValid() || p.Bits() == 0 {
			return fmt.Errorf("netns: network %s: want a network with a prefix length", p)
		}
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.AloneGrace <= 0 {
		o.AloneGrace = DefaultAloneGrace
	}
	if o.Lookup == nil {
		o.Lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			// Rooted, so the search list (the cluster's) is not tried
			// first: the name is Docker's.
			return net.DefaultResolver.LookupNetIP(ctx, "ip4", host+".")
		}
	}
	if o.Proc == "" {
		o.Proc = "/proc"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Run routes the networks to the agent and keeps them so until ctx is
// done (or, with ExitWhenAlone, until it is alone). It does everything on
// the calling goroutine.
func Run(ctx context.Context, o Options) error {
	if err := o.fill(); err != nil {
		return err
	}
	agent, err := findAgent(ctx, o)
	if err != nil {
		return err
	}
	if err := route.Via(agent, o.Networks); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	o.Log.Info(RoutedMessage, "agent", o.Agent, "address", agent.String(), "networks", fmt.Sprint(o.Networks))

	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	defer signal.Stop(chld)
	lookup := time.NewTicker(o.Interval)
	defer lookup.Stop()
	var procs <-chan time.Time
	if o.ExitWhenAlone {
		t := time.NewTicker(min(procInterval, o.Interval))
		defer t.Stop()
		procs = t.C
	}
	routed := time.Now()
	seen := false // another process shared the PID namespace
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-chld:
			reap()
		case <-procs:
			reap()
			n, err := others(o.Proc)
			switch {
			case err != nil:
				o.Log.Warn("netns: reading the processes", "err", err)
			case n > 0:
				seen = true
			case seen:
				o.Log.Info("netns: the container that shared this namespace is gone; ending")
				return nil
			case time.Since(routed) > o.AloneGrace:
				o.Log.Info("netns: no container joined this namespace; ending")
				return nil
			}
		case <-lookup.C:
			agent = o.follow(ctx, agent)
		}
	}
}

// follow looks the agent up again and routes to its new address if it
// moved; it returns the address routed to.
func (o *Options) follow(ctx context.Context, agent netip.Addr) netip.Addr {
	lctx, cancel := context.WithTimeout(ctx, o.Interval)
	ips, err := o.Lookup(lctx, o.Agent)
	cancel()
	if err != nil || len(ips) == 0 || slices.Contains(ips, agent) {
		return agent // the agent may be being replaced: keep the routes
	}
	next := ips[0].Unmap()
	if err := route.Via(next, o.Networks); err != nil {
		o.Log.Warn("netns: cannot follow the agent to its new address", "address", next.String(), "err", err)
		return agent
	}
	o.Log.Info("netns: the agent moved; routes follow", "from", agent.String(), "to", next.String())
	return next
}

// findAgent resolves the agent's address, retrying until StartTimeout.
func findAgent(ctx context.Context, o Options) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(o.Agent); err == nil {
		return ip.Unmap(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	for {
		ips, err := o.Lookup(ctx, o.Agent)
		if err == nil && len(ips) > 0 {
			return ips[0].Unmap(), nil
		}
		if err == nil {
			err = errors.New("no address")
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, fmt.Errorf("netns: cannot find the agent %s on the Docker network: %w (is it running? `gefyra up`)", o.Agent, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// others counts the processes in proc other than this one.
func others(proc string) (int, error) {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	n := 0
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != self {
			n++
		}
	}
	return n, nil
}

// reap collects exited children: as PID 1 of a shared PID namespace the
// holder inherits the developer's orphaned processes. A process that is
// not PID 1 leaves its children to whoever started them.
func reap() {
	if os.Getpid() != 1 {
		return
	}
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

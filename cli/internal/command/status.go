package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/local"
)

// TrafficSource reports a bridge's traffic from the data plane's metrics
// (carrier and stowaway count requests per bridge). `gefyra status` asks
// it for every bridge when it is set.
type TrafficSource interface {
	BridgeTraffic(ctx context.Context, namespace, bridge string) (*Traffic, error)
}

// Traffic is what the data plane counted for one bridge.
type Traffic struct {
	Requests  uint64  `json:"requests"`
	ErrorRate float64 `json:"errorRate"` // share answered with a 5xx
	Fallbacks uint64  `json:"fallbacks"`
	// Connections are the TCP connections of the bridge's TCP ports.
	Connections uint64 `json:"connections,omitempty"`
}

// carrierTraffic reads the counts from the carriers' metrics, through the
// API server (cluster.BridgeTraffic).
type carrierTraffic struct{ cl *cluster.Cluster }

func (c carrierTraffic) BridgeTraffic(ctx context.Context, namespace, bridge string) (*Traffic, error) {
	t, err := c.cl.BridgeTraffic(ctx, namespace, bridge)
	if err != nil {
		return nil, err
	}
	return &Traffic{Requests: t.Requests, ErrorRate: t.ErrorRate(), Fallbacks: t.Fallbacks, Connections: t.Connections}, nil
}

type statusOptions struct {
	output string
}

func newStatusCmd(a *app) *cobra.Command {
	o := statusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the tunnel, your client and your bridges",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output); err != nil {
				return err
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	outputFlag(cmd.Flags(), &o.output)
	return cmd
}

// Status is what `gefyra status` shows.
type Status struct {
	Context    string            `json:"context,omitempty"`
	Server     string            `json:"server,omitempty"`
	Client     *ClientInfo       `json:"client,omitempty"`
	Tunnel     TunnelStatus      `json:"tunnel"`
	Bridges    []BridgeInfo      `json:"bridges"`
	Containers []local.Container `json:"containers"`
	Problems   []string          `json:"problems,omitempty"`
}

// TunnelStatus is the local agent's view of the tunnel.
type TunnelStatus struct {
	Agent   string        `json:"agent"`
	Running bool          `json:"running"`
	Up      bool          `json:"up"`
	Status  *agent.Status `json:"status,omitempty"`
}

func (o *statusOptions) run(ctx context.Context, a *app) error {
	s := Status{Bridges: []BridgeInfo{}, Containers: []local.Container{}, Tunnel: TunnelStatus{Agent: a.env.AgentName}}
	var errs []error
	cl, err := a.cluster(ctx)
	reachable := err == nil
	if err != nil {
		errs = append(errs, err)
		cl, _ = a.loadCluster()
	}
	if cl != nil {
		s.Context, s.Server = cl.Context, cl.Server
	}
	eng, err := a.docker(ctx)
	if err != nil {
		errs = append(errs, err)
	} else {
		defer eng.Close()
		cs, err := eng.List(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, c := range cs {
			if c.Role == local.RoleAgent {
				s.Tunnel.Running = c.Running()
				continue
			}
			s.Containers = append(s.Containers, c)
		}
		if cl != nil && s.Tunnel.Running {
			dir, err := a.stateDir(cl)
			if err == nil {
				if ag, err := a.agent(eng, dir, cl.Context); err == nil {
					st, err := ag.Status(ctx)
					if err != nil {
						s.Problems = append(s.Problems, "the agent does not report its status: "+err.Error())
					} else {
						s.Tunnel.Status, s.Tunnel.Up = &st, st.Up
					}
				}
			}
		}
	}
	if reachable {
		if err := o.clusterStatus(ctx, a, cl, &s); err != nil {
			errs = append(errs, err)
		}
	}
	var traffic TrafficSource = a.env.Traffic
	if traffic == nil && reachable && cl != nil {
		traffic = carrierTraffic{cl}
	}
	if traffic != nil {
		for i := range s.Bridges {
			t, err := traffic.BridgeTraffic(ctx, s.Bridges[i].Namespace, s.Bridges[i].Name)
			if err != nil {
				s.Problems = append(s.Problems, fmt.Sprintf("no request counts for bridge %s: %v", s.Bridges[i].Name, err))
				continue
			}
			s.Bridges[i].Traffic = t
		}
	}
	for _, e := range errs {
		s.Problems = append(s.Problems, e.Error())
	}
	if o.output != "" {
		if err := printResult(a.env.Stdout, o.output, s); err != nil {
			return err
		}
	} else {
		printStatus(a.env.Stdout, s)
	}
	return errors.Join(errs...)
}

func (o *statusOptions) clusterStatus(ctx context.Context, a *app, cl *cluster.Cluster, s *Status) error {
	dir, err := a.stateDir(cl)
	if err != nil {
		return err
	}
	st, err := dir.Load()
	if err != nil {
		return err
	}
	if st.Client == "" {
		s.Problems = append(s.Problems, errNotUp(cl.Context).Error())
		return nil
	}
	a.renew(ctx, cl, st)
	gc, err := cl.GetClient(ctx, st.Client)
	if err != nil {
		return err
	}
	if gc == nil {
		s.Problems = append(s.Problems, fmt.Sprintf("your GefyraClient %s is gone from the cluster: run `gefyra up` again", st.Client))
	} else {
		ci := clientInfo(gc)
		s.Client = &ci
	}
	bridges, err := gatherBridges(ctx, cl, st.Client, st)
	if err != nil {
		return err
	}
	s.Bridges = bridges
	return nil
}

func printStatus(w io.Writer, s Status) {
	fmt.Fprintf(w, "Context:  %s (%s)\n", dash(s.Context), dash(s.Server))
	if c := s.Client; c != nil {
		ready := "ready"
		if !c.Ready {
			ready = "not ready: " + dash(c.Reason)
		}
		fmt.Fprintf(w, "Client:   %s (user %s), tunnel address %s, %s", c.Name, c.User, dash(c.Address), ready)
		if c.LeaseUntil != "" {
			fmt.Fprintf(w, ", lease until %s", c.LeaseUntil)
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "Client:   none (run `gefyra up`)")
	}
	t := s.Tunnel
	switch {
	case !t.Running:
		fmt.Fprintf(w, "Tunnel:   down: the local agent (%s) is not running\n", t.Agent)
	case t.Status == nil:
		fmt.Fprintf(w, "Tunnel:   unknown: the agent does not answer\n")
	default:
		st := t.Status
		state := "up"
		if !t.Up {
			state = "down"
		}
		hs := "no handshake yet"
		if st.HandshakeAgeSeconds >= 0 {
			hs = "last handshake " + (time.Duration(st.HandshakeAgeSeconds * float64(time.Second))).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "Tunnel:   %s, stowaway %s, %s, %d B received, %d B sent, %d connections (%d active, %d failed)\n",
			state, st.Stowaway, hs, st.RxBytes, st.TxBytes, st.TotalConnections, st.ActiveConnections, st.FailedConnections)
		ports := make([]int, 0, len(st.Targets))
		for p := range st.Targets {
			ports = append(ports, int(p))
		}
		sort.Ints(ports)
		for _, p := range ports {
			fmt.Fprintf(w, "          tunnel port %d → %s\n", p, st.Targets[uint16(p)])
		}
	}
	if len(s.Bridges) == 0 {
		fmt.Fprintln(w, "Bridges:  none")
	}
	for i, b := range s.Bridges {
		label := "Bridges:  "
		if i > 0 {
			label = "          "
		}
		state := "active"
		if !b.Ready {
			state = "not active: " + strings.TrimSuffix(dash(b.Reason)+": "+b.Message, ": ")
		}
		fmt.Fprintf(w, "%s%s (namespace %s) %s → %s %s: %s", label, b.Name, b.Namespace, dash(b.Target), dash(b.Container), portsString(b.Ports), state)
		if b.Traffic != nil {
			fmt.Fprintf(w, ", %d requests, %.1f%% errors, %d to the fallback", b.Traffic.Requests, 100*b.Traffic.ErrorRate, b.Traffic.Fallbacks)
			if b.Traffic.Connections > 0 {
				fmt.Fprintf(w, ", %d TCP connections", b.Traffic.Connections)
			}
		}
		fmt.Fprintln(w)
	}
	for i, c := range s.Containers {
		label := "Local:    "
		if i > 0 {
			label = "          "
		}
		fmt.Fprintf(w, "%s%s %s at %s (%s)\n", label, c.Name, c.Image, dash(c.IP), c.State)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "Problem:  %s\n", p)
	}
}

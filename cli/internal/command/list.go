package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/cli/internal/state"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/bridge"
)

type listOptions struct {
	output string
}

func newListCmd(a *app) *cobra.Command {
	o := listOptions{}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List your bridges, local containers and clients",
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

// Listing is what `gefyra list` shows.
type Listing struct {
	Bridges    []BridgeInfo      `json:"bridges"`
	Containers []local.Container `json:"containers"`
	Clients    []ClientInfo      `json:"clients"`
}

// BridgeInfo is one of the developer's bridges.
type BridgeInfo struct {
	Name      string       `json:"name"`
	Namespace string       `json:"namespace"`
	Target    string       `json:"target,omitempty"` // kind/name/container
	Container string       `json:"container,omitempty"`
	Ports     []state.Port `json:"ports,omitempty"`
	Ready     bool         `json:"ready"`
	Reason    string       `json:"reason,omitempty"`
	Message   string       `json:"message,omitempty"`
	// Traffic is filled in by a TrafficSource, when there is one.
	Traffic *Traffic `json:"traffic,omitempty"`
}

// ClientInfo is a GefyraClient.
type ClientInfo struct {
	Name          string     `json:"name"`
	User          string     `json:"user"`
	Address       string     `json:"address,omitempty"`
	Ready         bool       `json:"ready"`
	Reason        string     `json:"reason,omitempty"`
	LastHeartbeat *time.Time `json:"lastHeartbeat,omitempty"`
	LeaseUntil    string     `json:"leaseUntil,omitempty"`
}

func clientInfo(gc *gefyrav1.GefyraClient) ClientInfo {
	ci := ClientInfo{Name: gc.Name, User: gc.Spec.User, Address: gc.Status.Address}
	if r := meta.FindStatusCondition(gc.Status.Conditions, gefyrav1.ConditionReady); r != nil {
		ci.Ready, ci.Reason = r.Status == metav1.ConditionTrue, r.Reason
	}
	if gc.Status.LastHeartbeat != nil {
		t := gc.Status.LastHeartbeat.Time
		ci.LastHeartbeat = &t
	}
	if l := meta.FindStatusCondition(gc.Status.Conditions, gefyrav1.ConditionLeaseValid); l != nil {
		ci.LeaseUntil = strings.TrimPrefix(l.Message, "lease valid until ")
	}
	return ci
}

// gatherBridges merges the cluster's view of the client's bridges with
// what the state remembers about them (ports, local container).
func gatherBridges(ctx context.Context, cl *cluster.Cluster, client string, st *state.State) ([]BridgeInfo, error) {
	known, objs, err := cl.ClientBridges(ctx, client)
	if err != nil {
		return nil, err
	}
	byRef := map[bridgeRef]*BridgeInfo{}
	var out []BridgeInfo
	for _, s := range known {
		out = append(out, BridgeInfo{Name: s.Name, Namespace: s.Namespace, Ready: s.Ready, Reason: s.Reason, Message: s.Message})
	}
	for i := range out {
		byRef[bridgeRef{out[i].Namespace, out[i].Name}] = &out[i]
	}
	for _, b := range objs {
		if bi := byRef[bridgeRef{b.Namespace, b.Name}]; bi != nil {
			bi.Target = cluster.KindRef(b.Spec.Target.Kind) + "/" + b.Spec.Target.Name + "/" + b.Spec.Target.Container
			bi.Container = b.Spec.Local
		}
	}
	for _, b := range st.Bridges {
		bi := byRef[bridgeRef{b.Namespace, b.Name}]
		if bi == nil {
			// Remembered, but the cluster does not list it (yet, or any
			// more).
			out = append(out, BridgeInfo{Name: b.Name, Namespace: b.Namespace, Reason: "Unknown", Message: "not in the client's status"})
			bi = &out[len(out)-1]
		}
		bi.Target = strings.ToLower(b.Kind) + "/" + b.Workload + "/" + b.WorkloadContainer
		bi.Container, bi.Ports = b.Container, b.Ports
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func (o *listOptions) run(ctx context.Context, a *app) error {
	l := Listing{Bridges: []BridgeInfo{}, Containers: []local.Container{}, Clients: []ClientInfo{}}
	var errs []error
	if eng, err := a.docker(ctx); err != nil {
		errs = append(errs, err)
	} else {
		defer eng.Close()
		cs, err := eng.List(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		l.Containers = append(l.Containers, cs...)
	}
	if cl, err := a.cluster(ctx); err != nil {
		errs = append(errs, err)
	} else if err := o.listCluster(ctx, a, cl, &l); err != nil {
		errs = append(errs, err)
	}
	if o.output != "" {
		if err := printResult(a.env.Stdout, o.output, l); err != nil {
			return err
		}
	} else {
		printListing(a.env.Stdout, l)
	}
	return errors.Join(errs...)
}

func (o *listOptions) listCluster(ctx context.Context, a *app, cl *cluster.Cluster, l *Listing) error {
	dir, err := a.stateDir(cl)
	if err != nil {
		return err
	}
	st, err := dir.Load()
	if err != nil {
		return err
	}
	a.renew(ctx, cl, st)
	me, _, err := clientName(ctx, cl, st)
	if err != nil {
		return err
	}
	var list gefyrav1.GefyraClientList
	if err := cl.Client.List(ctx, &list, client.InNamespace(cluster.Namespace)); err == nil {
		for i := range list.Items {
			l.Clients = append(l.Clients, clientInfo(&list.Items[i]))
		}
	} else if cluster.IsForbidden(err) {
		// A developer sees only their own client.
		gc, err := cl.GetClient(ctx, me)
		if err != nil {
			return err
		}
		if gc != nil {
			l.Clients = append(l.Clients, clientInfo(gc))
		}
	} else {
		return fmt.Errorf("listing clients: %w", err)
	}
	bridges, err := gatherBridges(ctx, cl, me, st)
	if err != nil {
		return err
	}
	l.Bridges = bridges
	return nil
}

func printListing(w io.Writer, l Listing) {
	table := func(header string, rows [][]string) {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		tw.Flush()
	}
	var rows [][]string
	for _, b := range l.Bridges {
		rows = append(rows, []string{b.Name, b.Namespace, dash(b.Target), dash(portsString(b.Ports)), dash(b.Container), fmt.Sprint(b.Ready), dash(b.Reason)})
	}
	table("BRIDGE\tNAMESPACE\tTARGET\tPORTS\tLOCAL CONTAINER\tREADY\tREASON", rows)
	fmt.Fprintln(w)
	rows = nil
	for _, c := range l.Containers {
		rows = append(rows, []string{c.Name, dash(c.Namespace), c.Image, dash(c.IP), c.State, c.Role})
	}
	table("CONTAINER\tNAMESPACE\tIMAGE\tIP\tSTATE\tROLE", rows)
	fmt.Fprintln(w)
	rows = nil
	for _, c := range l.Clients {
		hb := "-"
		if c.LastHeartbeat != nil {
			hb = time.Since(*c.LastHeartbeat).Round(time.Second).String() + " ago"
		}
		rows = append(rows, []string{c.Name, c.User, dash(c.Address), fmt.Sprint(c.Ready), hb})
	}
	table("CLIENT\tUSER\tADDRESS\tREADY\tHEARTBEAT", rows)
}

func portsString(ps []state.Port) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprintf("%d:%d", p.Remote, p.Local)
		if p.Protocol == bridge.ProtocolTCP {
			s[i] += "/tcp"
		}
		if p.Tunnel != p.Local {
			s[i] += fmt.Sprintf(" (tunnel %d)", p.Tunnel)
		}
	}
	return strings.Join(s, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

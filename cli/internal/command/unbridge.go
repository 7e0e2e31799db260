package command

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/localagent"
	"gefyra.dev/gefyra/cli/internal/state"
)

type unbridgeOptions struct {
	name      string
	all       bool
	namespace string
	timeout   time.Duration
}

func newUnbridgeCmd(a *app) *cobra.Command {
	o := unbridgeOptions{}
	cmd := &cobra.Command{
		Use:     "unbridge (-I BRIDGE | --all)",
		Short:   "Remove bridges; the workload gets its traffic back",
		Example: "  gefyra unbridge -I myfastapi\n  gefyra unbridge --all",
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.namespace = a.namespace
			if err := o.parse(); err != nil {
				return err
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.name, "bridge-name", "I", "", "the bridge to remove")
	f.BoolVarP(&o.all, "all", "A", false, "remove all of your bridges")
	f.DurationVar(&o.timeout, "timeout", time.Minute, "how long to wait for the control plane to restore the workloads")
	return cmd
}

func (o *unbridgeOptions) parse() error {
	switch {
	case o.name == "" && !o.all:
		return usagef("name the bridge with -I, or remove all with --all")
	case o.name != "" && o.all:
		return usagef("-I and --all exclude each other")
	case o.name != "" && !cluster.IsDNSSubdomain(o.name):
		return usagef("-I %q is not a valid bridge name", o.name)
	case o.timeout <= 0:
		return usagef("--timeout must be positive")
	}
	return nil
}

type bridgeRef struct{ namespace, name string }

func (o *unbridgeOptions) run(ctx context.Context, a *app) error {
	cl, err := a.cluster(ctx)
	if err != nil {
		return err
	}
	dir, err := a.stateDir(cl)
	if err != nil {
		return err
	}
	st, err := dir.Load()
	if err != nil {
		return err
	}
	client, _, err := clientName(ctx, cl, st)
	if err != nil {
		return err
	}
	a.renew(ctx, cl, st)
	var refs []bridgeRef
	if o.all {
		refs, err = allBridges(ctx, cl, client, st)
		if err != nil {
			return err
		}
		if len(refs) == 0 {
			a.ui.Info("You have no bridges")
			return nil
		}
	} else {
		ns := o.namespace
		if ns == "" {
			if known := st.Find("", o.name); len(known) == 1 {
				ns = known[0].Namespace
			} else if len(known) > 1 {
				return usagef("you have bridges named %s in several namespaces: pick one with -n", o.name)
			} else {
				ns = cl.Namespace
			}
		}
		refs = []bridgeRef{{ns, o.name}}
	}
	err = a.removeBridges(ctx, cl, dir, client, refs, o.timeout, !o.all)
	a.updateAgentTargets(ctx, dir, cl.Context)
	return err
}

// allBridges lists the client's bridges: those the cluster knows and
// those the state remembers.
func allBridges(ctx context.Context, cl *cluster.Cluster, client string, st *state.State) ([]bridgeRef, error) {
	seen := map[bridgeRef]bool{}
	var refs []bridgeRef
	add := func(r bridgeRef) {
		if !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	}
	known, _, err := cl.ClientBridges(ctx, client)
	if err != nil {
		return nil, err
	}
	for _, b := range known {
		add(bridgeRef{b.Namespace, b.Name})
	}
	if st != nil {
		for _, b := range st.Bridges {
			add(bridgeRef{b.Namespace, b.Name})
		}
	}
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].namespace != refs[j].namespace {
			return refs[i].namespace < refs[j].namespace
		}
		return refs[i].name < refs[j].name
	})
	return refs, nil
}

// removeBridges deletes the bridges, waits until the control plane let
// them go (the workloads are restored then) and forgets them. With strict,
// a bridge that does not exist is an error.
func (a *app) removeBridges(ctx context.Context, cl *cluster.Cluster, dir state.Dir, client string, refs []bridgeRef, timeout time.Duration, strict bool) error {
	var errs []error
	var deleted []bridgeRef
	for _, r := range refs {
		found, err := cl.DeleteBridge(ctx, r.namespace, r.name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !found {
			if strict {
				errs = append(errs, fmt.Errorf("there is no bridge %s in namespace %s (see `gefyra list`)", r.name, r.namespace))
			}
			a.forget(dir, r)
			continue
		}
		a.ui.Info("Removing bridge %s (namespace %s)", r.name, r.namespace)
		deleted = append(deleted, r)
	}
	if len(deleted) > 0 {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		wt := newWaiter(a.ui, 5*time.Second)
		for _, r := range deleted {
			err := cl.WaitBridgeGone(wctx, client, r.namespace, r.name, func() {
				wt.Update(fmt.Sprintf("Waiting for the control plane to restore the workload of bridge %s", r.name))
			})
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
					err = fmt.Errorf("bridge %s is still being removed after %s: is gefyra-controlplane running? (kubectl -n gefyra get pods)", r.name, timeout)
				}
				errs = append(errs, err)
				continue
			}
			a.forget(dir, r)
			a.ui.Info("Bridge %s removed", r.name)
		}
	}
	return errors.Join(errs...)
}

func (a *app) forget(dir state.Dir, r bridgeRef) {
	unlock, err := dir.Lock()
	if err != nil {
		return
	}
	defer unlock()
	st, err := dir.Load()
	if err != nil {
		return
	}
	if st.Remove(r.namespace, r.name) {
		dir.Save(st)
	}
}

// updateAgentTargets makes the running agent's targets match the state.
func (a *app) updateAgentTargets(ctx context.Context, dir state.Dir, context string) {
	st, err := dir.Load()
	if err != nil || st.Client == "" {
		return
	}
	eng, err := a.docker(ctx)
	if err != nil {
		return
	}
	defer eng.Close()
	ag, err := a.agent(eng, dir, context)
	if err != nil {
		return
	}
	if err := ag.SetTargets(ctx, st.Targets()); err != nil && !errors.Is(err, localagent.ErrNotRunning) {
		a.ui.Warn("updating the local agent's targets: %v", err)
	}
}

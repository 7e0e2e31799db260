package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/cli/internal/localagent"
	"gefyra.dev/gefyra/cli/internal/state"
)

type downOptions struct {
	timeout time.Duration
}

func newDownCmd(a *app) *cobra.Command {
	o := downOptions{}
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Remove your bridges, client, local containers and agent: back to before `gefyra up`",
		Long: `down removes your bridges and waits until the control plane restored the
workloads, deletes your GefyraClient, and removes the local containers that
gefyra run started, the local agent and the gefyra Docker network. It finds
them by their labels, so it also cleans up after a crash; running it twice
is harmless. What it could not reach (a cluster that is down) it says, and
running it again later finishes the job.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	cmd.Flags().DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the control plane to restore the workloads")
	return cmd
}

func (o *downOptions) run(ctx context.Context, a *app) error {
	u := a.ui
	var errs []error
	clusterDone := false
	var dir state.Dir
	haveDir := false

	cl, err := a.cluster(ctx)
	switch {
	case errors.Is(err, cluster.ErrNoKubeconfig):
		u.Warn("no cluster configured (%v); cleaning up this machine only", err)
	case err != nil:
		errs = append(errs, fmt.Errorf("%w; the local side is cleaned up, run `gefyra down` again once the cluster answers", err))
		if l, lerr := a.loadCluster(); lerr == nil {
			if d, derr := a.stateDir(l); derr == nil {
				dir, haveDir = d, true
			}
		}
	default:
		if d, derr := a.stateDir(cl); derr == nil {
			dir, haveDir = d, true
		}
		if err := o.downCluster(ctx, a, cl, dir); err != nil {
			errs = append(errs, err)
		} else {
			clusterDone = true
		}
	}

	eng, err := a.docker(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("%w; the local containers are still there", err))
	} else {
		defer eng.Close()
		removed, err := eng.RemoveManaged(ctx, "")
		for _, n := range removed {
			u.Info("Removed container %s", n)
		}
		if err != nil {
			errs = append(errs, err)
		}
		if ok, err := eng.RemoveNetwork(ctx); err != nil {
			errs = append(errs, err)
		} else if ok {
			u.Info("Removed Docker network %s", eng.Network())
		}
		// Agent images of other gefyra executables are of no more use;
		// this one's stays for the next `gefyra up`.
		keep := ""
		if bin, err := a.agentBinary(); err == nil {
			keep, _ = localagent.ImageTag(bin)
		}
		if _, err := eng.PruneImages(ctx, local.RoleAgent, keep); err != nil {
			u.Warn("%v", err)
		}
	}
	if haveDir && clusterDone {
		if err := dir.Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	u.Info("gefyra is down")
	return nil
}

// downCluster removes the client's bridges (waiting for the workloads to
// be restored) and then the client.
func (o *downOptions) downCluster(ctx context.Context, a *app, cl *cluster.Cluster, dir state.Dir) error {
	st, err := dir.Load()
	if err != nil {
		st = &state.State{}
	}
	client, _, err := clientName(ctx, cl, st)
	if err != nil {
		return err
	}
	// A developer may read their client only while it exists: a
	// forbidden read may still hide one, so delete it anyway.
	gc, getErr := cl.GetClient(ctx, client)
	if getErr != nil && !cluster.IsForbidden(getErr) {
		return getErr
	}
	refs, lerr := allBridges(ctx, cl, client, st)
	if lerr != nil && !cluster.IsForbidden(lerr) {
		return lerr
	}
	if err := a.removeBridges(ctx, cl, dir, client, refs, o.timeout, false); err != nil {
		return err
	}
	if gc == nil && getErr == nil {
		return nil // there is none
	}
	a.ui.Info("Removing client %s", client)
	if err := cl.DeleteClient(ctx, client); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := cl.WaitClientGone(wctx, client); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("GefyraClient %s is still being removed after %s: is gefyra-controlplane running? (kubectl -n gefyra get pods)", client, o.timeout)
		}
		return err
	}
	return nil
}

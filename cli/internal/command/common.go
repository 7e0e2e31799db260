package command

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/cli/internal/localagent"
	"gefyra.dev/gefyra/cli/internal/state"
	"gefyra.dev/gefyra/internal/bridge"
)

// docker connects to the Docker Engine.
func (a *app) docker(ctx context.Context) (*local.Engine, error) {
	return local.Connect(ctx, a.env.Network)
}

// loadCluster reads the kubeconfig without contacting the cluster.
func (a *app) loadCluster() (*cluster.Cluster, error) {
	return cluster.Load(cluster.Options{Kubeconfig: a.kubeconfig, Context: a.kubeContext, Namespace: a.namespace})
}

// cluster reads the kubeconfig and checks that the cluster answers.
func (a *app) cluster(ctx context.Context) (*cluster.Cluster, error) {
	cl, err := a.loadCluster()
	if err != nil {
		return nil, err
	}
	if err := cl.Ping(ctx); err != nil {
		return nil, err
	}
	return cl, nil
}

// stateDir is the state directory of the cluster's context.
func (a *app) stateDir(cl *cluster.Cluster) (state.Dir, error) {
	home, err := state.Home(a.env.Getenv)
	if err != nil {
		return state.Dir{}, err
	}
	return state.Open(home, cl.Context), nil
}

// agentBinary is the executable the agent image is built from.
func (a *app) agentBinary() (string, error) {
	if a.env.AgentBinary != "" {
		return a.env.AgentBinary, nil
	}
	if p := a.env.Getenv(localagent.EnvBinary); p != "" {
		return filepath.Abs(p)
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot find the gefyra executable for the agent image (%v): set %s", err, localagent.EnvBinary)
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return p, nil
}

func (a *app) agent(eng *local.Engine, dir state.Dir, context string) (*localagent.Agent, error) {
	bin, err := a.agentBinary()
	if err != nil {
		return nil, err
	}
	return &localagent.Agent{Engine: eng, Name: a.env.AgentName, Binary: bin, State: dir, Context: context, Labels: a.env.Labels}, nil
}

// clientName is the developer's GefyraClient: from the state, else from
// who the cluster says the developer is.
func clientName(ctx context.Context, cl *cluster.Cluster, st *state.State) (name, user string, err error) {
	if st != nil && st.Client != "" {
		return st.Client, st.User, nil
	}
	user, err = cl.WhoAmI(ctx)
	if err != nil {
		return "", "", err
	}
	name, err = bridge.ClientName(user)
	return name, user, err
}

// renew renews the client's heartbeat, as every command that talks to the
// cluster does (see the up command for why). Failing to renew is only
// worth a warning, except that a client that is gone must be told.
func (a *app) renew(ctx context.Context, cl *cluster.Cluster, st *state.State) {
	if st == nil || st.Client == "" {
		return
	}
	if err := cl.Heartbeat(ctx, st.Client); err != nil {
		if cluster.IsNotFound(err) {
			a.ui.Warn("your GefyraClient %s is gone from the cluster (its lease lapsed or it was deleted): run `gefyra up` again", st.Client)
			return
		}
		a.ui.Warn("%v", err)
	}
}

// errNotUp is returned by commands that need `gefyra up`.
func errNotUp(context string) error {
	return fmt.Errorf("gefyra is not up for context %s: run `gefyra up` first", context)
}

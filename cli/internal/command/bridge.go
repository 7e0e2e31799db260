package command

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gefyra.dev/gefyra/cli/internal/cluster"
	"gefyra.dev/gefyra/cli/internal/state"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/bridge"
)

type bridgeOptions struct {
	// As typed.
	container         string // -N: the local container
	namespace         string
	deployment        string
	statefulSet       string
	daemonSet         string
	pod               string
	portSpecs         []string
	workloadContainer string
	name              string // -I
	headers           []string
	paths             []string
	timeout           time.Duration
	ttl               time.Duration
	output            string

	// Parsed.
	kind     gefyrav1.TargetKind
	workload string
	ports    []bridge.PortMapping
	rules    []bridge.Rule
}

func newBridgeCmd(a *app) *cobra.Command {
	o := bridgeOptions{}
	cmd := &cobra.Command{
		Use:   "bridge -N CONTAINER -n NAMESPACE --deployment NAME --port REMOTE:LOCAL [--container-name NAME] [-I BRIDGE]",
		Short: "Send a cluster workload's traffic to a local container",
		Long: `bridge has the cluster carry the traffic of one container of a workload (each
of its Pods; sidecars keep running) to a local container started with
gefyra run. --port maps the workload container's port to the local
container's port; a port with /tcp (e.g. 5432:5432/tcp) carries whole TCP
connections (a database, any protocol that is not HTTP) and takes no
--match-* flags. --match-header and --match-path take only matching
requests (the rest goes to a copy of the original workload); without them,
all of the ports' traffic is bridged. It returns once the bridge is active.`,
		Example: `  gefyra bridge -N myfastapi-demo -n oauth2-demo --deployment oauth2-demo \
      --port 8155:8155 --container-name oauth2-demo-app -I myfastapi
  gefyra bridge -N myapp --deployment backend --port 8080:8000 --match-header x-user:john
  gefyra bridge -N mydb --deployment orders --port 5432:5432/tcp`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.namespace = a.namespace
			if err := o.parse(); err != nil {
				return err
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.container, "name", "N", "", "the local container (started with gefyra run) that receives the traffic")
	f.StringVar(&o.deployment, "deployment", "", "bridge the Pods of this Deployment")
	f.StringVar(&o.statefulSet, "statefulset", "", "bridge the Pods of this StatefulSet")
	f.StringVar(&o.daemonSet, "daemonset", "", "bridge the Pods of this DaemonSet")
	f.StringVar(&o.pod, "pod", "", "bridge this Pod")
	f.StringArrayVarP(&o.portSpecs, "port", "p", nil, "REMOTE:LOCAL[/tcp]: the workload container's port and the local container's; /tcp carries whole TCP connections instead of HTTP requests (repeatable)")
	f.StringVar(&o.workloadContainer, "container-name", "", "the workload's container to bridge (needed when the Pod has several, e.g. a sidecar)")
	f.StringVarP(&o.name, "bridge-name", "I", "", "the bridge's name (default: made from the local container's)")
	f.StringArrayVar(&o.headers, "match-header", nil, "bridge only requests with this header, NAME:VALUE (repeatable; all must match)")
	f.StringArrayVar(&o.paths, "match-path", nil, "bridge only requests whose path starts with this prefix (repeatable; any may match)")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the bridge to become active")
	f.DurationVar(&o.ttl, "ttl", 0, "delete the bridge this long after its creation (10s-168h; default: never)")
	outputFlag(f, &o.output)
	return cmd
}

func (o *bridgeOptions) parse() error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	if o.container == "" {
		return usagef("-N is required: the local container to send the traffic to (see `gefyra run`)")
	}
	var set []string
	for _, t := range []struct {
		flag, value string
		kind        gefyrav1.TargetKind
	}{
		{"--deployment", o.deployment, gefyrav1.KindDeployment},
		{"--statefulset", o.statefulSet, gefyrav1.KindStatefulSet},
		{"--daemonset", o.daemonSet, gefyrav1.KindDaemonSet},
		{"--pod", o.pod, gefyrav1.KindPod},
	} {
		if t.value != "" {
			set = append(set, t.flag)
			o.kind, o.workload = t.kind, t.value
		}
	}
	switch len(set) {
	case 0:
		return usagef("name the workload to bridge: --deployment, --statefulset, --daemonset or --pod")
	case 1:
	default:
		return usagef("name one workload, not %d (%v)", len(set), set)
	}
	if !cluster.IsDNSSubdomain(o.workload) {
		return usagef("%q is not a valid workload name", o.workload)
	}
	if o.workloadContainer != "" && !cluster.IsDNSLabel(o.workloadContainer) {
		return usagef("--container-name %q is not a valid container name", o.workloadContainer)
	}
	if len(o.portSpecs) == 0 {
		return usagef("--port is required: REMOTE:LOCAL, e.g. --port 8155:8155")
	}
	ports, err := bridge.ParsePortMappings(o.portSpecs)
	if err != nil {
		return usagef("--port: %v", err)
	}
	o.ports = ports
	var rule bridge.Rule
	for _, h := range o.headers {
		m, err := bridge.ParseHeaderMatch(h)
		if err != nil {
			return usagef("--match-header: %v", err)
		}
		rule.Headers = append(rule.Headers, m)
	}
	// Every header must match; paths are alternatives: one rule per path,
	// each with all the headers.
	o.rules = nil
	if len(o.paths) == 0 && len(rule.Headers) > 0 {
		o.rules = []bridge.Rule{rule}
	}
	for _, p := range o.paths {
		m, err := bridge.ParsePathMatch(p)
		if err != nil {
			return usagef("--match-path: %v", err)
		}
		o.rules = append(o.rules, bridge.Rule{Headers: rule.Headers, Path: &m})
	}
	if err := bridge.Validate(o.ports, o.rules); err != nil {
		return usagef("%v", err)
	}
	if o.name != "" && (!cluster.IsDNSSubdomain(o.name) || len(o.name) > 63) {
		return usagef("-I %q: a bridge name is lowercase letters, digits and '-' (at most 63)", o.name)
	}
	if o.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	if o.ttl != 0 && (o.ttl < 10*time.Second || o.ttl > 168*time.Hour) {
		return usagef("--ttl %s: want 10s-168h", o.ttl)
	}
	return nil
}

type bridgeResult struct {
	Name      string       `json:"name"`
	Namespace string       `json:"namespace"`
	Target    string       `json:"target"`
	Container string       `json:"container"`
	Pods      []string     `json:"pods"`
	Ports     []state.Port `json:"ports"`
}

func (o *bridgeOptions) run(ctx context.Context, a *app) error {
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
	dir, err := a.stateDir(cl)
	if err != nil {
		return err
	}
	st, err := dir.Load()
	if err != nil {
		return err
	}
	if st.Client == "" {
		return errNotUp(cl.Context)
	}
	ag, err := a.agent(eng, dir, cl.Context)
	if err != nil {
		return err
	}
	if c, ok, err := ag.Container(ctx); err != nil {
		return err
	} else if !ok || !c.Running() {
		return fmt.Errorf("the local agent (container %s) is not running: run `gefyra up`", ag.ContainerName())
	}
	lc, ok, err := eng.Inspect(ctx, o.container)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("there is no local container named %s: start it with `gefyra run -N %s ...`", o.container, o.container)
	case !lc.Running():
		return fmt.Errorf("the local container %s is not running (%s): start it again with `gefyra run`", o.container, lc.State)
	case lc.IP == "":
		return fmt.Errorf("the local container %s is not on the %s network, so the agent cannot reach it: start it with `gefyra run`", o.container, eng.Network())
	}
	gc, err := cl.GetClient(ctx, st.Client)
	if err != nil {
		return err
	}
	if gc == nil {
		return fmt.Errorf("your GefyraClient %s is gone from the cluster (its lease lapsed or it was deleted): run `gefyra up` again", st.Client)
	}
	a.renew(ctx, cl, st)
	ns := o.namespace
	if ns == "" {
		ns = cl.Namespace
	}
	ref := cluster.KindRef(o.kind) + "/" + o.workload
	w, err := cl.GetWorkload(ctx, ns, o.kind, o.workload)
	var pods []string
	container := o.workloadContainer
	switch {
	case cluster.IsForbidden(err):
		u.Warn("you may not read %s in namespace %s; the control plane checks the bridge instead", ref, ns)
		if container == "" {
			return usagef("--container-name is required when the workload cannot be read")
		}
		pods = nil
	case err != nil:
		return err
	default:
		ct, err := w.PickContainer(container)
		if errors.Is(err, cluster.ErrContainerAmbiguous) {
			return fmt.Errorf("%v: name the one to bridge with --container-name", err)
		}
		if err != nil {
			return err
		}
		container = ct.Name
		declared := cluster.TCPPorts(ct)
		for _, p := range o.ports {
			if !slices.Contains(declared, int32(p.Remote)) {
				return fmt.Errorf("container %s of %s does not declare port %d (it declares %s): bridge one of its ports",
					container, ref, p.Remote, cluster.JoinPorts(declared))
			}
		}
		pods = w.Pods
	}
	name := o.name
	if name == "" {
		name = bridgeName(o.container)
	}

	// Claim tunnel ports and create the bridge under the state lock, so a
	// bridge made at the same time cannot take the same ports.
	unlock, err := dir.Lock()
	if err != nil {
		return err
	}
	st, err = dir.Load()
	if err != nil {
		unlock()
		return err
	}
	others := slices.DeleteFunc(slices.Clone(st.Bridges), func(b state.Bridge) bool { return b.Namespace == ns && b.Name == name })
	ports, err := state.AssignTunnelPorts(others, o.container, o.ports)
	if err != nil {
		unlock()
		return err
	}
	spec := make([]bridge.PortMapping, len(ports))
	for i, p := range ports {
		spec[i] = bridge.PortMapping{Remote: p.Remote, Local: p.Tunnel, Protocol: o.ports[i].Protocol}
		if p.Tunnel != p.Local {
			u.Info("Port %d of this client's tunnel is in use; carrying port %d through tunnel port %d", p.Local, p.Remote, p.Tunnel)
		}
	}
	specPorts, specRules := gefyrav1.SpecFromModel(spec, o.rules)
	b := &gefyrav1.GefyraBridge{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "gefyra-cli"}},
		Spec: gefyrav1.GefyraBridgeSpec{
			Client: st.Client,
			Target: gefyrav1.Target{Kind: o.kind, Name: o.workload, Container: container},
			Ports:  specPorts,
			Rules:  specRules,
			Local:  o.container,
		},
	}
	if o.ttl > 0 {
		b.Spec.TTL = &metav1.Duration{Duration: o.ttl}
	}
	switch {
	case pods == nil:
		u.Info("Creating bridge for %s", ref)
	case len(pods) == 0:
		u.Info("Creating bridge for %s (it has no Pods right now; new ones are bridged as they start)", ref)
	default:
		for _, p := range pods {
			u.Info("Creating bridge for Pod %s", p)
		}
	}
	if err := cl.CreateBridge(ctx, b); err != nil {
		unlock()
		return err
	}
	rec := state.Bridge{Namespace: ns, Name: name, Container: o.container, Kind: string(o.kind), Workload: o.workload,
		WorkloadContainer: container, Ports: ports, Created: time.Now().UTC().Truncate(time.Second)}
	st.Remove(ns, name)
	st.Bridges = append(st.Bridges, rec)
	err = dir.Save(st)
	unlock()
	if err == nil {
		err = ag.SetTargets(ctx, st.Targets())
	}
	if err != nil {
		return a.rollbackBridge(ctx, cl, dir, ag, st.Client, ns, name, err)
	}

	u.Info("Waiting for the bridge(s) to become active")
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	wt := newWaiter(u, 5*time.Second)
	s, err := cl.WaitBridge(wctx, st.Client, ns, name, func(s cluster.BridgeState) {
		wt.Update(fmt.Sprintf("Bridge %s: %s", name, describe(s)))
	})
	cancel()
	switch {
	case err == nil && s.Ready:
	case err == nil || errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		var why error
		if s.Terminal() {
			why = fmt.Errorf("the control plane rejected bridge %s: %s", name, describe(s))
		} else {
			why = fmt.Errorf("bridge %s did not become active within %s: %s", name, o.timeout, describe(s))
		}
		return a.rollbackBridge(ctx, cl, dir, ag, st.Client, ns, name, why)
	default:
		return a.rollbackBridge(ctx, cl, dir, ag, st.Client, ns, name, err)
	}
	if len(pods) > 0 {
		waitRouted(ctx, cl, u, ns, pods, o.timeout)
	}
	u.Info("Bridge %s established", name)
	if o.output != "" {
		return printResult(a.env.Stdout, o.output, bridgeResult{Name: name, Namespace: ns, Target: ref + "/" + container,
			Container: o.container, Pods: pods, Ports: ports})
	}
	return nil
}

// waitRouted waits until the bridged Pods are ready in their Services'
// endpoints again: the bridge restarted a container of each, which took
// it out of its Services for a moment, and a request right after the
// bridge is up would be refused. It only warns if they are not back within
// timeout; a user who may not read EndpointSlices does not wait.
func waitRouted(ctx context.Context, cl *cluster.Cluster, u *ui, ns string, pods []string, timeout time.Duration) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wt := newWaiter(u, 3*time.Second)
	for {
		out, err := cl.NotRouted(wctx, ns, pods)
		switch {
		case cluster.IsForbidden(err), err == nil && len(out) == 0:
			return
		case wctx.Err() != nil:
			why := strings.Join(out, ", ") + " not ready in the Service's endpoints yet"
			if err != nil {
				why = "could not read the Services' endpoints: " + err.Error()
			}
			u.Warn("%s; requests through the Service may be refused for a moment", why)
			return
		case err == nil:
			wt.Update("Waiting for the Services to route to " + strings.Join(out, ", "))
		}
		select {
		case <-wctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func describe(s cluster.BridgeState) string {
	switch {
	case s.Reason == "" && s.Message == "":
		return "no status yet"
	case s.Message == "":
		return s.Reason
	case s.Reason == "":
		return s.Message
	}
	return s.Reason + ": " + s.Message
}

// bridgeName makes a bridge's name from the local container's.
func bridgeName(container string) string {
	base := make([]byte, 0, len(container))
	for i := 0; i < len(container) && len(base) < 50; i++ {
		c := container[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			base = append(base, c)
		case c >= 'A' && c <= 'Z':
			base = append(base, c+'a'-'A')
		default:
			base = append(base, '-')
		}
	}
	s := string(base)
	for len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		s = "bridge"
	}
	r := make([]byte, 3)
	rand.Read(r)
	return s + "-" + hex.EncodeToString(r)
}

// rollbackBridge deletes a bridge the command created and forgets it, and
// returns cause.
func (a *app) rollbackBridge(ctx context.Context, cl *cluster.Cluster, dir state.Dir, ag interface {
	SetTargets(context.Context, map[uint16]string) error
}, client, ns, name string, cause error) error {
	ctx = context.WithoutCancel(ctx)
	if _, err := cl.DeleteBridge(ctx, ns, name); err != nil {
		a.ui.Warn("could not delete bridge %s again: %v", name, err)
	} else {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := cl.WaitBridgeGone(wctx, client, ns, name, nil); err != nil {
			a.ui.Warn("bridge %s is still being removed by the control plane", name)
		}
		cancel()
	}
	if unlock, err := dir.Lock(); err == nil {
		if st, err := dir.Load(); err == nil && st.Remove(ns, name) {
			if dir.Save(st) == nil {
				ag.SetTargets(ctx, st.Targets())
			}
		}
		unlock()
	}
	return fmt.Errorf("%w (the bridge was removed again)", cause)
}

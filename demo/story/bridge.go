package story

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/bridge"
	"gefyra.dev/gefyra/internal/testworld"
	"gefyra.dev/gefyra/internal/wgnet"
)

// heartbeatEvery is how often a Developer renews its client's lease, well
// inside the control plane's default lease of 60s.
const heartbeatEvery = 10 * time.Second

// Developer is one developer's GefyraClient, registered the way the CLI
// registers it: a WireGuard key made on this machine (the private half
// never leaves it), the public half in the client's spec, and a heartbeat
// that keeps its lease.
type Developer struct {
	User string
	// Name is the GefyraClient's name (bridge.ClientName(User)).
	Name string
	Key  wgnet.Key
	// Address is the tunnel address the control plane allocated.
	Address netip.Addr
	// Stowaway is the cluster's end of the tunnel, as the client's status
	// names it.
	Stowaway gefyrav1.StowawayEndpoint

	addon *Addon
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

// Register creates the GefyraClient of user with a new key, waits for its
// tunnel address and stowaway's key in its status, and renews its heartbeat
// until the caller is done; then it deletes the client and waits until the
// control plane has let it go.
func (a *Addon) Register(t testworld.T, user string) *Developer {
	t.Helper()
	name, err := bridge.ClientName(user)
	if err != nil {
		t.Fatalf("%v", err)
	}
	key, err := wgnet.GeneratePrivateKey()
	if err != nil {
		t.Fatalf("%v", err)
	}
	d := &Developer{User: user, Name: name, Key: key, addon: a}
	c := &gefyrav1.GefyraClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: AddonNamespace, Name: name},
		Spec:       gefyrav1.GefyraClientSpec{User: user, PublicKey: key.PublicKey().String()},
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if err := a.kube.Create(ctx, c); err != nil {
		t.Fatalf("creating GefyraClient %s: %v", name, err)
	}
	t.Logf("GefyraClient %s/%s created for %s, public key %s", AddonNamespace, name, user, c.Spec.PublicKey)
	t.Cleanup(func() { d.Unregister(t) })

	testworld.WaitFor(t, "GefyraClient "+name+" to get a tunnel address", readyTimeout, func(ctx context.Context) (bool, string, error) {
		if err := a.kube.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
			return false, err.Error(), nil
		}
		s := c.Status
		if s.Address == "" || s.Stowaway == nil || s.Stowaway.PublicKey == "" {
			return false, conditionSummary(s.Conditions), nil
		}
		return true, "", nil
	})
	if d.Address, err = netip.ParseAddr(c.Status.Address); err != nil {
		t.Fatalf("GefyraClient %s: address %q: %v", name, c.Status.Address, err)
	}
	d.Stowaway = *c.Status.Stowaway
	t.Logf("GefyraClient %s: tunnel address %s; stowaway %s in tunnel %s, public key %s", name, d.Address,
		d.Stowaway.Address, d.Stowaway.CIDR, d.Stowaway.PublicKey)

	hctx, stop := context.WithCancel(context.Background())
	d.stop = stop
	d.wg.Add(1)
	go d.heartbeat(hctx, t)
	return d
}

// heartbeat renews status.lastHeartbeat until ctx ends.
func (d *Developer) heartbeat(ctx context.Context, t testworld.T) {
	defer d.wg.Done()
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		c := &gefyrav1.GefyraClient{ObjectMeta: metav1.ObjectMeta{Namespace: AddonNamespace, Name: d.Name}}
		patch := fmt.Appendf(nil, `{"status":{"lastHeartbeat":%q}}`, time.Now().UTC().Format(time.RFC3339))
		err := d.addon.kube.Status().Patch(rctx, c, client.RawPatch("application/merge-patch+json", patch))
		cancel()
		if err != nil && ctx.Err() == nil {
			t.Logf("GefyraClient %s: renewing the heartbeat: %v", d.Name, err)
		}
	}
}

// Unregister stops the heartbeat, deletes the client and waits until it is
// gone (the control plane deletes its bridges first). Failures are
// reported with Errorf, so it suits a cleanup; a second call does nothing.
func (d *Developer) Unregister(t testworld.T) {
	t.Helper()
	if d.stop == nil {
		return
	}
	d.stop()
	d.wg.Wait()
	d.stop = nil
	c := &gefyrav1.GefyraClient{ObjectMeta: metav1.ObjectMeta{Namespace: AddonNamespace, Name: d.Name}}
	d.addon.deleteAndWait(t, c, "GefyraClient "+d.Name)
}

// deleteAndWait deletes o and waits until it is gone.
func (a *Addon) deleteAndWait(t testworld.T, o client.Object, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := a.kube.Delete(ctx, o); err != nil {
		if !apierrors.IsNotFound(err) && !meta.IsNoMatchError(err) {
			t.Errorf("deleting %s: %v", what, err)
		}
		return
	}
	start := time.Now()
	err := pollUntil(ctx, func(ctx context.Context) (bool, error) {
		err := a.kube.Get(ctx, client.ObjectKeyFromObject(o), o)
		return apierrors.IsNotFound(err), err
	})
	if err != nil {
		t.Errorf("%s did not go away: %v", what, err)
		return
	}
	t.Logf("%s deleted after %s", what, time.Since(start).Round(10*time.Millisecond))
}

// AgentConfig is the config file of gefyra-agent (cli/internal/agent's
// Config in its JSON form).
type AgentConfig struct {
	PrivateKey string            `json:"privateKey"`
	Address    string            `json:"address"`
	Stowaway   AgentStowaway     `json:"stowaway"`
	Targets    map[string]string `json:"targets"`
	// ProbeInterval, e.g. "2s", is how often the agent checks the tunnel.
	ProbeInterval string `json:"probeInterval,omitempty"`
}

// AgentStowaway is the agent's peer.
type AgentStowaway struct {
	Endpoint   string   `json:"endpoint"`
	PublicKey  string   `json:"publicKey"`
	Address    string   `json:"address,omitempty"`
	AllowedIPs []string `json:"allowedIPs,omitempty"`
}

// AgentConfig is d's agent config: stowaway at the add-on's NodePort,
// targets mapping tunnel ports to local host:port.
func (d *Developer) AgentConfig(targets map[uint16]string) AgentConfig {
	c := AgentConfig{
		PrivateKey: d.Key.String(),
		Address:    d.Address.String(),
		Stowaway: AgentStowaway{
			Endpoint:  d.addon.StowawayEndpoint(),
			PublicKey: d.Stowaway.PublicKey,
			Address:   d.Stowaway.Address,
		},
		Targets:       map[string]string{},
		ProbeInterval: "2s",
	}
	if d.Stowaway.CIDR != "" {
		c.Stowaway.AllowedIPs = []string{d.Stowaway.CIDR}
	}
	for port, target := range targets {
		c.Targets[fmt.Sprint(port)] = target
	}
	return c
}

// Agent is gefyra-agent running on this machine as d's end of the tunnel.
type Agent struct {
	*Process
	Config     AgentConfig
	statusFile string
}

// AgentStatus is the part of the agent's GET /status the story reads.
type AgentStatus struct {
	Up                bool    `json:"up"`
	HandshakeAge      float64 `json:"handshakeAgeSeconds"`
	TotalConnections  int64   `json:"totalConnections"`
	FailedConnections int64   `json:"failedConnections"`
}

// StartAgent builds gefyra-agent (./cli/cmd/gefyra-agent), writes d's
// config with targets into dir, starts the agent (with env added to its
// environment) and waits until its tunnel to stowaway is up.
func (d *Developer) StartAgent(t testworld.T, dir string, targets map[uint16]string, env ...string) *Agent {
	t.Helper()
	bin := d.addon.agentBinary(t, dir)
	cfg := d.AgentConfig(targets)
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("%v", err)
	}
	path := filepath.Join(dir, "agent-"+d.Name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	statusFile := filepath.Join(dir, "agent-"+d.Name+".addr")
	a := &Agent{
		Process:    NewProcess(t, dir, "gefyra-agent-"+d.Name, bin, "-config", path, "-status-addr-file", statusFile, "-log-format", "json"),
		Config:     cfg,
		statusFile: statusFile,
	}
	a.Env = env
	a.Start(t)
	a.WaitUp(t)
	return a
}

// StatusAddr is the host:port of the agent's status endpoint (on
// loopback).
func (a *Agent) StatusAddr() (string, error) {
	addr, err := os.ReadFile(a.statusFile)
	if err != nil {
		return "", fmt.Errorf("the agent's status address: %w", err)
	}
	return strings.TrimSpace(string(addr)), nil
}

// Start starts the agent (again, after Kill).
func (a *Agent) Start(t testworld.T) {
	t.Helper()
	os.Remove(a.statusFile)
	a.Process.Start(t)
}

// Status asks the agent for its status.
func (a *Agent) Status(ctx context.Context) (AgentStatus, error) {
	var s AgentStatus
	addr, err := a.StatusAddr()
	if err != nil {
		return s, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /status: %s", resp.Status)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// WaitUp waits until the agent reports its tunnel up (a handshake with
// stowaway and an answered probe).
func (a *Agent) WaitUp(t testworld.T) {
	t.Helper()
	testworld.WaitFor(t, a.Name+"'s tunnel to stowaway", readyTimeout, func(ctx context.Context) (bool, string, error) {
		if ok, err := a.Running(); !ok {
			return false, "", fmt.Errorf("%s exited: %v", a.Name, err)
		}
		s, err := a.Status(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		return s.Up, fmt.Sprintf("up %t, handshake age %.0fs", s.Up, s.HandshakeAge), nil
	})
}

// agentBinary builds gefyra-agent once per Addon.
func (a *Addon) agentBinary(t testworld.T, dir string) string {
	t.Helper()
	a.agentOnce.Do(func() {
		out := filepath.Join(dir, "gefyra-agent")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := goBuild(ctx, a.Root, out, "./cli/cmd/gefyra-agent"); err != nil {
			a.agentErr = err
			return
		}
		a.agentBin = out
	})
	if a.agentErr != nil {
		t.Fatalf("building gefyra-agent: %v", a.agentErr)
	}
	return a.agentBin
}

// Bridge creates GefyraBridge namespace/name with spec and registers its
// deletion (waiting until the control plane has restored the workload's
// Pods, if it was the last bridge of the mount) as a cleanup.
func (a *Addon) Bridge(t testworld.T, namespace, name string, spec gefyrav1.GefyraBridgeSpec) *gefyrav1.GefyraBridge {
	t.Helper()
	b := &gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Spec: spec}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if err := a.kube.Create(ctx, b); err != nil {
		t.Fatalf("creating GefyraBridge %s/%s: %v", namespace, name, err)
	}
	t.Logf("GefyraBridge %s/%s created: client %s, %s %s container %s, ports %v, %d rule(s)", namespace, name, spec.Client,
		spec.Target.Kind, spec.Target.Name, spec.Target.Container, spec.Ports, len(spec.Rules))
	t.Cleanup(func() { a.DeleteBridge(t, namespace, name) })
	return b
}

// WaitBridgeReady waits until the bridge's Ready condition is True and
// returns the bridge.
func (a *Addon) WaitBridgeReady(t testworld.T, namespace, name string) *gefyrav1.GefyraBridge {
	t.Helper()
	b := &gefyrav1.GefyraBridge{}
	testworld.WaitFor(t, "GefyraBridge "+namespace+"/"+name+" Ready", readyTimeout, func(ctx context.Context) (bool, string, error) {
		if err := a.kube.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, b); err != nil {
			return false, err.Error(), nil
		}
		c := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == b.Generation, conditionSummary(b.Status.Conditions), nil
	})
	return b
}

// DeleteBridge deletes a bridge and waits until it is gone.
func (a *Addon) DeleteBridge(t testworld.T, namespace, name string) {
	t.Helper()
	b := &gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	a.deleteAndWait(t, b, "GefyraBridge "+namespace+"/"+name)
}

// Mount returns the GefyraMount of a target, or nil if there is none.
func (a *Addon) Mount(t testworld.T, namespace string, target gefyrav1.Target) *gefyrav1.GefyraMount {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	m := &gefyrav1.GefyraMount{}
	err := a.kube.Get(ctx, client.ObjectKey{Namespace: namespace, Name: gefyrav1.MountName(target)}, m)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("GefyraMount of %s: %v", target.Name, err)
	}
	return m
}

// conditionSummary is "Type=Status(Reason: message)" of each condition.
func conditionSummary(conds []metav1.Condition) string {
	if len(conds) == 0 {
		return "no conditions yet"
	}
	parts := make([]string, 0, len(conds))
	for _, c := range conds {
		s := fmt.Sprintf("%s=%s", c.Type, c.Status)
		if c.Reason != "" {
			s += "(" + c.Reason
			if c.Message != "" {
				s += ": " + c.Message
			}
			s += ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"gefyra.dev/gefyra/cli/internal/agent/route"
	"gefyra.dev/gefyra/internal/pipe"
	"gefyra.dev/gefyra/internal/wgnet"
)

// Egress
//
// With Config.EgressDevice set, the agent also carries traffic the other
// way: from the local containers into the cluster. It asks stowaway
// through the tunnel where it carries such traffic (wgnet.EgressInfo: the
// cluster's Service and Pod networks and its DNS), makes a TUN device with
// a netstack on it (wgnet.Host), and routes those networks into it. The
// local containers' network namespaces route the same networks to the
// agent's address (see cli/internal/agent/netns), so their packets arrive
// here, are forwarded by the kernel into the device, and each TCP
// connection and UDP flow is terminated and opened anew through the
// tunnel, from the agent's tunnel address, to the address it was meant
// for. stowaway dials it from its Pod. The agent container needs
// CAP_NET_ADMIN, /dev/net/tun and net.ipv4.ip_forward=1 for this;
// everything else of the agent works without.

// Egress states (EgressStatus.State).
const (
	EgressOff         = "off"         // not configured
	EgressWaiting     = "waiting"     // asking stowaway
	EgressReady       = "ready"       // routed
	EgressUnavailable = "unavailable" // stowaway has none, or the device could not be made
)

// Timings of the egress.
const (
	// egressRetry is the pause between questions to stowaway while it
	// does not answer.
	egressRetry = time.Second
	// egressRefresh is how often a ready egress asks again, to follow a
	// changed cluster.
	egressRefresh = time.Minute
	// egressUnavailableRetry is the pause after stowaway said it has no
	// egress, or the device failed.
	egressUnavailableRetry = 30 * time.Second
	// egressDialTimeout bounds opening a connection into the cluster; it
	// outlasts stowaway's own dial timeout, so stowaway's answer (a reset
	// if the destination does not answer) is what the local side gets.
	egressDialTimeout = 10 * time.Second
)

// EgressStatus is the egress part of Status.
type EgressStatus struct {
	State string `json:"state"`
	// Networks are routed into the tunnel; DNS is the cluster DNS and
	// ClusterDomain its domain, for the local containers' resolvers.
	Networks      []netip.Prefix `json:"networks,omitempty"`
	DNS           netip.Addr     `json:"dns,omitzero"`
	ClusterDomain string         `json:"clusterDomain,omitempty"`
	// Device is the TUN device the networks are routed into.
	Device string `json:"device,omitempty"`
	// Error says why the egress is not ready.
	Error string `json:"error,omitempty"`
	// Connections counts TCP connections and UDP flows carried into the
	// cluster; Failed those the cluster refused (or did not answer).
	Active      int64 `json:"activeConnections"`
	Connections int64 `json:"connections"`
	Failed      int64 `json:"failedConnections"`
}

// Info is the EgressInfo the status reports.
func (s EgressStatus) Info() wgnet.EgressInfo {
	return wgnet.EgressInfo{Networks: s.Networks, DNS: s.DNS, ClusterDomain: s.ClusterDomain}
}

// errNoEgress says stowaway carries no traffic into the cluster.
var errNoEgress = errors.New("stowaway carries no traffic into the cluster (it runs without --egress-networks)")

// egress is the agent's way into the cluster.
type egress struct {
	a   *Agent
	net *wgnet.Net

	mu     sync.Mutex // guards the fields below
	status EgressStatus
	host   *wgnet.Host
}

func (e *egress) setStatus(f func(*EgressStatus)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(&e.status)
}

func (e *egress) snapshot() EgressStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.status
	s.Networks = slices.Clone(s.Networks)
	return s
}

// run keeps the egress in step with stowaway's announcement until ctx is
// done, then removes the device.
func (e *egress) run(ctx context.Context) {
	defer func() {
		e.mu.Lock()
		h := e.host
		e.host = nil
		e.mu.Unlock()
		if h != nil {
			h.Close()
		}
	}()
	for {
		wait := egressRetry
		info, err := e.fetch(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errNoEgress):
			e.withdraw(err)
			wait = egressUnavailableRetry
		case err != nil:
			e.setStatus(func(s *EgressStatus) {
				if s.State != EgressReady {
					s.State, s.Error = EgressWaiting, err.Error()
				}
			})
		default:
			if err := e.apply(info); err != nil {
				e.a.log.Warn("agent: cannot route the cluster's networks into the tunnel", "err", err)
				e.setStatus(func(s *EgressStatus) { s.State, s.Error = EgressUnavailable, err.Error() })
				wait = egressUnavailableRetry
			} else {
				wait = egressRefresh
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// fetch asks stowaway for its EgressInfo through the tunnel.
func (e *egress) fetch(ctx context.Context) (wgnet.EgressInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(e.a.cfg.Stowaway.Address.String(), strconv.Itoa(wgnet.EgressInfoPort)) + wgnet.EgressInfoPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return wgnet.EgressInfo{}, err
	}
	var refused atomic.Bool
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := e.net.DialContext(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			refused.Store(true)
		}
		return c, err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		if refused.Load() {
			// An answer, but a reset: stowaway's tunnel address serves
			// no announcement.
			return wgnet.EgressInfo{}, errNoEgress
		}
		return wgnet.EgressInfo{}, fmt.Errorf("asking stowaway for its egress: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return wgnet.EgressInfo{}, errNoEgress
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return wgnet.EgressInfo{}, fmt.Errorf("asking stowaway for its egress: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return wgnet.EgressInfo{}, fmt.Errorf("asking stowaway for its egress: %s", resp.Status)
	}
	info, err := wgnet.ParseEgressInfo(b)
	if err != nil {
		return wgnet.EgressInfo{}, fmt.Errorf("stowaway's egress announcement: %w", err)
	}
	return info, nil
}

// apply makes the device (once) and routes info's networks into it;
// networks no longer announced are unrouted.
func (e *egress) apply(info wgnet.EgressInfo) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	dev := e.a.cfg.EgressDevice
	if e.host == nil {
		h, err := wgnet.NewHost(dev, 0)
		if err != nil {
			return err
		}
		h.HandleTCP(e.handleTCP)
		h.HandleUDP(e.handleUDP)
		e.host = h
	}
	// The tunnel's own packets to stowaway must not be routed into it.
	if ep := e.a.stowawayEndpoint(); ep.IsValid() && info.Contains(ep.Addr()) {
		if err := route.Pin(ep.Addr()); err != nil {
			return err
		}
	}
	// WireGuard first, so that nothing routed into the device is dropped
	// for want of a peer.
	if err := e.a.setEgressNets(info.Networks); err != nil {
		return err
	}
	// IPv4 must route; IPv6 may be off in the container (Docker's
	// default), and then the local containers have none either.
	var v4, v6 []netip.Prefix
	for _, p := range info.Networks {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	if err := route.Device(dev, wgnet.HostMTU, v4); err != nil {
		return err
	}
	if len(v6) > 0 {
		if err := route.Device(dev, 0, v6); err != nil {
			e.a.log.Info("agent: the cluster's IPv6 networks are not routed into the tunnel", "networks", fmt.Sprint(v6), "err", err)
		}
	}
	var gone []netip.Prefix
	for _, p := range e.status.Networks {
		if !slices.Contains(info.Networks, p) {
			gone = append(gone, p)
		}
	}
	if err := route.Remove(gone); err != nil {
		e.a.log.Warn("agent: removing routes", "err", err)
	}
	if e.status.State != EgressReady || !slices.Equal(e.status.Networks, info.Networks) {
		e.a.log.Info("agent: the cluster's networks are routed into the tunnel", "device", dev,
			"networks", fmt.Sprint(info.Networks), "dns", info.DNS.String(), "cluster_domain", info.ClusterDomain)
	}
	e.status.State, e.status.Error, e.status.Device = EgressReady, "", dev
	e.status.Networks, e.status.DNS, e.status.ClusterDomain = slices.Clone(info.Networks), info.DNS, info.ClusterDomain
	return nil
}

// withdraw unroutes the networks of an egress stowaway no longer
// announces (it was restarted without), and says why.
func (e *egress) withdraw(why error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.status.Networks) > 0 {
		if err := route.Remove(e.status.Networks); err != nil {
			e.a.log.Warn("agent: removing routes", "err", err)
		}
		if err := e.a.setEgressNets(nil); err != nil {
			e.a.log.Warn("agent: removing routes", "err", err)
		}
		e.a.log.Info("agent: stowaway no longer carries traffic into the cluster; the cluster's networks are unrouted")
	}
	e.status = EgressStatus{State: EgressUnavailable, Error: why.Error(), Active: e.status.Active, Connections: e.status.Connections, Failed: e.status.Failed}
}

// handleTCP opens the connection through the tunnel first and completes
// the local handshake only if that worked, so a refusal in the cluster is
// a refusal here.
func (e *egress) handleTCP(r *wgnet.TCPRequest) {
	a := e.a
	if !a.begin() {
		r.Reject()
		return
	}
	defer a.wg.Done()
	e.count(func(s *EgressStatus) { s.Connections++ })
	ctx, cancel := context.WithTimeout(context.Background(), egressDialTimeout)
	up, err := e.net.DialContext(ctx, "tcp", r.Local.String())
	cancel()
	if err != nil {
		e.count(func(s *EgressStatus) { s.Failed++ })
		a.log.Debug("agent: egress: the cluster does not answer", "to", r.Local.String(), "err", err)
		r.Reject()
		return
	}
	c, err := r.Accept()
	if err != nil {
		up.Close()
		return
	}
	if !a.track(c, up) {
		c.Close()
		up.Close()
		return
	}
	defer a.untrack(c, up)
	e.count(func(s *EgressStatus) { s.Active++ })
	defer e.count(func(s *EgressStatus) { s.Active-- })
	if _, _, err := pipe.Join(context.Background(), c, up); err != nil {
		a.log.Debug("agent: egress connection ended with an error", "to", r.Local.String(), "err", err)
	}
}

// handleUDP takes the flow at once (it runs on the packet path) and
// relays it through the tunnel in a goroutine.
func (e *egress) handleUDP(r *wgnet.UDPRequest) {
	a := e.a
	if !a.begin() {
		return
	}
	c, err := r.Accept()
	if err != nil {
		a.wg.Done()
		return
	}
	go func() {
		defer a.wg.Done()
		defer c.Close()
		e.count(func(s *EgressStatus) { s.Connections++ })
		up, err := e.net.DialUDP("udp", r.Local.String())
		if err != nil {
			e.count(func(s *EgressStatus) { s.Failed++ })
			return
		}
		defer up.Close()
		if !a.track(c, up) {
			return
		}
		defer a.untrack(c, up)
		e.count(func(s *EgressStatus) { s.Active++ })
		defer e.count(func(s *EgressStatus) { s.Active-- })
		if err := wgnet.JoinUDP(context.Background(), c, up, wgnet.UDPIdle(r.Local.Port()), nil, nil); err != nil {
			a.log.Debug("agent: egress UDP flow ended with an error", "to", r.Local.String(), "err", err)
		}
	}()
}

func (e *egress) count(f func(*EgressStatus)) { e.setStatus(f) }

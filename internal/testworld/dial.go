package testworld

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gefyra.dev/gefyra/internal/testworld/dnsq"
)

// Reachable reports whether ip is an address the host reaches inside the
// world: a Service, a Pod, the node, or loopback. Nothing else is dialled.
func (w *World) Reachable(ip net.IP) bool {
	if ip.IsLoopback() {
		return true
	}
	if w.ServiceCIDR.Contains(ip) || w.PodCIDR.Contains(ip) {
		return true
	}
	return ip.String() == w.NodeIP
}

// Dialer dials only addresses the world owns (see Reachable), so a test can
// never send traffic anywhere else by mistake.
func (w *World) Dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ip := net.ParseIP(host)
		if ip == nil || !w.Reachable(ip) {
			return nil, fmt.Errorf("testworld: refusing to dial %s: not an address of the test world", addr)
		}
		return d.DialContext(ctx, network, addr)
	}
}

// HTTPClient is an HTTP client for ClusterIPs, Pod IPs and NodePorts, as a
// browser on the host would reach the cluster. No proxy, no keep-alive
// between tests.
func (w *World) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:       w.Dialer(),
			DisableKeepAlives: true,
		},
	}
}

// Service returns a Service.
func (w *World) Service(t T, namespace, name string) *corev1.Service {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svc, err := w.Client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("service %s/%s: %v", namespace, name, err)
	}
	return svc
}

// ServiceAddr is the host-reachable ClusterIP:port of a Service's port.
func (w *World) ServiceAddr(t T, namespace, name string, port int32) string {
	t.Helper()
	svc := w.Service(t, namespace, name)
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("service %s/%s has no ClusterIP", namespace, name)
	}
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(port)))
		}
	}
	t.Fatalf("service %s/%s has no port %d", namespace, name, port)
	return ""
}

// NodePortAddr is the node's IP and the NodePort given to a Service's port
// and protocol.
func (w *World) NodePortAddr(t T, namespace, name string, port int32, proto corev1.Protocol) string {
	t.Helper()
	svc := w.Service(t, namespace, name)
	for _, p := range svc.Spec.Ports {
		if p.Port == port && p.Protocol == proto && p.NodePort != 0 {
			return net.JoinHostPort(w.NodeIP, strconv.Itoa(int(p.NodePort)))
		}
	}
	t.Fatalf("service %s/%s has no NodePort for %d/%s", namespace, name, port, proto)
	return ""
}

// AskDNS asks the cluster DNS (DNSIP, port 53) one question from the host,
// over network "udp" or "tcp", through Dialer: name is taken as fully
// qualified. It fails when the world has no cluster DNS.
func (w *World) AskDNS(ctx context.Context, network, name string, qtype dnsmessage.Type) (*dnsq.Answer, error) {
	if w.DNSIP == "" {
		return nil, fmt.Errorf("testworld: this world has no cluster DNS (world.env names no GEFYRA_WORLD_DNS_IP); restart it with world/world.sh down and up")
	}
	return dnsq.Ask(ctx, w.Dialer(), network, net.JoinHostPort(w.DNSIP, "53"), name, qtype)
}

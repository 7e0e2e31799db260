package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"

	"gefyra.dev/gefyra/internal/testworld"
)

// checkRoot: Up and Down start and stop Docker Engine and a Kubernetes
// node, and read the world's admin credentials.
func (s *Sandbox) checkRoot(cmd string) error {
	euid := os.Geteuid
	if s.geteuid != nil {
		euid = s.geteuid
	}
	return needRoot(euid(), cmd)
}

// NeedRoot says, in one line, that `gefyra sandbox cmd` needs root, if
// this process lacks it.
func NeedRoot(cmd string) error { return needRoot(os.Geteuid(), cmd) }

func needRoot(euid int, cmd string) error {
	if euid != 0 {
		return fmt.Errorf("gefyra sandbox %s needs root: it starts and stops Docker Engine and a Kubernetes node on this machine (sudo gefyra sandbox %s)", cmd, cmd)
	}
	return nil
}

// repoFiles are what the sandbox uses of the repository.
var repoFiles = []string{"world/world.sh", "world/docker.sh", "world/snapshot.sh", "world/images.sh", "world/lib/common.sh",
	"deploy/kustomization.yaml", "demo/deploy/local/kustomization.yaml", "demo/app/main.go"}

// CheckRoot says whether root is the gefyra repository, which the sandbox
// builds the cluster and the images from.
func CheckRoot(root string) error {
	for _, f := range repoFiles {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			return fmt.Errorf("%s is not the gefyra repository (no %s): the sandbox builds the cluster and the images from its source; "+
				"run it inside the repository, or pass --root DIR", root, f)
		}
	}
	return nil
}

// checkTools: the world's scripts need these.
func checkTools() error {
	for _, tool := range []struct{ name, hint string }{
		{"go", "install Go (https://go.dev/dl) and put its bin directory on PATH: the sandbox builds the cluster and the images from source"},
		{"docker", "install Docker Engine (apt-get install docker.io)"},
		{"diff", "install diffutils"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return fmt.Errorf("no %s on PATH: %s", tool.name, tool.hint)
		}
	}
	return nil
}

// checkDocker: a Docker Engine that is not running must be installed.
func checkDocker() error {
	if _, err := exec.LookPath("dockerd"); err != nil {
		return errors.New("Docker Engine is not running, and not installed (no dockerd on PATH): install it (apt-get install docker.io), or start yours")
	}
	return nil
}

// worldNet is what the world takes of this machine's network: its host
// interface and the address ranges it routes (world/lib/common.sh).
type worldNet struct {
	HostIf string
	Ranges []netip.Prefix
}

// readWorldNet asks world/lib/common.sh for the world's ranges.
func (s *Sandbox) readWorldNet(ctx context.Context, root string) (worldNet, error) {
	const script = `. "$1"; printf '%s\n' "$HOST_IF" "$HOST_IP/$LINK_PREFIX" "$POD_CIDR" "$SERVICE_CIDR"`
	out, err := exec.CommandContext(ctx, "bash", "-c", script, "bash", filepath.Join(root, "world", "lib", "common.sh")).Output()
	if err != nil {
		return worldNet{}, fmt.Errorf("reading the world's addresses from world/lib/common.sh: %w", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 4 {
		return worldNet{}, fmt.Errorf("world/lib/common.sh: want the host interface and 3 ranges, got %q", out)
	}
	n := worldNet{HostIf: lines[0]}
	for _, l := range lines[1:] {
		p, err := netip.ParsePrefix(l)
		if err != nil {
			return worldNet{}, fmt.Errorf("world/lib/common.sh: %w", err)
		}
		n.Ranges = append(n.Ranges, p.Masked())
	}
	return n, nil
}

// hostAddr is an address of an interface of this machine, or a route.
type hostAddr struct {
	Dev    string
	Prefix netip.Prefix
	Route  bool
}

// hostAddrs lists the machine's IPv4 interface addresses and routes.
func hostAddrs(ctx context.Context) ([]hostAddr, error) {
	var out []hostAddr
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || !ip.Unmap().Is4() {
				continue
			}
			ones, _ := ipn.Mask.Size()
			out = append(out, hostAddr{Dev: ifc.Name, Prefix: netip.PrefixFrom(ip.Unmap(), ones)})
		}
	}
	b, err := exec.CommandContext(ctx, "ip", "-4", "-o", "route", "show", "table", "all").Output()
	if err != nil {
		return nil, fmt.Errorf("ip route: %w", err)
	}
	return append(out, parseRoutes(b)...), nil
}

// parseRoutes reads `ip -4 -o route show` lines: the destination (a
// prefix, an address, or default) after an optional route type, and the
// device. The local, broadcast, multicast and anycast routes (the
// interfaces' own addresses, listed apart) and lines it cannot read are
// skipped.
func parseRoutes(b []byte) []hostAddr {
	var out []hostAddr
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && slices.Contains([]string{"unicast", "unreachable", "blackhole", "prohibit", "throw"}, f[0]) {
			f = f[1:]
		}
		if len(f) == 0 || slices.Contains([]string{"local", "broadcast", "multicast", "anycast", "default"}, f[0]) {
			continue
		}
		p, err := netip.ParsePrefix(f[0])
		if !strings.Contains(f[0], "/") {
			var a netip.Addr
			if a, err = netip.ParseAddr(f[0]); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil || !p.Addr().Is4() {
			continue
		}
		dev := ""
		if i := slices.Index(f, "dev"); i >= 0 && i+1 < len(f) {
			dev = f[i+1]
		}
		out = append(out, hostAddr{Dev: dev, Prefix: p.Masked(), Route: true})
	}
	return out
}

// addressConflicts names each address or route of the machine that
// overlaps a range the world needs, but is not the world's own (what an
// earlier world left, `world.sh up` removes itself).
func addressConflicts(n worldNet, have []hostAddr) []string {
	var out []string
	for _, h := range have {
		if h.Dev == n.HostIf {
			continue
		}
		for _, r := range n.Ranges {
			if !r.Overlaps(h.Prefix) {
				continue
			}
			what := "address " + h.Prefix.String()
			if h.Route {
				what = "a route to " + h.Prefix.String()
			}
			if h.Dev != "" {
				what += " on " + h.Dev
			}
			out = append(out, fmt.Sprintf("%s overlaps %s, which the test world needs", what, r))
		}
	}
	return out
}

// claims are the names, addresses and ports the sandbox's manifests pin in
// the cluster.
type claims struct {
	Namespaces []string
	CRDs       []string
	// ClusterIPs and NodePorts map each to the Service that pins it.
	ClusterIPs map[string]string
	NodePorts  map[int32]string
}

// manifestObject is what parseClaims reads of an object.
type manifestObject struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		ClusterIP string `json:"clusterIP"`
		Ports     []struct {
			NodePort int32 `json:"nodePort"`
		} `json:"ports"`
	} `json:"spec"`
}

// parseClaims reads rendered manifests (YAML documents, as `kubectl
// kustomize` prints them) and adds what they pin to c.
func parseClaims(c *claims, b []byte) error {
	if c.ClusterIPs == nil {
		c.ClusterIPs = map[string]string{}
	}
	if c.NodePorts == nil {
		c.NodePorts = map[int32]string{}
	}
	dec := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var o manifestObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the manifests: %w", err)
		}
		name := o.Metadata.Namespace + "/" + o.Metadata.Name
		switch o.Kind {
		case "Namespace":
			c.Namespaces = append(c.Namespaces, o.Metadata.Name)
		case "CustomResourceDefinition":
			c.CRDs = append(c.CRDs, o.Metadata.Name)
		case "Service":
			if ip := o.Spec.ClusterIP; ip != "" && ip != "None" {
				c.ClusterIPs[ip] = name
			}
			for _, p := range o.Spec.Ports {
				if p.NodePort != 0 {
					c.NodePorts[p.NodePort] = name
				}
			}
		}
	}
}

// clusterConflicts checks, on a world that runs already, that nothing holds
// the namespaces, CRDs, ClusterIPs and NodePorts the sandbox's manifests
// pin (demo/deploy/local and deploy/).
func clusterConflicts(ctx context.Context, w *testworld.World, root string) ([]string, error) {
	var c claims
	for _, dir := range []string{filepath.Join(root, "demo", "deploy", "local"), filepath.Join(root, "deploy")} {
		out, err := w.RunKubectl(ctx, "", "kustomize", dir)
		if err != nil {
			return nil, err
		}
		if err := parseClaims(&c, []byte(out)); err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
	}
	var problems []string
	const hint = "something else uses the world (another sandbox, `make demo` or an end-to-end test): wait until it is done, or remove it"
	for _, ns := range c.Namespaces {
		if _, err := w.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
			problems = append(problems, fmt.Sprintf("namespace %s exists already: %s", ns, hint))
		}
	}
	if len(c.CRDs) > 0 {
		out, err := w.RunKubectl(ctx, "", "get", "customresourcedefinitions", "-o", "name")
		if err != nil {
			return nil, err
		}
		for _, crd := range c.CRDs {
			if slices.Contains(strings.Fields(out), "customresourcedefinition.apiextensions.k8s.io/"+crd) {
				problems = append(problems, fmt.Sprintf("gefyra's CRD %s is installed already: %s", crd, hint))
			}
		}
	}
	svcs, err := w.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, svc := range svcs.Items {
		holder := svc.Namespace + "/" + svc.Name
		for _, ip := range svc.Spec.ClusterIPs {
			if want, ok := c.ClusterIPs[ip]; ok {
				problems = append(problems, fmt.Sprintf("ClusterIP %s (for Service %s) is taken by Service %s", ip, want, holder))
			}
		}
		for _, p := range svc.Spec.Ports {
			if want, ok := c.NodePorts[p.NodePort]; ok && p.NodePort != 0 {
				problems = append(problems, fmt.Sprintf("NodePort %d (for Service %s) is taken by Service %s", p.NodePort, want, holder))
			}
		}
	}
	return problems, nil
}

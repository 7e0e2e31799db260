// Package testworld connects end-to-end tests to the test world, the real
// single-node Kubernetes that world/world.sh starts on this machine: it finds
// the admin kubeconfig, gives a client-go clientset and the world's own
// kubectl, loads images into the cluster's containerd, builds images FROM
// scratch, applies manifests and removes them again (in t.Cleanup, so also
// when a test fails), waits for Pods and Deployments with progress in the
// test log, dials ClusterIPs, Pod IPs and NodePorts from the host, and asks
// the cluster DNS from there (AskDNS).
//
// A test that needs the world and does not find it fails (it never skips):
// the message says to run `make cluster-up`.
package testworld

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// DefaultKubeconfig is where world.sh writes the admin kubeconfig; the
// environment variable GEFYRA_KUBECONFIG overrides it.
const DefaultKubeconfig = "/run/gefyra-world/kubeconfig"

// UpHint is what a test says when the world is not running.
const UpHint = "run `make cluster-up` (world/world.sh up)"

// World is a running test world.
type World struct {
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface

	// From world.env, written by world.sh beside the kubeconfig.
	NodeName, NodeIP, HostIP string
	PodCIDR, ServiceCIDR     *net.IPNet
	// DNSIP is the ClusterIP of the cluster DNS (kube-system/kube-dns), and
	// ClusterDomain its domain; both empty for a world without one.
	DNSIP, ClusterDomain string

	kubectl    string
	ctr        string
	containerd string
}

// Get returns the running world, or fails the test with UpHint.
func Get(t T) *World {
	t.Helper()
	w, err := Open(context.Background())
	if err != nil {
		t.Fatalf("the test world is not running: %v; %s", err, UpHint)
	}
	return w
}

// Open finds the world (see Get) and checks that its API server answers.
func Open(ctx context.Context) (*World, error) {
	path := os.Getenv("GEFYRA_KUBECONFIG")
	if path == "" {
		path = DefaultKubeconfig
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no kubeconfig: %w", err)
	}
	env, err := readEnv(filepath.Join(filepath.Dir(path), "world.env"))
	if err != nil {
		return nil, err
	}
	w := &World{
		Kubeconfig:    path,
		NodeName:      env["GEFYRA_WORLD_NODE_NAME"],
		NodeIP:        env["GEFYRA_WORLD_NODE_IP"],
		HostIP:        env["GEFYRA_WORLD_HOST_IP"],
		DNSIP:         env["GEFYRA_WORLD_DNS_IP"],
		ClusterDomain: env["GEFYRA_WORLD_CLUSTER_DOMAIN"],
		kubectl:       env["GEFYRA_WORLD_KUBECTL"],
		ctr:           env["GEFYRA_WORLD_CTR"],
		containerd:    env["GEFYRA_WORLD_CONTAINERD"],
	}
	for k, dst := range map[string]**net.IPNet{"GEFYRA_WORLD_POD_CIDR": &w.PodCIDR, "GEFYRA_WORLD_SERVICE_CIDR": &w.ServiceCIDR} {
		if _, n, err := net.ParseCIDR(env[k]); err == nil {
			*dst = n
		} else {
			return nil, fmt.Errorf("world.env: %s=%q: %v", k, env[k], err)
		}
	}
	if w.kubectl == "" {
		if w.kubectl, err = exec.LookPath("kubectl"); err != nil {
			return nil, fmt.Errorf("world.env names no kubectl and none is on PATH")
		}
	}
	w.Config, err = clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	w.Config.QPS, w.Config.Burst = 50, 100
	if w.Client, err = kubernetes.NewForConfig(w.Config); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := w.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return nil, fmt.Errorf("the API server at %s does not answer: %w", w.Config.Host, err)
	}
	return w, nil
}

// readEnv reads the KEY=VALUE lines world.sh writes.
func readEnv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseEnv(path, b)
}

// parseEnv parses KEY=VALUE lines; blank lines and # comments are skipped.
func parseEnv(path string, b []byte) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s: line %q is not KEY=VALUE", path, line)
		}
		env[k] = v
	}
	return env, sc.Err()
}

// RunKubectl runs the world's kubectl as the cluster admin with stdin (may be
// empty) and returns its standard output; the error carries its standard
// error.
func (w *World) RunKubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, w.kubectl, append([]string{"--kubeconfig", w.Kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Kubectl runs kubectl (see RunKubectl) and fails the test if it fails.
func (w *World) Kubectl(t T, args ...string) string {
	t.Helper()
	return w.KubectlStdin(t, "", args...)
}

// KubectlStdin is Kubectl with a standard input.
func (w *World) KubectlStdin(t T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Logf("kubectl %s", strings.Join(args, " "))
	out, err := w.RunKubectl(ctx, stdin, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// LoadImages imports docker-archive tarballs into the cluster's containerd
// (what `world.sh load` does). Importing an image twice is cheap.
func (w *World) LoadImages(t T, tars ...string) {
	t.Helper()
	if w.ctr == "" || w.containerd == "" {
		t.Fatalf("world.env names no ctr or containerd socket; %s", UpHint)
	}
	for _, tar := range tars {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, w.ctr, "--address", w.containerd, "--namespace", "k8s.io",
			"images", "import", tar).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("importing %s: %v: %s", tar, err, out)
		}
		t.Logf("loaded %s", filepath.Base(tar))
	}
}

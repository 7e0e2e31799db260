package operator_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	corev1 "k8s.io/api/core/v1"

	"gefyra.dev/gefyra/controlplane/internal/app"
	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/controlplane/internal/operator"
	"gefyra.dev/gefyra/internal/testworld/envtestassets"
)

// The world every test of this package shares: a real kube-apiserver and
// etcd (envtest; no kubelet, no controller-manager) with gefyra's CRDs, RBAC
// and admission policy from deploy/, and one control plane running against
// it with leader election.
var (
	restCfg   *rest.Config
	k8s       client.Client
	published = &recorder{}
	repoRoot  string
	assetsDir string
	// leader is the control plane every test runs against.
	leader *app.ControlPlane
)

const (
	carrierImage = "gefyra.dev/carrier:0.1.0"
	// defaultLease is short so the lease test is quick; every other test's
	// clients set a long lease of their own.
	defaultLease = 3 * time.Second
)

type recorder struct {
	mu sync.Mutex // guards the fields below
	m  *model.Model
	n  int
}

func (r *recorder) Publish(_ context.Context, m *model.Model) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m, r.n = m, r.n+1
	return nil
}

func (r *recorder) latest() *model.Model {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	repoRoot, err = envtestassets.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	assets, cleanup, err := envtestassets.Link(repoRoot)
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		return 1
	}
	defer cleanup()
	assetsDir = assets
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(repoRoot, "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	restCfg, err = env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting kube-apiserver and etcd:", err)
		return 1
	}
	defer env.Stop()
	scheme, err := operator.Scheme()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	k8s, err = client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, f := range []string{"namespace.yaml", "rbac/operator.yaml", "rbac/developer.yaml", "rbac/developer-policy.yaml"} {
		if err := applyFile(ctx, filepath.Join(repoRoot, "deploy", f)); err != nil {
			fmt.Fprintf(os.Stderr, "applying deploy/%s: %v\n", f, err)
			return 1
		}
	}
	logOut := io.Discard
	if os.Getenv("GEFYRA_TEST_LOG") != "" {
		logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cp, err := app.New(ctx, app.Config{
		Operator: operator.Config{
			Namespace:               "gefyra",
			CarrierImage:            carrierImage,
			DefaultLease:            defaultLease,
			TunnelCIDR:              netip.MustParsePrefix("10.122.0.0/24"),
			StowawayEndpoint:        "127.0.0.1:31820",
			MaxConcurrentReconciles: 4,
		},
		Kube:           restCfg,
		LeaderElection: true,
		AdminAddr:      "127.0.0.1:0",
		Holdoff:        20 * time.Millisecond,
		MaxDelay:       200 * time.Millisecond,
		Publisher:      published,
		Log:            log,
		Registry:       prometheus.NewRegistry(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "control plane:", err)
		return 1
	}
	leader = cp
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	select {
	case <-cp.Elected():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "the control plane did not become leader")
		return 1
	}
	code := m.Run()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "control plane:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// applyFile creates every object of a multi-document YAML file.
func applyFile(ctx context.Context, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := k8s.Create(ctx, &u); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

// eventually retries f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

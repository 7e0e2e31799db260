package v1alpha1_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/testworld/envtestassets"
)

// TestAPIServerPortProtocol checks the bridge CRD's port protocol, as
// installed from deploy/crds, against the real API server: it defaults to
// HTTP, accepts TCP, refuses anything else, and refuses rules on a bridge
// with a TCP port with a message that says why.
func TestAPIServerPortProtocol(t *testing.T) {
	root, err := envtestassets.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	assets, cleanup, err := envtestassets.Link(root)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	scheme := runtime.NewScheme()
	if err := gefyrav1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const ns = "shop"
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}

	rule := []gefyrav1.Rule{{Headers: []gefyrav1.HeaderMatch{{Name: "x-user", Value: "john"}}}}
	tests := []struct {
		name    string
		ports   []gefyrav1.PortMapping
		rules   []gefyrav1.Rule
		want    []gefyrav1.PortProtocol // as stored, when accepted
		wantErr string
	}{
		{name: "default is HTTP", ports: []gefyrav1.PortMapping{{Remote: 8080, Local: 8080}}, rules: rule,
			want: []gefyrav1.PortProtocol{gefyrav1.ProtocolHTTP}},
		{name: "HTTP and TCP without rules", ports: []gefyrav1.PortMapping{
			{Remote: 8080, Local: 8080, Protocol: gefyrav1.ProtocolHTTP}, {Remote: 5432, Local: 15432, Protocol: gefyrav1.ProtocolTCP}},
			want: []gefyrav1.PortProtocol{gefyrav1.ProtocolHTTP, gefyrav1.ProtocolTCP}},
		{name: "TCP with rules", ports: []gefyrav1.PortMapping{
			{Remote: 8080, Local: 8080}, {Remote: 5432, Local: 5432, Protocol: gefyrav1.ProtocolTCP}}, rules: rule,
			wantErr: "a bridge with a TCP port cannot have rules: rules select HTTP requests"},
		{name: "UDP", ports: []gefyrav1.PortMapping{{Remote: 53, Local: 53, Protocol: "UDP"}},
			wantErr: `spec.ports[0].protocol: Unsupported value: "UDP": supported values: "HTTP", "TCP"`},
		{name: "lower case", ports: []gefyrav1.PortMapping{{Remote: 53, Local: 53, Protocol: "tcp"}},
			wantErr: `Unsupported value: "tcp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &gefyrav1.GefyraBridge{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "b-"},
				Spec: gefyrav1.GefyraBridgeSpec{Client: "alice",
					Target: gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "orders", Container: "app"},
					Ports:  tt.ports, Rules: tt.rules},
			}
			err := k8s.Create(ctx, b)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("create: %v; want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := &gefyrav1.GefyraBridge{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(b), got); err != nil {
				t.Fatal(err)
			}
			for i, p := range got.Spec.Ports {
				if p.Protocol != tt.want[i] {
					t.Errorf("port %d stored with protocol %q, want %q", p.Remote, p.Protocol, tt.want[i])
				}
			}
			// What the API server accepts, the control plane's model accepts.
			if _, _, err := got.Spec.Model(); err != nil {
				t.Errorf("the model refuses what the API server accepted: %v", err)
			}
		})
	}
}

package operator_test

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gefyra.dev/gefyra/controlplane/internal/app"
	"gefyra.dev/gefyra/controlplane/internal/operator"
)

// TestStowawayKeyBeforeAnyClient starts a control plane in a namespace of
// its own, where no client ever registers: stowaway's key Secret must
// appear anyway, since stowaway's Pod mounts it and does not start without
// it.
func TestStowawayKeyBeforeAnyClient(t *testing.T) {
	ns := newNamespace(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp, err := app.New(ctx, app.Config{
		Operator: operator.Config{Namespace: ns, CarrierImage: carrierImage,
			TunnelCIDR: netip.MustParsePrefix("10.122.0.0/24")},
		Kube:           restCfg,
		LeaderElection: true,
		Holdoff:        20 * time.Millisecond,
		MaxDelay:       200 * time.Millisecond,
		Publisher:      &recorder{},
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry:       prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	var s corev1.Secret
	eventually(t, 30*time.Second, "stowaway's key Secret", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gefyra-stowaway"}, &s)
	})
	key, err := base64.StdEncoding.DecodeString(string(s.Data["privateKey"]))
	if err != nil || len(key) != 32 {
		t.Fatalf("privateKey %q is not a base64 WireGuard key (%v)", s.Data["privateKey"], err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("control plane: %v", err)
	}
}

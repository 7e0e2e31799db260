package operator_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gefyra.dev/gefyra/controlplane/internal/app"
	"gefyra.dev/gefyra/controlplane/internal/operator"
)

// TestSecondReplicaFollowsAndServesTheModel starts a second control plane
// beside the first: it must not lead (so it reconciles nothing) while it
// still builds and publishes the model for its xDS clients.
func TestSecondReplicaFollowsAndServesTheModel(t *testing.T) {
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	second, err := app.New(ctx, app.Config{
		Operator: operator.Config{Namespace: "gefyra", CarrierImage: carrierImage,
			TunnelCIDR: netip.MustParsePrefix("10.122.0.0/24")},
		Kube:           restCfg,
		LeaderElection: true,
		AdminAddr:      "127.0.0.1:0",
		Holdoff:        20 * time.Millisecond,
		MaxDelay:       200 * time.Millisecond,
		Publisher:      rec,
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry:       prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- second.Run(ctx) }()
	newClient(t, "dev-replica")
	eventually(t, 20*time.Second, "the follower publishes a model with the new client", func() error {
		m := rec.latest()
		if m == nil {
			return errNotYet
		}
		for _, c := range m.Clients {
			if c.Name == "dev-replica" {
				return nil
			}
		}
		return errNotYet
	})
	select {
	case <-second.Elected():
		t.Fatal("a second replica became leader while the first one leads")
	default:
	}
	eventually(t, 10*time.Second, "the follower is ready", func() error {
		return httpOK("http://" + second.AdminAddr() + "/readyz")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("second replica: %v", err)
	}
}

// TestMetricsOnAdminEndpoint reads the leader's reconcile metrics the way
// Prometheus does.
func TestMetricsOnAdminEndpoint(t *testing.T) {
	newClient(t, "dev-metrics")
	var body string
	eventually(t, 10*time.Second, "metrics", func() error {
		resp, err := http.Get("http://" + leader.AdminAddr() + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		body = string(b)
		for _, want := range []string{
			`gefyra_controlplane_reconciles_total{controller="gefyraclient",result="requeue"}`,
			`gefyra_controlplane_model_publishes_total{result="ok"}`,
			`gefyra_controlplane_reconcile_duration_seconds_bucket{controller="gefyraclient"`,
		} {
			if !strings.Contains(body, want) {
				return errNotYet
			}
		}
		return nil
	})
}

var errNotYet = errorString("not yet")

type errorString string

func (e errorString) Error() string { return string(e) }

func httpOK(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errorString(resp.Status)
	}
	return nil
}

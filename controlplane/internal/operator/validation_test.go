package operator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

// TestAPIServerRejectsBadSpecs checks the CRDs' schemas and CEL rules, as
// installed from deploy/crds, against the real API server.
func TestAPIServerRejectsBadSpecs(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "demo", Container: "app"}
	goodBridge := func() *gefyrav1.GefyraBridge {
		return &gefyrav1.GefyraBridge{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "b-"},
			Spec: gefyrav1.GefyraBridgeSpec{Client: "someone", Target: target,
				Ports: []gefyrav1.PortMapping{{Remote: 8155, Local: 8155}}},
		}
	}
	tests := []struct {
		name    string
		obj     func() any
		wantErr string // "" means accepted
	}{
		{name: "good bridge", obj: func() any { return goodBridge() }},
		{name: "good bridge with rules and ttl", obj: func() any {
			b := goodBridge()
			b.Spec.Rules = []gefyrav1.Rule{{Headers: []gefyrav1.HeaderMatch{{Name: "X-User", Type: "Prefix", Value: "jo"}}},
				{Path: &gefyrav1.PathMatch{Type: "RegularExpression", Value: "^/items/[0-9]+$"}}}
			b.Spec.TTL = &metav1.Duration{Duration: time.Hour}
			return b
		}},
		{name: "port zero", obj: func() any {
			b := goodBridge()
			b.Spec.Ports[0].Remote = 0
			return b
		}, wantErr: "spec.ports[0].remote: Invalid value: 0: spec.ports[0].remote in body should be greater than or equal to 1"},
		{name: "port too high", obj: func() any {
			b := goodBridge()
			b.Spec.Ports[0].Local = 70000
			return b
		}, wantErr: "should be less than or equal to 65535"},
		{name: "no ports", obj: func() any {
			b := goodBridge()
			b.Spec.Ports = nil
			return b
		}, wantErr: "spec.ports: Required value"},
		{name: "remote port twice", obj: func() any {
			b := goodBridge()
			b.Spec.Ports = append(b.Spec.Ports, gefyrav1.PortMapping{Remote: 8155, Local: 9000})
			return b
		}, wantErr: "Duplicate value"},
		{name: "empty rule", obj: func() any {
			b := goodBridge()
			b.Spec.Rules = []gefyrav1.Rule{{}}
			return b
		}, wantErr: "a rule needs at least one header or path match"},
		{name: "relative path", obj: func() any {
			b := goodBridge()
			b.Spec.Rules = []gefyrav1.Rule{{Path: &gefyrav1.PathMatch{Type: "Prefix", Value: "items"}}}
			return b
		}, wantErr: "an Exact or Prefix path must start with /"},
		{name: "bad header name", obj: func() any {
			b := goodBridge()
			b.Spec.Rules = []gefyrav1.Rule{{Headers: []gefyrav1.HeaderMatch{{Name: "x user", Value: "a"}}}}
			return b
		}, wantErr: "spec.rules[0].headers[0].name"},
		{name: "unknown match type", obj: func() any {
			b := goodBridge()
			b.Spec.Rules = []gefyrav1.Rule{{Path: &gefyrav1.PathMatch{Type: "Glob", Value: "/a*"}}}
			return b
		}, wantErr: `Unsupported value: "Glob"`},
		{name: "unknown target kind", obj: func() any {
			b := goodBridge()
			b.Spec.Target.Kind = "Job"
			return b
		}, wantErr: `spec.target.kind: Unsupported value: "Job"`},
		{name: "ttl too short", obj: func() any {
			b := goodBridge()
			b.Spec.TTL = &metav1.Duration{Duration: time.Second}
			return b
		}, wantErr: "ttl must be between 10s and 168h"},
		{name: "client key not base64 of 32 bytes", obj: func() any {
			return &gefyrav1.GefyraClient{ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: "badkey"},
				Spec: gefyrav1.GefyraClientSpec{User: "badkey", PublicKey: "bm90IGEga2V5"}}
		}, wantErr: "spec.publicKey: Invalid value"},
		{name: "client lease too short", obj: func() any {
			return &gefyrav1.GefyraClient{ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: "shortlease"},
				Spec: gefyrav1.GefyraClientSpec{User: "shortlease", PublicKey: publicKey(t), LeaseDuration: &metav1.Duration{Duration: time.Second}}}
		}, wantErr: "leaseDuration must be between 10s and 24h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := tt.obj()
			var err error
			switch o := obj.(type) {
			case *gefyrav1.GefyraBridge:
				err = k8s.Create(ctx, o)
			case *gefyrav1.GefyraClient:
				err = k8s.Create(ctx, o)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v; want an error containing %q", err, tt.wantErr)
			}
		})
	}

	t.Run("immutable fields", func(t *testing.T) {
		b := goodBridge()
		if err := k8s.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
		patch := func(change func(b *gefyrav1.GefyraBridge)) error {
			orig := b.DeepCopy()
			change(b)
			// A merge patch carries no resourceVersion: the operator's own
			// updates (its finalizer) cannot make it conflict.
			return k8s.Patch(ctx, b, client.MergeFrom(orig))
		}
		if err := patch(func(b *gefyrav1.GefyraBridge) { b.Spec.Client = "someone-else" }); err == nil || !strings.Contains(err.Error(), "client is immutable") {
			t.Fatalf("changing the client: %v; want 'client is immutable'", err)
		}
		if err := k8s.Get(ctx, clientKey(b), b); err != nil {
			t.Fatal(err)
		}
		if err := patch(func(b *gefyrav1.GefyraBridge) { b.Spec.Target.Container = "other" }); err == nil || !strings.Contains(err.Error(), "target is immutable") {
			t.Fatalf("changing the target: %v; want 'target is immutable'", err)
		}
		if err := k8s.Get(ctx, clientKey(b), b); err != nil {
			t.Fatal(err)
		}
		if err := patch(func(b *gefyrav1.GefyraBridge) { b.Spec.Ports = []gefyrav1.PortMapping{{Remote: 8155, Local: 9000}} }); err != nil {
			t.Fatalf("changing the ports must be allowed: %v", err)
		}
	})
}

package operator_test

import (
	"context"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gefyra.dev/gefyra/controlplane/internal/operator"
)

// TestOperatorMayGrantClientAccess creates, as the control plane's
// ServiceAccount with exactly the rights of deploy/rbac/operator.yaml, the
// Role the operator grants a developer (a server-side dry run). The API
// server refuses a Role with rights its creator does not hold, so every
// right the operator grants must be in its own RBAC.
func TestOperatorMayGrantClientAccess(t *testing.T) {
	cfg := rest.CopyConfig(restCfg)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:gefyra:gefyra-controlplane",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:gefyra", "system:authenticated"},
	}
	scheme, err := operator.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	sa, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: "gefyra-client-rbac-check"},
		Rules:      operator.ClientAccessRules("rbac-check"),
	}
	if err := sa.Create(context.Background(), role, client.DryRunAll); err != nil {
		t.Fatalf("the control plane may not grant a developer access to their client: %v", err)
	}
}

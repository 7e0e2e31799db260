package operator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/controlplane/internal/operator"
	"gefyra.dev/gefyra/internal/bridge"
)

// as returns a client that impersonates user, a member of the developers'
// group bound to the ClusterRole gefyra-developer.
func as(t *testing.T, user string) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(restCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"gefyra-developers", "system:authenticated"}}
	scheme, err := operator.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantDenied(t *testing.T, what string, err error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: allowed, want denied", what)
	}
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("%s: %v, want forbidden", what, err)
	}
	if msg != "" && !strings.Contains(err.Error(), msg) {
		t.Fatalf("%s: %v, want a message containing %q", what, err, msg)
	}
}

// TestDevelopersOnlyTouchTheirOwn checks deploy/rbac (ClusterRole
// gefyra-developer, the per-client Roles the operator grants, the admission
// policy) against the real API server with impersonated users.
func TestDevelopersOnlyTouchTheirOwn(t *testing.T) {
	ctx := context.Background()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "gefyra-developers-test"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "gefyra-developer"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "gefyra-developers"}},
	}
	if err := k8s.Create(ctx, crb); err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t)
	const aliceUser, bobUser = "Alice@Example.com", "bob"
	aliceName, err := bridge.ClientName(aliceUser)
	if err != nil {
		t.Fatal(err)
	}
	alice, bob := as(t, aliceUser), as(t, bobUser)
	newClientObj := func(name, user string) *gefyrav1.GefyraClient {
		return &gefyrav1.GefyraClient{
			ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: name},
			Spec:       gefyrav1.GefyraClientSpec{User: user, PublicKey: publicKey(t), LeaseDuration: &metav1.Duration{Duration: time.Hour}},
		}
	}

	// Registering: only under one's own name and user.
	wantDenied(t, "bob registers alice's client", bob.Create(ctx, newClientObj(aliceName, aliceUser)),
		"user bob may only register the GefyraClient named bob")
	wantDenied(t, "bob registers a client claiming alice's user", bob.Create(ctx, newClientObj("bob", aliceUser)),
		"may only register the GefyraClient named bob with spec.user bob")
	wantDenied(t, "alice registers under another name", alice.Create(ctx, newClientObj("alice", aliceUser)),
		"may only register the GefyraClient named "+aliceName)
	aliceClient := newClientObj(aliceName, aliceUser)
	if err := alice.Create(ctx, aliceClient); err != nil {
		t.Fatalf("alice registers herself: %v", err)
	}
	if err := bob.Create(ctx, newClientObj("bob", bobUser)); err != nil {
		t.Fatalf("bob registers himself: %v", err)
	}

	// Reading: each their own client (once the operator granted it), never
	// the other's; no listing.
	eventually(t, 20*time.Second, "alice reads her client", func() error {
		c := &gefyrav1.GefyraClient{}
		if err := alice.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: aliceName}, c); err != nil {
			return err
		}
		if c.Status.Address == "" {
			return fmt.Errorf("no address yet")
		}
		aliceClient = c
		return nil
	})
	eventually(t, 20*time.Second, "bob reads his client", func() error {
		return bob.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: "bob"}, &gefyrav1.GefyraClient{})
	})
	wantDenied(t, "bob reads alice's client", bob.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: aliceName}, &gefyrav1.GefyraClient{}), "")
	wantDenied(t, "bob lists clients", bob.List(ctx, &gefyrav1.GefyraClientList{}, client.InNamespace("gefyra")), "")

	// Changing: bob can neither patch nor delete alice's client, nor its status.
	p := aliceClient.DeepCopy()
	p.Spec.PublicKey = publicKey(t)
	wantDenied(t, "bob changes alice's key", bob.Patch(ctx, p, client.MergeFrom(aliceClient)), "")
	wantDenied(t, "bob deletes alice's client", bob.Delete(ctx, aliceClient.DeepCopy()), "")
	hb := aliceClient.DeepCopy()
	hb.Status.LastHeartbeat = &metav1.Time{Time: time.Now()}
	wantDenied(t, "bob renews alice's heartbeat", bob.Status().Patch(ctx, hb, client.MergeFrom(aliceClient)), "")

	// Alice renews her heartbeat, but cannot touch the rest of her status.
	if err := alice.Status().Patch(ctx, hb, client.MergeFrom(aliceClient)); err != nil {
		t.Fatalf("alice renews her heartbeat: %v", err)
	}
	steal := hb.DeepCopy()
	steal.Status.Address = "10.122.0.1"
	wantDenied(t, "alice sets her own address", alice.Status().Patch(ctx, steal, client.MergeFrom(hb)),
		"a developer may only renew status.lastHeartbeat")

	// Bridges: only for one's own client; the other's cannot be read,
	// changed or deleted.
	target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "nothing-here", Container: "app"}
	mk := func(name, clientName string) *gefyrav1.GefyraBridge {
		return &gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: gefyrav1.GefyraBridgeSpec{Client: clientName, Target: target, Ports: []gefyrav1.PortMapping{{Remote: 8155, Local: 8155}}}}
	}
	wantDenied(t, "bob bridges to alice", bob.Create(ctx, mk("bobs-trick", aliceName)),
		"user bob may only bridge to their own GefyraClient bob, not to "+aliceName)
	ab := mk("alices", aliceName)
	if err := alice.Create(ctx, ab); err != nil {
		t.Fatalf("alice creates her bridge: %v", err)
	}
	wantDenied(t, "bob reads alice's bridge", bob.Get(ctx, client.ObjectKeyFromObject(ab), &gefyrav1.GefyraBridge{}), "")
	wantDenied(t, "bob lists bridges", bob.List(ctx, &gefyrav1.GefyraBridgeList{}, client.InNamespace(ns)), "")
	wantDenied(t, "bob deletes alice's bridge", bob.Delete(ctx, mk("alices", aliceName)),
		"GefyraBridge alices belongs to client "+aliceName+", not to bob")
	changed := ab.DeepCopy()
	changed.Spec.Rules = []gefyrav1.Rule{{Path: &gefyrav1.PathMatch{Type: "Prefix", Value: "/bob"}}}
	wantDenied(t, "bob changes alice's rules", bob.Patch(ctx, changed, client.MergeFrom(ab)), "user bob may only bridge to their own GefyraClient bob")

	// Alice sees her bridge's state in her client's status.
	eventually(t, 20*time.Second, "alice's client lists her bridge", func() error {
		c := &gefyrav1.GefyraClient{}
		if err := alice.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: aliceName}, c); err != nil {
			return err
		}
		if len(c.Status.Bridges) != 1 || c.Status.Bridges[0].Name != "alices" || c.Status.Bridges[0].Reason != "TargetNotFound" {
			return fmt.Errorf("bridges in status: %+v", c.Status.Bridges)
		}
		return nil
	})
	if err := alice.Patch(ctx, changed, client.MergeFrom(ab)); err != nil {
		t.Fatalf("alice changes her rules: %v", err)
	}
	if err := alice.Delete(ctx, ab); err != nil {
		t.Fatalf("alice deletes her bridge: %v", err)
	}
	if err := alice.Delete(ctx, aliceClient); err != nil {
		t.Fatalf("alice deletes her client: %v", err)
	}
	eventually(t, 20*time.Second, "alice's client and its access gone", func() error {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: aliceName}, &gefyrav1.GefyraClient{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("client: %v", err)
		}
		return nil
	})
}

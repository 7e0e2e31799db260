package operator_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/controlplane/internal/ipam"
)

// TestLeaseExpiryRestoresWorkload: while the CLI renews the heartbeat the
// bridge stays; when it stops, the operator deletes the client's bridges
// and restores the workload by itself.
func TestLeaseExpiryRestoresWorkload(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	c := &gefyrav1.GefyraClient{
		ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: "dev-lease"},
		Spec:       gefyrav1.GefyraClientSpec{User: "dev-lease", PublicKey: publicKey(t)}, // the operator's default lease (3s here)
	}
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	heartbeat := func() {
		t.Helper()
		orig := c.DeepCopy()
		c.Status.LastHeartbeat = &metav1.Time{Time: time.Now()}
		if err := k8s.Status().Patch(ctx, c, client.MergeFrom(orig)); err != nil {
			t.Fatal(err)
		}
	}
	heartbeat()
	waitClientAddress(t, c.Name)
	d := newDeployment(t, ns, "leased")
	newPod(t, ns, "leased-1", d.Spec.Template.Labels, "demo/app:1.0", "10.244.0.41")
	target := gefyrav1.Target{Kind: gefyrav1.KindDeployment, Name: "leased", Container: "app"}
	newBridge(t, ns, "b", c.Name, target, 8155)
	mountName := gefyrav1.MountName(target)
	eventually(t, 20*time.Second, "carrier in", func() error { return mountedBy(ns, "leased-1", "app", mountName, "demo/app:1.0") })

	// Renew for twice the lease: nothing is restored meanwhile.
	for end := time.Now().Add(2 * defaultLease); time.Now().Before(end); time.Sleep(defaultLease / 4) {
		heartbeat()
	}
	if _, err := getBridge(ns, "b"); err != nil {
		t.Fatalf("bridge lost while the heartbeat was renewed: %v", err)
	}
	if err := mountedBy(ns, "leased-1", "app", mountName, "demo/app:1.0"); err != nil {
		t.Fatalf("restored while the heartbeat was renewed: %v", err)
	}

	// The CLI is gone.
	eventually(t, defaultLease+20*time.Second, "bridge deleted after the lease", func() error {
		if _, err := getBridge(ns, "b"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("bridge still there: %v", err)
		}
		return nil
	})
	eventually(t, 20*time.Second, "workload restored", func() error { return restored(ns, "leased-1", "app", "demo/app:1.0") })
	eventually(t, 20*time.Second, "client says its lease expired", func() error {
		if err := k8s.Get(ctx, clientKey(c), c); err != nil {
			return err
		}
		if cond := condition(c.Status.Conditions, gefyrav1.ConditionLeaseValid); cond == nil || cond.Reason != "LeaseExpired" {
			return fmt.Errorf("lease condition %+v", cond)
		}
		return nil
	})
	// A bridge of an expired client is refused, and mounts nothing.
	newBridge(t, ns, "late", c.Name, target, 8155)
	eventually(t, 20*time.Second, "late bridge refused", func() error {
		b, err := getBridge(ns, "late")
		if apierrors.IsNotFound(err) {
			return nil // deleted by the client's reconcile: refused as well
		}
		if err != nil {
			return err
		}
		if cond := condition(b.Status.Conditions, gefyrav1.ConditionAccepted); cond == nil || cond.Reason != "ClientLeaseExpired" {
			return fmt.Errorf("accepted %+v", cond)
		}
		return nil
	})
	if err := restored(ns, "leased-1", "app", "demo/app:1.0"); err != nil {
		t.Fatalf("an expired client's bridge mounted the workload: %v", err)
	}
}

// TestAddressesUniqueUnderConcurrentCreation creates many clients at once
// and checks that no two share a tunnel address.
func TestAddressesUniqueUnderConcurrentCreation(t *testing.T) {
	ctx := context.Background()
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &gefyrav1.GefyraClient{
				ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: fmt.Sprintf("dev-many-%02d", i)},
				Spec: gefyrav1.GefyraClientSpec{User: fmt.Sprintf("dev-many-%02d", i), PublicKey: publicKey(t),
					LeaseDuration: &metav1.Duration{Duration: time.Hour}},
			}
			errs <- k8s.Create(ctx, c)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("dev-many-%02d", i)
		addr := waitClientAddress(t, name)
		a := netip.MustParseAddr(addr)
		if !netip.MustParsePrefix("10.122.0.0/24").Contains(a) || addr == "10.122.0.1" || addr == "10.122.0.0" {
			t.Errorf("client %s got %s: outside the pool or reserved", name, addr)
		}
		if other, dup := seen[addr]; dup {
			t.Errorf("clients %s and %s share %s", other, name, addr)
		}
		seen[addr] = name
	}
	c := &gefyrav1.GefyraClient{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: "dev-many-00"}, c); err != nil {
		t.Fatal(err)
	}
	if s := c.Status.Stowaway; s == nil || len(s.PublicKey) != 44 || s.Address != "10.122.0.1" || s.CIDR != "10.122.0.0/24" || s.Endpoint != "127.0.0.1:31820" {
		t.Errorf("stowaway in the client's status: %+v", s)
	}
	// Deleting a client frees its address for the next one.
	if err := k8s.Delete(ctx, c); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "address released", func() error {
		store := &ipam.Store{Client: k8s, Namespace: "gefyra", Name: "gefyra-addresses", Pool: mustPool(t)}
		got, err := store.Allocations(ctx)
		if err != nil {
			return err
		}
		if _, ok := got["dev-many-00"]; ok {
			return fmt.Errorf("still allocated: %v", got["dev-many-00"])
		}
		return nil
	})
}

// TestAddressStoreRacingAllocators races allocators with separate
// connections directly against the ConfigMap, as two replicas would.
func TestAddressStoreRacingAllocators(t *testing.T) {
	ctx := context.Background()
	pool, err := ipam.NewPool(netip.MustParsePrefix("10.123.0.0/26"))
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t)
	const allocators, each = 4, 10
	results := make(chan [2]string, allocators*each)
	errs := make(chan error, allocators*each)
	var wg sync.WaitGroup
	for a := range allocators {
		c, err := client.New(restCfg, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		store := &ipam.Store{Client: c, Namespace: ns, Name: "race", Pool: pool}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				name := fmt.Sprintf("c-%d-%d", a, i)
				addr, err := store.Allocate(ctx, name)
				if err != nil {
					errs <- err
					return
				}
				results <- [2]string{name, addr.String()}
			}
		}()
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for r := range results {
		if other, dup := seen[r[1]]; dup {
			t.Errorf("%s and %s both got %s", other, r[0], r[1])
		}
		seen[r[1]] = r[0]
	}
	if len(seen) != allocators*each {
		t.Fatalf("%d distinct addresses for %d allocations", len(seen), allocators*each)
	}
	// Allocating again returns the same address.
	store := &ipam.Store{Client: k8s, Namespace: ns, Name: "race", Pool: pool}
	again, err := store.Allocate(ctx, "c-0-0")
	if err != nil || seen[again.String()] != "c-0-0" {
		t.Fatalf("c-0-0 allocated again: %s, %v", again, err)
	}
	// The pool runs out with a clear error: 61 client addresses in a /26.
	for i := range 30 {
		if _, err := store.Allocate(ctx, fmt.Sprintf("extra-%d", i)); err != nil {
			if i < 21 {
				t.Fatalf("allocation %d failed early: %v", i, err)
			}
			if want := "tunnel CIDR 10.123.0.0/26 is exhausted"; !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q; want %q", err, want)
			}
			return
		}
	}
	t.Fatal("a /26 handed out more than 61 addresses")
}

func mustPool(t *testing.T) ipam.Pool {
	p, err := ipam.NewPool(netip.MustParsePrefix("10.122.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

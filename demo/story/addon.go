package story

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/testworld"
)

// The images of gefyra's own components (world/images.sh): the tarball
// names it writes.
const (
	CarrierImage      = "carrier-0.1.0.tar"
	StowawayImage     = "stowaway-0.1.0.tar"
	ControlPlaneImage = "controlplane-0.1.0.tar"
)

// ComponentImages are the images the add-on runs (carrier is swapped into
// the bridged Pods).
var ComponentImages = []string{CarrierImage, StowawayImage, ControlPlaneImage}

// The add-on's names, as in deploy/.
const (
	AddonNamespace         = "gefyra"
	ControlPlaneDeployment = "gefyra-controlplane"
	StowawayDeployment     = "gefyra-stowaway"
	StowawayRelayService   = "gefyra-stowaway" // the relay (8833) and stowaway's admin port (9090)
	// StowawayNodePort is the NodePort of stowaway's WireGuard UDP port.
	StowawayNodePort = 31820
)

// Addon is gefyra's cluster add-on (deploy/, `kubectl apply -k deploy/`) on
// the test world, and the custom resources a developer's CLI would create.
type Addon struct {
	World *testworld.World
	// Root is the repository's root directory.
	Root string
	// Images is the directory with the image tarballs (Demo.BuildAllImages).
	Images string

	kube client.Client

	agentOnce sync.Once // builds agentBin
	agentBin  string
	agentErr  error
}

// NewAddon returns the add-on of the repository at root on w, with its
// images in the directory images.
func NewAddon(w *testworld.World, root, images string) (*Addon, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := gefyrav1.AddToScheme(s); err != nil {
		return nil, err
	}
	c, err := client.New(w.Config, client.Options{Scheme: s})
	if err != nil {
		return nil, err
	}
	return &Addon{World: w, Root: root, Images: images, kube: c}, nil
}

// Kube is a client for Kubernetes' and gefyra's types, as the cluster admin.
func (a *Addon) Kube() client.Client { return a.kube }

// StowawayEndpoint is stowaway's WireGuard endpoint as a developer's machine
// reaches it: the node's IP and the NodePort.
func (a *Addon) StowawayEndpoint() string {
	return net.JoinHostPort(a.World.NodeIP, strconv.Itoa(StowawayNodePort))
}

// LoadImages imports the component images into the cluster.
func (a *Addon) LoadImages(t testworld.T) {
	t.Helper()
	if a.Images == "" {
		t.Fatalf("no images: Demo.BuildAllImages first")
	}
	tars := make([]string, len(ComponentImages))
	for i, name := range ComponentImages {
		tars[i] = filepath.Join(a.Images, name)
	}
	a.World.LoadImages(t, tars...)
}

// Install applies deploy/ and registers its removal as a cleanup: first
// every gefyra custom resource still there (while the control plane runs,
// so it restores what it changed), then the add-on itself.
func (a *Addon) Install(t testworld.T) {
	t.Helper()
	waitNamespaceFree(t, a.World, AddonNamespace)
	dir := filepath.Join(a.Root, "deploy")
	t.Cleanup(func() {
		if testworld.Failed(t) {
			a.World.Dump(t, AddonNamespace)
		}
		a.removeResources(t)
		t.Logf("removing the add-on (kubectl delete -k deploy/)")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if _, err := a.World.RunKubectl(ctx, "", "delete", "--ignore-not-found", "--wait=true", "--timeout=150s", "-k", dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	logLines(t, a.World.Kubectl(t, "apply", "-k", dir))
}

// WaitReady waits until both control plane replicas and stowaway are
// available.
func (a *Addon) WaitReady(t testworld.T) {
	t.Helper()
	a.World.WaitDeploymentAvailable(t, AddonNamespace, ControlPlaneDeployment, readyTimeout)
	a.World.WaitDeploymentAvailable(t, AddonNamespace, StowawayDeployment, readyTimeout)
}

// removeResources deletes every GefyraBridge, GefyraClient and GefyraMount
// and waits until the control plane has let them go. What it cannot remove
// in time loses its finalizer, so the add-on's removal never hangs, and
// the test fails.
func (a *Addon) removeResources(t testworld.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lists := []client.ObjectList{&gefyrav1.GefyraBridgeList{}, &gefyrav1.GefyraClientList{}, &gefyrav1.GefyraMountList{}}
	for _, l := range lists {
		if err := a.kube.List(ctx, l); err != nil {
			if !isNoKind(err) {
				t.Errorf("cleanup: listing %T: %v", l, err)
			}
			continue
		}
		for _, o := range listItems(l) {
			if o.GetDeletionTimestamp() != nil {
				continue
			}
			t.Logf("deleting %s %s/%s", kindOf(o), o.GetNamespace(), o.GetName())
			if err := a.kube.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleanup: deleting %s %s/%s: %v", kindOf(o), o.GetNamespace(), o.GetName(), err)
			}
		}
	}
	err := pollUntil(ctx, func(ctx context.Context) (bool, error) {
		for _, l := range lists {
			if err := a.kube.List(ctx, l); err != nil {
				if isNoKind(err) {
					continue
				}
				return false, err
			}
			if n := listLen(l); n > 0 {
				return false, nil
			}
		}
		return true, nil
	})
	if err == nil {
		return
	}
	t.Errorf("cleanup: gefyra's resources did not go away (%v); removing their finalizers", err)
	fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer fcancel()
	for _, l := range lists {
		if err := a.kube.List(fctx, l); err != nil {
			continue
		}
		for _, o := range listItems(l) {
			t.Errorf("cleanup: %s %s/%s still there", kindOf(o), o.GetNamespace(), o.GetName())
			o.SetFinalizers(nil)
			if err := a.kube.Update(fctx, o); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleanup: %v", err)
			}
		}
	}
}

// kindOf names a gefyra object's kind for the log.
func kindOf(o client.Object) string {
	switch o.(type) {
	case *gefyrav1.GefyraBridge:
		return "GefyraBridge"
	case *gefyrav1.GefyraClient:
		return "GefyraClient"
	case *gefyrav1.GefyraMount:
		return "GefyraMount"
	}
	return fmt.Sprintf("%T", o)
}

func listItems(l client.ObjectList) []client.Object {
	var out []client.Object
	switch l := l.(type) {
	case *gefyrav1.GefyraBridgeList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *gefyrav1.GefyraClientList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *gefyrav1.GefyraMountList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	}
	return out
}

func listLen(l client.ObjectList) int { return len(listItems(l)) }

// isNoKind reports an error of a type the API server does not serve (the
// CRDs are gone already).
func isNoKind(err error) bool {
	return err != nil && (apierrors.IsNotFound(err) || meta.IsNoMatchError(err))
}

// pollUntil checks cond every 200ms until it holds, fails, or ctx ends.
func pollUntil(ctx context.Context, cond func(ctx context.Context) (bool, error)) error {
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

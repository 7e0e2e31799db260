package story

import (
	"context"
	"path/filepath"
	"time"

	"gefyra.dev/gefyra/internal/testworld"
)

// Keep forgets the cleanups the steps registered so far: what they made
// stays in place when the runner is closed. A sandbox (demo/sandbox) that
// leaves the tutorial's environment running for a person calls it once its
// steps are done, and removes that environment later, from another process,
// with Addon.Uninstall and Demo.Remove.
func (r *Runner) Keep() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = nil
}

// Uninstall removes the add-on the way Install's cleanup does: every
// gefyra custom resource first (while the control plane runs, so it
// restores the workloads it changed), then deploy/ itself. Failures are
// reported with Errorf; an add-on that is not there is no error.
func (a *Addon) Uninstall(t testworld.T) {
	t.Helper()
	a.removeResources(t)
	t.Logf("removing the add-on (kubectl delete -k deploy/)")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(a.Root, "deploy")
	if _, err := a.World.RunKubectl(ctx, "", "delete", "--ignore-not-found", "--wait=true", "--timeout=150s", "-k", dir); err != nil {
		t.Errorf("removing the add-on: %v", err)
	}
}

// Remove deletes the demo's namespace, and everything in it, and waits
// until it is gone; a namespace that is not there is no error. Failures
// are reported with Errorf.
func (d *Demo) Remove(t testworld.T) {
	t.Helper()
	t.Logf("deleting namespace %s", Namespace)
	d.World.DeleteNamespace(t, Namespace)
}

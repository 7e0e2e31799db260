package testworld

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// cleanupTimeout bounds every removal a test registers.
const cleanupTimeout = 2 * time.Minute

// Apply applies a YAML manifest (kubectl apply -f -) and deletes the same
// objects when the test ends, pass or fail.
func (w *World) Apply(t T, manifest string) {
	t.Helper()
	w.KubectlStdin(t, manifest, "apply", "-f", "-")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if _, err := w.RunKubectl(ctx, manifest, "delete", "--ignore-not-found", "--wait=true", "--timeout=90s", "-f", "-"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// ApplyKustomize applies a kustomization directory (kubectl apply -k) and
// deletes it when the test ends.
func (w *World) ApplyKustomize(t T, dir string) {
	t.Helper()
	w.Kubectl(t, "apply", "-k", dir)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if _, err := w.RunKubectl(ctx, "", "delete", "--ignore-not-found", "--wait=true", "--timeout=90s", "-k", dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

// Namespace creates a namespace named prefix-<random> for one test and
// deletes it (and everything in it) when the test ends; if the test failed,
// what was in it goes to the test log first.
func (w *World) Namespace(t T, prefix string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("%v", err)
	}
	name := prefix + "-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"gefyra.dev/test-world": "e2e"}}}
	if _, err := w.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Logf("namespace %s", name)
	t.Cleanup(func() {
		if Failed(t) {
			w.Dump(t, name)
		}
		w.DeleteNamespace(t, name)
	})
	return name
}

// DeleteNamespace deletes a namespace and waits until it is gone; a
// namespace that does not exist is no error. Failures are reported with
// t.Errorf, so it suits a cleanup.
func (w *World) DeleteNamespace(t T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	zero := int64(0)
	err := w.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("cleanup: deleting namespace %s: %v", name, err)
		return
	}
	err = poll(ctx, func(ctx context.Context) (bool, string, error) {
		_, err := w.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		return false, "terminating", err
	}, func(status string) { t.Logf("cleanup: namespace %s still %s", name, status) })
	if err != nil {
		t.Errorf("cleanup: namespace %s did not go away: %v", name, err)
	}
}

// Dump writes what is in a namespace (objects, events, and the logs of its
// Pods' containers) to the test log.
func (w *World) Dump(t T, namespace string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sb strings.Builder
	for _, args := range [][]string{
		{"get", "all,events", "-n", namespace, "-o", "wide"},
		{"describe", "pods", "-n", namespace},
		{"logs", "--all-containers", "--prefix", "--tail=50", "-n", namespace, "-l", "gefyra.dev/test-world!=none"},
	} {
		out, err := w.RunKubectl(ctx, "", args...)
		fmt.Fprintf(&sb, "$ kubectl %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			fmt.Fprintf(&sb, "(%v)\n", err)
		}
	}
	t.Logf("state of namespace %s:\n%s", namespace, sb.String())
}

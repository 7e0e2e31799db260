package bridgepath

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second Lock while the first holds it: %v, want the context's deadline", err)
	}
	done := make(chan error, 1)
	go func() {
		u, err := Lock(context.Background(), path)
		if err == nil {
			u()
		}
		done <- err
	}()
	unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting Lock did not get the lock after it was released")
	}
}

func TestManifest(t *testing.T) {
	docs := strings.Split(manifest, "\n---\n")
	kinds := map[string]bool{}
	for _, doc := range docs {
		var o struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name, Namespace string
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		kinds[o.Kind] = true
		if o.Kind != "Namespace" && o.Metadata.Namespace != Namespace {
			t.Errorf("%s %s in namespace %q, want %q", o.Kind, o.Metadata.Name, o.Metadata.Namespace, Namespace)
		}
	}
	for _, k := range []string{"Namespace", "Deployment", "Service"} {
		if !kinds[k] {
			t.Errorf("the manifest has no %s", k)
		}
	}
}

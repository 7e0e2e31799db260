package envtestassets

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLink(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "world", "build.sh")); err != nil {
		t.Fatalf("RepoRoot = %s, which has no world/build.sh", root)
	}
	dir, cleanup, err := Link(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kube-apiserver", "kubectl", "etcd"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s: %v (mode %v)", name, err, fi)
		}
	}
	cleanup()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cleanup left %s", dir)
	}
	if _, _, err := Link(t.TempDir()); err == nil {
		t.Error("Link with a root without world/build.sh succeeded")
	}
}

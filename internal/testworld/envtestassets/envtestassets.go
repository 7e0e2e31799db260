// Package envtestassets finds the repository's root and hands envtest
// (controller-runtime's API server + etcd for fast operator tests) the test
// world's own kube-apiserver, kubectl and etcd binaries, as built and cached
// by world/build.sh. It never builds them: that takes minutes, and a test
// that needs them fails with the command that builds them.
package envtestassets

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// RepoRoot is the directory holding go.mod, found from the working
// directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Link makes a temporary directory for KUBEBUILDER_ASSETS with links to
// the test world's kube-apiserver, kubectl and etcd; cleanup removes it.
func Link(root string) (dir string, cleanup func(), err error) {
	dirOf := func(component string) (string, error) {
		out, err := exec.Command("bash", filepath.Join(root, "world", "build.sh"), "--dir", component).Output()
		if err != nil {
			return "", fmt.Errorf("world/build.sh --dir %s: %w", component, err)
		}
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, ".complete")); err != nil {
			return "", fmt.Errorf("the test world's binaries are not built (%s is missing): run world/build.sh k8s etcd", d)
		}
		return d, nil
	}
	k8sDir, err := dirOf("k8s")
	if err != nil {
		return "", nil, err
	}
	etcdDir, err := dirOf("etcd")
	if err != nil {
		return "", nil, err
	}
	tmp, err := os.MkdirTemp("", "gefyra-envtest-")
	if err != nil {
		return "", nil, err
	}
	for name, target := range map[string]string{
		"kube-apiserver": filepath.Join(k8sDir, "kube-apiserver"),
		"kubectl":        filepath.Join(k8sDir, "kubectl"),
		"etcd":           filepath.Join(etcdDir, "etcd"),
	} {
		if err := os.Symlink(target, filepath.Join(tmp, name)); err != nil {
			os.RemoveAll(tmp)
			return "", nil, err
		}
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// Package clitest is what the CLI's tests share: the real Docker Engine
// (tests skip when none runs), a test HTTP server image built FROM scratch
// and loaded with `docker load`, a static build of the gefyra executable
// for the agent image, and a real API server (envtest with the test
// world's kube-apiserver and etcd) with gefyra's CRDs.
//
// Every container a test makes carries the label dev.gefyra.test=true and
// is removed in t.Cleanup; each test gets a Docker network of its own.
package clitest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/internal/ociimage"
)

// LabelTest marks the tests' containers.
const LabelTest = "dev.gefyra.test"

// TestLabels are the labels of every container a test starts.
var TestLabels = map[string]string{LabelTest: "true"}

// RepoRoot is the module's root directory.
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

// RandomName returns prefix followed by random hex.
func RandomName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// Docker connects to the Docker Engine for a test on a network of its
// own, and removes the test's containers and the network afterwards. The
// test is skipped when no Docker Engine runs (world/docker.sh up starts
// one).
func Docker(t testing.TB) *local.Engine {
	t.Helper()
	network := RandomName("gefyra-t-")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	eng, err := local.Connect(ctx, network)
	if errors.Is(err, local.ErrDockerUnavailable) {
		t.Skipf("no Docker Engine (start one with world/docker.sh up): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		RemoveTestContainers(t, network)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := eng.RemoveNetwork(ctx); err != nil {
			t.Logf("removing network %s: %v", network, err)
		}
		eng.Close()
	})
	return eng
}

// RemoveTestContainers removes the containers labelled as the tests' on
// network (any network if empty).
func RemoveTestContainers(t testing.TB, network string) {
	t.Helper()
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Logf("docker: %v", err)
		return
	}
	defer api.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := filters.NewArgs(filters.Arg("label", LabelTest+"=true"))
	if network != "" {
		f.Add("label", local.LabelNetwork+"="+network)
	}
	list, err := api.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		t.Logf("docker: %v", err)
		return
	}
	for _, c := range list {
		if err := api.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !strings.Contains(err.Error(), "No such container") {
			t.Logf("removing test container %s: %v", c.ID[:12], err)
		}
	}
}

var (
	buildMu sync.Mutex // guards built
	built   = map[string]string{}
	loaded  bool // the server image is in Docker
)

// GoBuild builds the main package pkg (a path relative to the module
// root) as a static Linux executable, once per test process.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "gefyra-test-bin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./"+pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}

// GefyraBinary is a static build of the gefyra CLI (for the agent image).
func GefyraBinary(t testing.TB) string {
	return GoBuild(t, "cli/cmd/gefyra")
}

// ServerImage builds and loads the test HTTP server image (see
// testdata/httpserver) and returns its tag. Like most images it has a
// command (/server, listening on :8155) and no entrypoint, so a command
// given to `docker run` replaces it.
func ServerImage(t testing.TB, eng *local.Engine) string {
	t.Helper()
	bin := GoBuild(t, "cli/internal/clitest/testdata/httpserver")
	const tag = "gefyra.dev/test-httpserver:1"
	buildMu.Lock()
	done := loaded
	buildMu.Unlock()
	if done {
		return tag
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	tarball := filepath.Join(dir, "server.tar")
	if _, err := ociimage.Build(ociimage.Spec{
		Tag:   tag,
		Files: []ociimage.File{{Src: bin, Dst: "/server"}},
		Cmd:   []string{"/server"},
		Ports: []string{"8155"},
	}, tarball); err != nil {
		t.Fatal(err)
	}
	if err := eng.LoadImage(ctx, tarball); err != nil {
		t.Fatal(err)
	}
	buildMu.Lock()
	loaded = true
	buildMu.Unlock()
	return tag
}

// Eventually retries f until it returns nil or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Must fails the test on err.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

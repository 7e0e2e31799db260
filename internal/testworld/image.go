package testworld

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/internal/ociimage"
)

// GoBuild builds the Go package pkg (an import path or a ./relative path,
// resolved from the test's working directory) as a static linux binary into
// a temporary directory and returns its path.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), path.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// BuildImage builds spec (see ociimage) into a docker-archive tarball in a
// temporary directory and returns its path, ready for LoadImages or
// `docker load`.
func BuildImage(t testing.TB, spec ociimage.Spec) string {
	t.Helper()
	name := strings.NewReplacer("/", "_", ":", "_").Replace(spec.Tag) + ".tar"
	out := filepath.Join(t.TempDir(), name)
	digest, err := ociimage.Build(spec, out)
	if err != nil {
		t.Fatalf("building image %s: %v", spec.Tag, err)
	}
	t.Logf("built image %s (%s)", spec.Tag, digest)
	return out
}

package localagent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/cli/internal/clitest"
	"gefyra.dev/gefyra/cli/internal/local"
)

func TestCheckBinary(t *testing.T) {
	static := clitest.GoBuild(t, "cli/internal/clitest/testdata/httpserver")
	if err := CheckBinary(static); err != nil {
		t.Fatalf("a static build: %v", err)
	}
	text := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path, want string }{
		{name: "not ELF", path: text, want: "is not a Linux executable"},
		{name: "dynamic", path: "/bin/ls", want: "is dynamically linked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(tt.path); err != nil {
				t.Skip(err)
			}
			err := CheckBinary(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), EnvBinary) {
				t.Fatalf("CheckBinary(%s): %v, want it to say %q and name %s", tt.path, err, tt.want, EnvBinary)
			}
		})
	}
}

func TestImageTag(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("one"), 0o755)
	os.WriteFile(b, []byte("two"), 0o755)
	ta, err := ImageTag(a)
	if err != nil {
		t.Fatal(err)
	}
	ta2, _ := ImageTag(a)
	tb, _ := ImageTag(b)
	if ta != ta2 || ta == tb || !strings.HasPrefix(ta, ImageRepository+":") {
		t.Fatalf("tags %q %q %q: want stable per content, different across", ta, ta2, tb)
	}
}

// The image is built from the executable and loaded once.
func TestEnsureImage(t *testing.T) {
	eng := clitest.Docker(t)
	bin := filepath.Join(t.TempDir(), "gefyra")
	src, err := os.ReadFile(clitest.GoBuild(t, "cli/internal/clitest/testdata/httpserver"))
	if err != nil {
		t.Fatal(err)
	}
	// A unique executable, so the image is new to Docker.
	if err := os.WriteFile(bin, append(src, []byte(clitest.RandomName("x"))...), 0o755); err != nil {
		t.Fatal(err)
	}
	a := &Agent{Engine: eng, Binary: bin}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tag, built, err := a.EnsureImage(ctx)
	if err != nil || !built {
		t.Fatalf("EnsureImage = %q, %v, %v; want it built", tag, built, err)
	}
	t.Cleanup(func() { removeImage(t, tag) })
	if ok, err := eng.ImageExists(ctx, tag); err != nil || !ok {
		t.Fatalf("image %s is not in Docker: %v", tag, err)
	}
	if again, built, err := a.EnsureImage(ctx); err != nil || built || again != tag {
		t.Fatalf("second EnsureImage = %q, %v, %v; want the same image, not built again", again, built, err)
	}

	// Another executable's image replaces it; pruning keeps only that.
	bin2 := filepath.Join(t.TempDir(), "gefyra")
	if err := os.WriteFile(bin2, append(src, []byte(clitest.RandomName("y"))...), 0o755); err != nil {
		t.Fatal(err)
	}
	b := &Agent{Engine: eng, Binary: bin2}
	tag2, _, err := b.EnsureImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeImage(t, tag2) })
	removed, err := eng.PruneImages(ctx, local.RoleAgent, tag2)
	if err != nil || !slices.Contains(removed, tag) || slices.Contains(removed, tag2) {
		t.Fatalf("PruneImages = %v, %v; want %s removed and %s kept", removed, err, tag, tag2)
	}
	if ok, _ := eng.ImageExists(ctx, tag2); !ok {
		t.Fatalf("the kept image %s is gone", tag2)
	}
}

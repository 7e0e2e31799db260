package ociimage

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestBuildRoundTrip(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "server")
	if err := os.WriteFile(bin, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "sub", "a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/a.txt", filepath.Join(tree, "link")); err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Tag:        "gefyra.dev/test:0.1.0",
		Files:      []File{{Src: bin, Dst: "/bin/server"}, {Src: tree, Dst: "/srv"}},
		Dirs:       []Dir{{Path: "/tmp", Mode: 0o777 | os.ModeSticky}},
		Entrypoint: []string{"/bin/server"},
		Cmd:        []string{"--port", "8155"},
		Env:        []string{"A=b"},
		WorkingDir: "/srv",
		User:       "65532:65532",
		Ports:      []string{"8155", "31820/udp"},
	}
	out := filepath.Join(dir, "img.tar")
	d1, err := Build(spec, out)
	if err != nil {
		t.Fatal(err)
	}
	// Reproducible: the same inputs give the same digest.
	d2, err := Build(spec, filepath.Join(dir, "img2.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("digests differ for the same spec: %s vs %s", d1, d2)
	}

	tag, _ := name.NewTag(spec.Tag)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Entrypoint[0] != "/bin/server" || cf.Config.User != "65532:65532" || cf.Config.WorkingDir != "/srv" || cf.OS != "linux" {
		t.Errorf("config = %+v", cf.Config)
	}
	if _, ok := cf.Config.ExposedPorts["8155/tcp"]; !ok {
		t.Errorf("ports = %v", cf.Config.ExposedPorts)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]*tar.Header{}
	var order []string
	contents := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
		order = append(order, h.Name)
		b, _ := io.ReadAll(tr)
		contents[h.Name] = string(b)
	}
	for _, tc := range []struct {
		name, path string
		typ        byte
		mode       int64
		content    string
	}{
		{name: "binary", path: "bin/server", typ: tar.TypeReg, mode: 0o755, content: "#!binary"},
		{name: "parent dir", path: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "tree file", path: "srv/sub/a.txt", typ: tar.TypeReg, mode: 0o644, content: "hello"},
		{name: "symlink", path: "srv/link", typ: tar.TypeSymlink, mode: 0o777},
		{name: "sticky tmp", path: "tmp/", typ: tar.TypeDir, mode: 0o1777},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := got[tc.path]
			if h == nil {
				t.Fatalf("%s missing; have %v", tc.path, order)
			}
			if h.Typeflag != tc.typ || h.Mode != tc.mode || h.Uid != 0 {
				t.Errorf("%s: type %c mode %o uid %d", tc.path, h.Typeflag, h.Mode, h.Uid)
			}
			if contents[tc.path] != tc.content {
				t.Errorf("%s content %q", tc.path, contents[tc.path])
			}
		})
	}
	// Parents come before children.
	seen := map[string]bool{}
	for _, n := range order {
		if p := filepath.Dir(filepath.Clean(n)); p != "." && !seen[p+"/"] {
			t.Errorf("%s comes before its parent %s/", n, p)
		}
		seen[n] = true
	}
}

func TestBuildRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{name: "bad tag", spec: Spec{Tag: "UPPER/Case:!"}},
		{name: "relative entrypoint", spec: Spec{Tag: "a/b:1", Entrypoint: []string{"server"}}},
		{name: "missing source", spec: Spec{Tag: "a/b:1", Files: []File{{Src: filepath.Join(dir, "nope"), Dst: "/x"}}}},
		{name: "relative destination", spec: Spec{Tag: "a/b:1", Files: []File{{Src: dir, Dst: "x"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out.tar")
			if _, err := Build(tc.spec, out); err == nil {
				t.Fatal("Build succeeded, want an error")
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("a failed build left its output behind")
			}
		})
	}
}

// Package ociimage builds container images FROM scratch, without a daemon or
// a registry: a list of files and directories becomes one layer, a config
// says how to start it, and the result is a docker-archive tarball that both
// `docker load` and `ctr images import` accept.
//
// Builds are reproducible: every entry has a zero timestamp and root
// ownership unless told otherwise, so the same inputs give the same digest.
package ociimage

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Spec describes an image.
type Spec struct {
	Tag        string   // e.g. gefyra.dev/carrier:0.1.0
	Files      []File   // what goes into the single layer
	Dirs       []Dir    // empty directories to create (e.g. /tmp)
	Entrypoint []string // absolute path first
	Cmd        []string
	Env        []string // K=V
	WorkingDir string
	User       string // e.g. "65532:65532"
	Ports      []string
	Labels     map[string]string
}

// File copies Src (a file or a directory tree) from the local disk to Dst in
// the image.
type File struct {
	Src, Dst string
}

// Dir is an empty directory in the image.
type Dir struct {
	Path string
	Mode fs.FileMode // 0 means 0755
}

// Build writes the image described by spec to out as a docker-archive
// tarball. The layer is staged in a temporary file next to out, so large
// trees (a Go toolchain) do not have to fit in memory.
func Build(spec Spec, out string) (v1.Hash, error) {
	ref, err := name.NewTag(spec.Tag, name.StrictValidation)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image tag %q: %w", spec.Tag, err)
	}
	if len(spec.Entrypoint) > 0 && !path.IsAbs(spec.Entrypoint[0]) {
		return v1.Hash{}, fmt.Errorf("entrypoint %q must be an absolute path: a scratch image has no PATH lookup", spec.Entrypoint[0])
	}
	layerFile, err := os.CreateTemp(filepath.Dir(out), ".layer-*.tar")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.Remove(layerFile.Name())
	if err := writeLayer(layerFile, spec); err != nil {
		layerFile.Close()
		return v1.Hash{}, err
	}
	if err := layerFile.Close(); err != nil {
		return v1.Hash{}, err
	}
	layer, err := tarball.LayerFromFile(layerFile.Name())
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return v1.Hash{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.Env = spec.Env
	cf.Config.WorkingDir = spec.WorkingDir
	cf.Config.User = spec.User
	cf.Config.Labels = spec.Labels
	if len(spec.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.Ports {
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return v1.Hash{}, err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return v1.Hash{}, fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

type entry struct {
	hdr *tar.Header
	src string // local file to copy for regular files
}

// writeLayer writes every file and directory of spec, parents first and in
// sorted order, to w as a tar stream.
func writeLayer(w io.Writer, spec Spec) error {
	entries := map[string]entry{}
	// addDir adds p and its missing parents; p itself gets mode (0: 0755).
	addDir := func(p string, mode fs.FileMode) {
		for d := p; d != "/" && d != "."; d = path.Dir(d) {
			m := fs.FileMode(0o755)
			if d == p && mode != 0 {
				m = mode
			} else if _, ok := entries[d]; ok {
				continue
			}
			entries[d] = entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: tarMode(m)}}
		}
	}
	for _, d := range spec.Dirs {
		if !path.IsAbs(d.Path) {
			return fmt.Errorf("directory %q must be an absolute path", d.Path)
		}
		addDir(path.Clean(d.Path), d.Mode)
	}
	for _, f := range spec.Files {
		if !path.IsAbs(f.Dst) {
			return fmt.Errorf("destination %q must be an absolute path", f.Dst)
		}
		dst := path.Clean(f.Dst)
		info, err := os.Stat(f.Src)
		if err != nil {
			return fmt.Errorf("add %s: %w", f.Src, err)
		}
		if !info.IsDir() {
			addDir(path.Dir(dst), 0)
			entries[dst] = entry{hdr: fileHeader(dst, info), src: f.Src}
			continue
		}
		err = filepath.WalkDir(f.Src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(f.Src, p)
			if err != nil {
				return err
			}
			target := path.Join(dst, filepath.ToSlash(rel))
			switch {
			case d.IsDir():
				addDir(target, 0)
			case d.Type()&fs.ModeSymlink != 0:
				link, err := os.Readlink(p)
				if err != nil {
					return err
				}
				addDir(path.Dir(target), 0)
				entries[target] = entry{hdr: &tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(target, "/"), Linkname: link, Mode: 0o777}}
			case d.Type().IsRegular():
				info, err := d.Info()
				if err != nil {
					return err
				}
				addDir(path.Dir(target), 0)
				entries[target] = entry{hdr: fileHeader(target, info), src: p}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("add %s: %w", f.Src, err)
		}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, n := range names {
		e := entries[n]
		e.hdr.Format = tar.FormatPAX
		e.hdr.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(e.hdr); err != nil {
			return err
		}
		if e.src == "" {
			continue
		}
		if err := copyFile(tw, e.src, e.hdr.Size); err != nil {
			return err
		}
	}
	return tw.Close()
}

// tarMode converts Go's file mode bits to the Unix bits tar stores.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	return mode
}

func fileHeader(dst string, info fs.FileInfo) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(dst, "/"),
		Mode:     tarMode(info.Mode()),
		Size:     info.Size(),
	}
}

func copyFile(w io.Writer, src string, size int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if n != size {
		return errors.New("file " + src + " changed size while it was being added")
	}
	return nil
}

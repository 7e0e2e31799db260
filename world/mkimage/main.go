// Package main is command mkimage, which builds a container image FROM scratch into a
// docker-archive tarball (see internal/ociimage), for `docker load` and
// `ctr images import`.
//
//	mkimage -o out.tar -tag gefyra.dev/carrier:0.1.0 -add bin/carrier:/carrier -entrypoint /carrier
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"gefyra.dev/gefyra/internal/ociimage"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var (
		spec                  ociimage.Spec
		out, entrypoint       string
		adds, dirs, cmd, envs list
		ports, labels         list
	)
	flag.StringVar(&out, "o", "", "output tarball (required)")
	flag.StringVar(&spec.Tag, "tag", "", "image reference, e.g. gefyra.dev/carrier:0.1.0 (required)")
	flag.Var(&adds, "add", "SRC:DST, a local file or directory copied to DST (repeatable)")
	flag.Var(&dirs, "mkdir", "DIR[:MODE], an empty directory, MODE in octal, e.g. /tmp:1777 (repeatable)")
	flag.StringVar(&entrypoint, "entrypoint", "", "absolute path of the program to start")
	flag.Var(&cmd, "cmd", "an argument of the default command (repeatable)")
	flag.Var(&envs, "env", "K=V (repeatable)")
	flag.Var(&ports, "port", "exposed port, e.g. 8155 or 31820/udp (repeatable)")
	flag.Var(&labels, "label", "K=V (repeatable)")
	flag.StringVar(&spec.WorkingDir, "workdir", "", "working directory")
	flag.StringVar(&spec.User, "user", "", "user, e.g. 65532:65532")
	flag.Parse()
	if err := run(&spec, out, entrypoint, adds, dirs, cmd, envs, ports, labels); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(spec *ociimage.Spec, out, entrypoint string, adds, dirs, cmd, envs, ports, labels list) error {
	if out == "" || spec.Tag == "" {
		return fmt.Errorf("-o and -tag are required (see -h)")
	}
	for _, a := range adds {
		src, dst, ok := strings.Cut(a, ":")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("-add %q: want SRC:DST", a)
		}
		spec.Files = append(spec.Files, ociimage.File{Src: src, Dst: dst})
	}
	for _, d := range dirs {
		p, m, hasMode := strings.Cut(d, ":")
		dir := ociimage.Dir{Path: p}
		if hasMode {
			v, err := strconv.ParseUint(m, 8, 32)
			if err != nil || v > 0o7777 {
				return fmt.Errorf("-mkdir %q: mode must be octal, e.g. 1777", d)
			}
			dir.Mode = fs.FileMode(v & 0o777)
			if v&0o1000 != 0 {
				dir.Mode |= fs.ModeSticky
			}
		}
		spec.Dirs = append(spec.Dirs, dir)
	}
	if entrypoint != "" {
		spec.Entrypoint = []string{entrypoint}
	}
	spec.Cmd = cmd
	spec.Env = envs
	spec.Ports = ports
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("-label %q: want K=V", l)
		}
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		spec.Labels[k] = v
	}
	digest, err := ociimage.Build(*spec, out)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", out, spec.Tag, digest)
	return nil
}

// Package appsrc handles the demo backend's source the way the tutorial's
// developer and the development image do: copy demo/app somewhere, apply the
// one-line fix of its bug, and build the directory on its own (it has no
// go.mod; a module file that requires only jwt/v5 is written beside it and
// the module cache is used offline).
package appsrc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// FixSed is the sed expression that fixes the tutorial's bug in main.go: it
// changes the name of the claim the e-mail address is read from.
const FixSed = `s/emailClaim = "Email"/emailClaim = "email"/`

// buggyLine is the line FixSed changes.
const buggyLine = `emailClaim = "Email"`

// Module path and dependency of the backend when built alone.
const (
	ModulePath = "gefyra.dev/oauth2-demo"
	jwtModule  = "github.com/golang-jwt/jwt/v5"
	jwtVersion = "v5.3.1"
)

// RepoRoot returns the root of the gefyra module (where go.mod is).
func RepoRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the gefyra module")
	}
	return filepath.Dir(gomod), nil
}

// Copy copies the non-test Go files of src (e.g. demo/app) into dst.
func Copy(src, dst string) error {
	files, err := filepath.Glob(filepath.Join(src, "*.go"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no Go files in %s", src)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Fix applies FixSed to dir/main.go with sed, as the tutorial's developer
// would, and checks that exactly one line changed.
func Fix(ctx context.Context, dir string) error {
	path := filepath.Join(dir, "main.go")
	before, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if n := bytes.Count(before, []byte(buggyLine)); n != 1 {
		return fmt.Errorf("%s names the buggy claim on %d lines, want 1", path, n)
	}
	if out, err := exec.CommandContext(ctx, "sed", "-i", FixSed, path).CombinedOutput(); err != nil {
		return fmt.Errorf("sed: %w: %s", err, out)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if n := changedLines(before, after); n != 1 {
		return fmt.Errorf("the fix changed %d lines of %s, want 1", n, path)
	}
	return nil
}

func changedLines(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	if len(la) != len(lb) {
		return max(len(la), len(lb))
	}
	n := 0
	for i := range la {
		if la[i] != lb[i] {
			n++
		}
	}
	return n
}

// ModuleFiles returns the go.mod and go.sum the backend is built with when
// alone, the sums taken from the gefyra module's go.sum.
func ModuleFiles(repoGoSum []byte) (gomod, gosum []byte, err error) {
	prefix := jwtModule + " " + jwtVersion
	var sum bytes.Buffer
	for line := range strings.Lines(string(repoGoSum)) {
		if strings.HasPrefix(line, prefix+" ") || strings.HasPrefix(line, prefix+"/go.mod ") {
			sum.WriteString(line)
		}
	}
	if strings.Count(sum.String(), "\n") != 2 {
		return nil, nil, fmt.Errorf("go.sum lacks the two lines of %s", prefix)
	}
	gomod = fmt.Appendf(nil, "module %s\n\ngo 1.26\n\nrequire %s %s\n", ModulePath, jwtModule, jwtVersion)
	return gomod, sum.Bytes(), nil
}

// BuildAlone writes go.mod and go.sum into dir and builds it into out with
// the module cache offline (GOPROXY=off), as the development image does.
// extraArgs go to go build (e.g. -gcflags=all=-N -l).
func BuildAlone(ctx context.Context, dir, out string, repoGoSum []byte, extraArgs ...string) error {
	gomod, gosum, err := ModuleFiles(repoGoSum)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), gomod, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), gosum, 0o644); err != nil {
		return err
	}
	args := append([]string{"build", "-o", out}, extraArgs...)
	cmd := exec.CommandContext(ctx, "go", append(args, ".")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "CGO_ENABLED=0", "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build in %s: %w\n%s", dir, err, b)
	}
	return nil
}

// Build copies the backend's source from the repository, applies the fix
// when fix is set, and builds it alone into out.
func Build(ctx context.Context, out string, fix bool) error {
	root, err := RepoRoot(ctx)
	if err != nil {
		return err
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "oauth2-demo-src-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := Copy(filepath.Join(root, "demo", "app"), dir); err != nil {
		return err
	}
	if fix {
		if err := Fix(ctx, dir); err != nil {
			return err
		}
	}
	return BuildAlone(ctx, dir, out, sum)
}

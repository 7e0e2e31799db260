// Package multicall decides what a carrier process is: the proxy, or a
// command kubelet (or a user) runs inside the carrier container.
//
// # Why carrier must answer to any name
//
// Carrier replaces the image of a running Pod's container. A live Pod's
// command, args, env and probes cannot change, so the container restarts
// with the carrier image but with the original spec:
//
//   - If the spec sets `command` (e.g. ["uvicorn", "main:app"] or
//     ["/app/server", "--port", "8155"]), the runtime resolves command[0]
//     in the carrier image's filesystem (a bare name through the image's
//     PATH). If no file is there, the container fails to start ("executable
//     file not found") and the Pod never becomes Ready. The carrier image
//     therefore holds its one binary at every path of carrierimage.Paths
//     (symlinks to /carrier), and the operator checks a container's
//     command[0] against it (carrierimage.Resolve) and refuses to swap the
//     image when it is not covered.
//   - If the spec sets only `args`, the image's entrypoint (/carrier) runs
//     with the original args appended; carrier ignores arguments it does
//     not know.
//   - Exec probes (`cat /tmp/healthy`, `/bin/grpc_health_probe -addr=:9000`,
//     `sh -c "..."`) are run by kubelet inside the carrier container, as
//     new processes of the same binary under the probe's argv[0]; they must
//     exit 0 quickly so the Pod stays Ready and is not restarted. Their
//     command[0] must resolve in the image too.
//
// # Telling the proxy from an exec'd command
//
// Environment variables cannot tell them apart: exec'd processes inherit
// the container's environment, and it cannot be changed on a live Pod.
// Arguments cannot either: the proxy is started with the original
// program's arguments. What differs is order: the proxy is the container's
// first process, started before any exec can happen. So the process that
// first takes an exclusive flock(2) on the container's root directory
// ("/", an inode of the container's own overlay mount, so each container
// has its own lock) is the proxy and holds the lock until it dies; any
// later process finds it taken and is an exec'd command: it exits 0 at
// once. PID 1 is always the proxy (it is the container's init). A process
// that is not PID 1 while PID 1 runs this same binary is an exec'd
// command, lock or no lock: kubelet may run a probe right after the
// container started, before the proxy has taken the lock. A process that
// is not PID 1 and finds the lock free otherwise (a Pod with
// shareProcessNamespace, where pause is PID 1, or carrier run by hand) is
// the proxy too. The lock path can be changed with GEFYRA_CARRIER_LOCK
// (tests, running outside a container).
package multicall

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"gefyra.dev/gefyra/internal/carrierimage"
)

// Name is the binary's own name; started under it, carrier reads its flags.
const Name = "carrier"

// Role is what a process is.
type Role int

// Roles.
const (
	RoleProxy Role = iota // run carrier
	RoleExec              // an exec'd command: exit 0
)

func (r Role) String() string {
	if r == RoleExec {
		return "exec"
	}
	return "proxy"
}

// DefaultLock is the path locked by the proxy.
const DefaultLock = "/"

// Decide returns this process's role. For RoleProxy, the returned file
// holds the lock and must stay open for the life of the process.
func Decide(lockPath string, pid int) (Role, *os.File, error) {
	if lockPath == "" {
		lockPath = DefaultLock
	}
	if pid != 1 && initIsSelf() {
		return RoleExec, nil, nil
	}
	f, err := os.Open(lockPath)
	if err != nil {
		if pid == 1 {
			return RoleProxy, nil, nil
		}
		return RoleProxy, nil, fmt.Errorf("cannot open lock %s (assuming the proxy): %w", lockPath, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	switch {
	case err == nil:
		return RoleProxy, f, nil
	case errors.Is(err, syscall.EWOULDBLOCK) && pid != 1:
		f.Close()
		return RoleExec, nil, nil
	case pid == 1:
		// PID 1 is the container's init: always the proxy.
		return RoleProxy, f, nil
	default:
		f.Close()
		return RoleProxy, nil, fmt.Errorf("locking %s (assuming the proxy): %w", lockPath, err)
	}
}

// initExe and selfExe are the executables of PID 1 and of this process.
var initExe, selfExe = "/proc/1/exe", "/proc/self/exe"

// initIsSelf reports whether PID 1 runs this process's own binary: in the
// carrier container, PID 1 is then the proxy. Where PID 1 cannot be looked
// at, it says no, and the lock decides.
func initIsSelf() bool {
	a, err := os.Stat(initExe)
	if err != nil {
		return false
	}
	b, err := os.Stat(selfExe)
	return err == nil && os.SameFile(a, b)
}

// IsOwnName reports whether argv0 names carrier itself, so its arguments
// are carrier's flags rather than the original program's.
func IsOwnName(argv0 string) bool {
	return strings.TrimSuffix(filepath.Base(argv0), ".test") == Name
}

// FilterArgs keeps the arguments that are flags FlagSet knows (with their
// values) and drops everything else: the original program's arguments
// that kubelet passes to whatever binary the image has. known maps a flag
// name to whether it is boolean.
func FilterArgs(args []string, known map[string]bool) (kept, dropped []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			dropped = append(dropped, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if j := strings.IndexByte(name, '='); j >= 0 {
			name, value, hasValue = name[:j], name[j+1:], true
		}
		isBool, ok := known[name]
		if !ok {
			dropped = append(dropped, a)
			continue
		}
		switch {
		case hasValue:
			kept = append(kept, "-"+name+"="+value)
		case isBool:
			kept = append(kept, "-"+name)
		case i+1 < len(args):
			kept = append(kept, "-"+name+"="+args[i+1])
			i++
		default:
			dropped = append(dropped, a)
		}
	}
	return kept, dropped
}

// WriteLayout stages the carrier image's files under dir: the binary
// (copied from binary) at carrierimage.Binary and a symlink to it at every
// path of carrierimage.Paths. `mkimage -add DIR:/` turns the tree into the
// image's layer.
func WriteLayout(dir, binary string) error {
	src, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	dst := filepath.Join(dir, carrierimage.Binary)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst, src, 0o755); err != nil {
		return err
	}
	for _, p := range carrierimage.Paths() {
		link := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return err
		}
		os.Remove(link)
		if err := os.Symlink(carrierimage.Binary, link); err != nil {
			return err
		}
	}
	return nil
}

//go:build unix

package state

import (
	"os"
	"path/filepath"
	"syscall"
)

// Lock serialises changes to the state between gefyra processes (two
// `gefyra bridge` at once must not lose each other's bridge). Hold it only
// around a read-modify-write, never while waiting for the cluster.
func (d Dir) Lock() (unlock func(), err error) {
	if err := os.MkdirAll(d.path, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(d.path, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

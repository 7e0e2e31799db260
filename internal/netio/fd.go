//go:build unix

package netio

import (
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Read is a non-blocking read(2) of fd.
func Read(fd int, p []byte) (int, syscall.Errno) { return sysRead(uintptr(fd), p) }

// Write is a non-blocking write(2) of fd.
func Write(fd int, p []byte) (int, syscall.Errno) { return sysWrite(uintptr(fd), p) }

// Detach returns a duplicate of c's descriptor, for the loop, which then
// owns it; the caller closes c itself (see Loop).
func Detach(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, os.NewSyscallError("fcntl", err)
	}
	return fd, nil
}

// Attach makes a *net.TCPConn of a descriptor the loop owned, for a
// connection that leaves the loop; fd is closed either way.
func Attach(fd int) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, os.ErrInvalid
	}
	return tc, nil
}

// Quiet reports whether fd, a connection at rest, has neither bytes nor
// an end to read: a peek that would block.
func Quiet(fd int) bool { return sysPeek(uintptr(fd)) == syscall.EAGAIN }

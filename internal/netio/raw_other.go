//go:build unix && !linux

package netio

import "syscall"

// rawIO says whether this platform has the direct path; elsewhere Conn
// uses the TCPConn's own Read and Write.
const rawIO = false

func sysRead(uintptr, []byte) (int, syscall.Errno)  { return 0, syscall.ENOSYS }
func sysWrite(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.ENOSYS }

// sysPeek peeks at one byte without waiting; EAGAIN means nothing to read.
func sysPeek(fd uintptr) syscall.Errno {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if errno, ok := err.(syscall.Errno); ok {
		return errno
	}
	return 0
}

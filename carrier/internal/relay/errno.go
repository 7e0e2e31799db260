package relay

import "syscall"

var (
	errConnReset  error = syscall.ECONNRESET
	errBrokenPipe error = syscall.EPIPE
)

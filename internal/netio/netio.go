// Package netio reads and writes kernel TCP connections with plain system
// calls on their non-blocking sockets, and waits in the Go runtime's
// network poller only when a socket is not ready. Carrier's connections
// go through it, and internal/pipe's kernel side (stowaway's relay and
// egress, the agent's local connections).
//
// Why not (*net.TCPConn).Read and Write: they enter every system call
// through the runtime's path for calls that may block (entersyscall and
// exitsyscall). A socket of the net package is non-blocking, so that buys
// nothing, and it costs more than its own bookkeeping: when every P of the
// process was idle, the runtime's monitor thread (sysmon) sleeps, and the
// next such system call wakes it into a loop that polls every 20 µs until
// the process has been idle for a while. A proxy goes idle and busy again
// around every request it waits for, so that thread woke about once per
// request and used 13–25 % of carrier's CPU time under load (and 11–15 %
// of stowaway's and the agent's on the bridge path). Through
// syscall.RawConn the same reads and writes leave the monitor asleep (the
// process's other system calls and timers still wake it, as they should);
// deadlines, Close and the poller work as before. A read or write of a
// non-blocking socket returns at once, so holding the P through it, as a
// raw system call does, keeps no other goroutine waiting.
//
// Join relays two such connections (TCP listeners, upgraded HTTP
// connections); internal/pipe.Join hands two TCP connections to it. On
// Linux it relays them on an event loop of its own, waiting in its own
// epoll set (Loop, eventloop_linux.go; the pairs are in loop_linux.go),
// which carrier's HTTP/1.1 path serves its connections on too. Relay relays any two connections with a
// goroutine per direction (a tunnel's connection and a TCP one, with
// byte counters); it is also Join where there is no loop.
package netio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a *net.TCPConn whose Read and Write issue the system calls
// directly. Every other method is the TCPConn's. It is safe for one
// reader and one writer at a time each, like any net.Conn; concurrent
// Reads (or Writes) are serialized.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// readFn, writeFn and peekFn are the callbacks given to rc, made
	// once: a method value made per call would be allocated per call.
	readFn, writeFn, peekFn func(fd uintptr) bool

	rmu    sync.Mutex // serializes Read; guards the fields to wmu
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	// rpool: read into a buffer of bufs taken once the socket has data
	// (rbp), instead of into rbuf.
	rpool bool
	rbp   *[]byte

	wmu    sync.Mutex // serializes Write; guards wbuf, wn and werrno
	wbuf   []byte
	wn     int
	werrno syscall.Errno
}

// New wraps c.
func New(c *net.TCPConn) *Conn {
	nc := &Conn{}
	nc.readFn, nc.writeFn, nc.peekFn = nc.readFd, nc.writeFd, nc.peekFd
	nc.Reset(c)
	return nc
}

// Reset makes nc a wrapper of c (nil: of nothing), for reuse. It must not
// be called while a Read or Write is in progress.
func (nc *Conn) Reset(c *net.TCPConn) {
	nc.TCPConn, nc.rc = c, nil
	if c != nil {
		if rc, err := c.SyscallConn(); err == nil && rawIO {
			nc.rc = rc
		}
	}
}

// Read reads like (*net.TCPConn).Read: at least one byte, or io.EOF when
// the peer closed its side, or an error (a *net.OpError, a timeout once
// the read deadline passed).
func (nc *Conn) Read(p []byte) (int, error) {
	rc := nc.rc
	if rc == nil {
		return nc.TCPConn.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	nc.rmu.Lock()
	defer nc.rmu.Unlock()
	nc.rbuf, nc.rn, nc.rerrno = p, 0, 0
	err := rc.Read(nc.readFn)
	n, errno := nc.rn, nc.rerrno
	nc.rbuf = nil
	switch {
	case err != nil:
		return 0, nc.fix(err, "read")
	case errno != 0:
		return 0, nc.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (nc *Conn) readFd(fd uintptr) bool {
	buf := nc.rbuf
	var bp *[]byte
	if nc.rpool {
		bp = bufs.Get().(*[]byte)
		buf = *bp
	}
	for {
		n, errno := sysRead(fd, buf)
		switch errno {
		case 0:
			nc.rn, nc.rbp = n, bp
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if bp != nil {
				bufs.Put(bp) // not held while waiting
			}
			return false // wait in the poller
		}
		if bp != nil {
			bufs.Put(bp)
		}
		nc.rerrno = errno
		return true
	}
}

// bufSize is large enough that a copy moves a full TCP window per system
// call pair.
const bufSize = 64 << 10

var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// readPooled reads like Read, into a buffer of a pool that it takes only
// once the socket has data, so that a connection waiting for its peer
// holds none. The caller puts the buffer back with putBuf, also when n
// is 0.
func (nc *Conn) readPooled() (bp *[]byte, n int, err error) {
	rc := nc.rc
	if rc == nil {
		bp = bufs.Get().(*[]byte)
		n, err = nc.TCPConn.Read(*bp)
		return bp, n, err
	}
	nc.rmu.Lock()
	defer nc.rmu.Unlock()
	nc.rpool, nc.rbp, nc.rn, nc.rerrno = true, nil, 0, 0
	err = rc.Read(nc.readFn)
	bp, n, errno := nc.rbp, nc.rn, nc.rerrno
	nc.rpool, nc.rbp = false, nil
	switch {
	case err != nil:
		return bp, 0, nc.fix(err, "read")
	case errno != 0:
		return bp, 0, nc.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return bp, 0, io.EOF
	}
	return bp, n, nil
}

func putBuf(bp *[]byte) {
	if bp != nil {
		bufs.Put(bp)
	}
}

// Quiet reports whether the connection is open and has nothing to read:
// a non-blocking peek that sees neither EOF nor bytes. It is how a kept
// idle connection is checked before a request is sent on it.
func (nc *Conn) Quiet() bool {
	rc := nc.rc
	if rc == nil {
		if rc, _ = nc.TCPConn.SyscallConn(); rc == nil {
			return false
		}
	}
	nc.rmu.Lock()
	defer nc.rmu.Unlock()
	nc.rerrno = 0
	err := rc.Read(nc.peekFn)
	return err == nil && nc.rerrno == syscall.EAGAIN
}

func (nc *Conn) peekFd(fd uintptr) bool {
	nc.rerrno = sysPeek(fd)
	return true
}

// Write writes all of p unless an error (or the write deadline) stops it,
// like (*net.TCPConn).Write.
func (nc *Conn) Write(p []byte) (int, error) {
	rc := nc.rc
	if rc == nil {
		return nc.TCPConn.Write(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	nc.wmu.Lock()
	defer nc.wmu.Unlock()
	nc.wbuf, nc.wn, nc.werrno = p, 0, 0
	err := rc.Write(nc.writeFn)
	n, errno := nc.wn, nc.werrno
	nc.wbuf = nil
	switch {
	case err != nil:
		return n, nc.fix(err, "write")
	case errno != 0:
		return n, nc.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

func (nc *Conn) writeFd(fd uintptr) bool {
	for nc.wn < len(nc.wbuf) {
		n, errno := sysWrite(fd, nc.wbuf[nc.wn:])
		switch errno {
		case 0:
			nc.wn += n
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the send buffer is full: wait in the poller
		}
		nc.werrno = errno
		return true
	}
	return true
}

// fix turns the error of a RawConn wait (a deadline, a closed connection)
// into what Read and Write of a TCPConn return: the same *net.OpError with
// the operation's name.
func (nc *Conn) fix(err error, op string) error {
	if oe, ok := err.(*net.OpError); ok {
		oe.Op = op
		return oe
	}
	return nc.opError(op, err)
}

func (nc *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: nc.TCPConn.LocalAddr(), Addr: nc.TCPConn.RemoteAddr(), Err: err}
}

package netio

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The relay loop: one goroutine that moves the bytes of every joined pair
// of TCP connections, waiting in an epoll set of its own, the way an
// event-driven proxy does.
//
// A goroutine per direction (the portable Join) costs, around every
// message, a read that finds nothing, a park, the scheduler's search for
// work with a second epoll_wait, and the wake-up again. The loop instead
// sleeps in one blocking epoll_wait, is woken by the kernel itself, and
// knows from the edge-triggered events (with EPOLLRDHUP, which the
// runtime's poller does not pass on) when a socket has nothing more to
// read: a read that returned less than its buffer drained the socket, and
// anything arriving later (data, FIN, RST) raises a new event. So a
// message costs what it costs nginx: one wait, one read, one write; and
// under load one wait serves many.
//
// The loop owns duplicates of the two descriptors; Join closes the
// connections themselves first, which removes them from the runtime's
// poller, so their events wake nothing else. The loop waits through the
// runtime's system call path (entersyscall): its thread then holds no P,
// and the garbage collector never waits for it. Its reads and writes are
// raw, non-blocking system calls. It is not locked to its thread: the
// scheduler's time-slice preemption (every 10 ms for a goroutine that
// never parks) is then a cheap reschedule instead of a hand-off between
// threads. It runs only when the process has at least two Ps: with one,
// the runtime would hand that P away each time the loop sleeps and take
// it back each time it wakes. It ends when no pair is left.

// yieldEvery: the loop yields to the scheduler this often when it is
// busy. A goroutine that runs for 10 ms without passing through the
// scheduler (as a loop that only ever sleeps in system calls does) makes
// the runtime's monitor thread take its P away in the middle of a wait
// and then poll every 20 µs for a while; yielding before that costs a
// reschedule every few milliseconds instead.
const yieldEvery = 5 * time.Millisecond

// moveReads bounds the reads of one direction per turn (1 MiB with 64 KiB
// buffers), so that a bulk transfer does not hold up the other pairs.
const moveReads = 16

// loopMinProcs is the GOMAXPROCS from which Join uses the loop.
const loopMinProcs = 2

var (
	relayOnce sync.Once
	// relay is nil when the loop could not be made (no epoll or eventfd
	// to be had): Join then relays with a goroutine per direction.
	relay *loop
)

// theLoop returns the process's relay loop, started on first use, or nil
// when Join should use a goroutine per direction.
func theLoop() *loop {
	if runtime.GOMAXPROCS(0) < loopMinProcs {
		return nil
	}
	relayOnce.Do(func() { relay, _ = newLoop() })
	return relay
}

// event flags as the loop reads them.
const (
	evIn  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	evOut = unix.EPOLLOUT | unix.EPOLLHUP | unix.EPOLLERR
	evEnd = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	// wakeSlot marks the eventfd's events.
	wakeSlot = -1
)

type loop struct {
	epfd, wakefd int

	mu      sync.Mutex // guards queue and running
	queue   []command
	running bool // run's goroutine is there (or about to be)
	// spare is the queue's other slice, swapped in by the loop, so
	// neither is allocated again.
	spare []command

	// Owned by the loop's thread.
	slots  []*lpair
	free   []int32
	active int // pairs in slots
	// ready are pairs that stopped at moveReads with bytes to move;
	// spareReady is its other slice.
	ready, spareReady []*lpair
	// waits counts epoll_waits; yielded is when the loop last yielded.
	waits   uint64
	yielded time.Time
	events  []unix.EpollEvent
	bufs    []*[]byte
}

type command struct {
	p     *lpair
	abort bool
	gen   uint32
}

// lpair is one joined pair, a and b, as the loop moves it. Side 0 is a,
// side 1 is b; dir[0] moves a→b, dir[1] moves b→a.
type lpair struct {
	fd       [2]int
	slot     int32
	gen      uint32
	queued   uint32 // gen while p is in the loop's ready list
	readable [2]bool
	writable [2]bool
	// ended: the side reported EOF, a hang-up or an error, so a short
	// read does not mean it is drained.
	ended [2]bool
	dir   [2]ldir
	n     [2]int64
	errs  [2]error
	done  chan struct{}
}

// ldir is one direction: bytes read from its source and not yet written.
type ldir struct {
	bp       *[]byte // the loop's buffer while it holds bytes
	pending  []byte  // what remains to be written: of bp, or the caller's
	eof      bool
	finished bool
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return &loop{epfd: epfd, wakefd: wakefd, events: make([]unix.EpollEvent, 128)}, nil
}

// run is the loop's goroutine. It ends when no pair is left, and send
// starts it again for the next one: an idle process keeps no thread
// blocked for it.
func (l *loop) run() {
	for {
		l.commands()
		if l.active == 0 {
			l.mu.Lock()
			if len(l.queue) == 0 {
				l.running = false
				l.mu.Unlock()
				return
			}
			l.mu.Unlock()
			continue
		}
		if l.waits++; l.waits&63 == 0 {
			if now := time.Now(); now.Sub(l.yielded) > yieldEvery {
				// See yieldEvery.
				l.yielded = now
				runtime.Gosched()
			}
		}
		timeout := -1
		if len(l.ready) > 0 {
			timeout = 0 // pairs that stopped at their budget still have bytes
		}
		n, err := unix.EpollWait(l.epfd, l.events, timeout)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			panic("netio: epoll_wait: " + err.Error())
		}
		for i := range n {
			ev := &l.events[i]
			if ev.Fd == wakeSlot {
				var b [8]byte
				sysRead(uintptr(l.wakefd), b[:])
				continue
			}
			p := l.slots[ev.Fd]
			if p == nil || p.gen&(1<<31-1) != uint32(ev.Pad)>>1 {
				continue // a pair that ended earlier in this batch
			}
			side := ev.Pad & 1
			if ev.Events&evIn != 0 {
				p.readable[side] = true
			}
			if ev.Events&evOut != 0 {
				p.writable[side] = true
			}
			if ev.Events&evEnd != 0 {
				p.ended[side] = true
			}
			l.pump(p)
		}
		if len(l.ready) > 0 {
			ready := l.ready
			l.ready = l.spareReady[:0]
			for i, p := range ready {
				ready[i] = nil
				if p != nil { // nil: it ended meanwhile
					p.queued = 0
					l.pump(p)
				}
			}
			l.spareReady = ready[:0]
		}
	}
}

// again puts p on the list of pairs pumped after the next wait, once.
func (l *loop) again(p *lpair) {
	if p.queued != p.gen {
		p.queued = p.gen
		l.ready = append(l.ready, p)
	}
}

// commands takes the queued new pairs and aborts.
func (l *loop) commands() {
	l.mu.Lock()
	q := l.queue
	l.queue, l.spare = l.spare[:0], nil
	l.mu.Unlock()
	for i, c := range q {
		q[i] = command{}
		switch {
		case !c.abort:
			l.add(c.p)
		case int(c.p.slot) < len(l.slots) && l.slots[c.p.slot] == c.p && c.p.gen == c.gen:
			// ctx ended: the caller does not count this as an error.
			l.finish(c.p, true)
		}
	}
	l.mu.Lock()
	if l.spare == nil {
		l.spare = q[:0]
	}
	l.mu.Unlock()
}

func (l *loop) send(c command) {
	l.mu.Lock()
	l.queue = append(l.queue, c)
	start := !l.running
	l.running = true
	l.mu.Unlock()
	if start {
		go l.run()
		return
	}
	one := uint64(1)
	sysWrite(uintptr(l.wakefd), (*[8]byte)(unsafe.Pointer(&one))[:])
}

func (l *loop) add(p *lpair) {
	if len(l.free) > 0 {
		p.slot = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
	} else {
		p.slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
	}
	l.slots[p.slot] = p
	l.active++
	for side := range 2 {
		ev := unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
			Fd:     p.slot,
			Pad:    int32(p.gen<<1) | int32(side),
		}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, p.fd[side], &ev); err != nil {
			p.errs[0] = os.NewSyscallError("epoll_ctl", err)
			l.finish(p, false)
			return
		}
	}
	// Both may have bytes already, and both can take some: try at once.
	p.readable = [2]bool{true, true}
	p.writable = [2]bool{true, true}
	l.pump(p)
}

// pump moves what it can in both directions, and finishes the pair once
// both ended or one failed.
func (l *loop) pump(p *lpair) {
	for d := range 2 {
		if !l.move(p, d) {
			l.finish(p, false)
			return
		}
	}
	if p.dir[0].finished && p.dir[1].finished {
		l.finish(p, false)
	}
}

// move moves direction d until its source has nothing or its destination
// takes nothing more; false means it failed and the pair must end.
func (l *loop) move(p *lpair, d int) bool {
	src, dst := d, 1-d
	dr := &p.dir[d]
	reads := 0
	for !dr.finished {
		if len(dr.pending) > 0 {
			if !p.writable[dst] {
				return true
			}
			n, errno := sysWrite(uintptr(p.fd[dst]), dr.pending)
			switch errno {
			case 0:
				dr.pending = dr.pending[n:]
				p.n[d] += int64(n)
				if len(dr.pending) == 0 {
					l.putBuf(dr)
				}
				continue
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				p.writable[dst] = false
				return true
			}
			l.fail(p, d, "write", errno)
			return false
		}
		if dr.eof {
			// Half-close: the other direction may still answer.
			unix.Shutdown(p.fd[dst], unix.SHUT_WR)
			dr.finished = true
			return true
		}
		if !p.readable[src] {
			return true
		}
		if reads == moveReads {
			// Fair to the other pairs: come back after the next wait.
			l.again(p)
			return true
		}
		reads++
		if dr.bp == nil {
			dr.bp = l.getBuf()
		}
		buf := *dr.bp
		n, errno := sysRead(uintptr(p.fd[src]), buf)
		switch errno {
		case 0:
			if n == 0 {
				dr.eof = true
				l.putBuf(dr)
				continue
			}
			dr.pending = buf[:n]
			if n < len(buf) && !p.ended[src] {
				// Drained: what comes next raises an event.
				p.readable[src] = false
			}
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			p.readable[src] = false
			l.putBuf(dr)
			return true
		}
		l.fail(p, d, "read", errno)
		return false
	}
	return true
}

// fail records direction d's error; a peer that went away (a reset, a
// broken pipe) is not one. What made it out so far still reaches the
// destination's peer: a FIN is queued behind it before the close.
func (l *loop) fail(p *lpair, d int, op string, errno syscall.Errno) {
	unix.Shutdown(p.fd[1-d], unix.SHUT_WR)
	if errno != syscall.ECONNRESET && errno != syscall.EPIPE {
		p.errs[d] = os.NewSyscallError(op, errno)
	}
}

// finish closes both descriptors and hands the pair back to Join.
func (l *loop) finish(p *lpair, aborted bool) {
	for side := range 2 {
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, p.fd[side], nil)
		unix.Close(p.fd[side])
		p.fd[side] = -1
	}
	for d := range 2 {
		l.putBuf(&p.dir[d])
	}
	if aborted {
		p.errs = [2]error{}
	}
	if p.queued == p.gen {
		// Join may reuse p as soon as it has it back.
		for i := range l.ready {
			if l.ready[i] == p {
				l.ready[i] = nil
			}
		}
		p.queued = 0
	}
	l.slots[p.slot] = nil
	l.active--
	l.free = append(l.free, p.slot)
	p.done <- struct{}{}
}

func (l *loop) getBuf() *[]byte {
	if n := len(l.bufs); n > 0 {
		bp := l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
		return bp
	}
	b := make([]byte, bufSize)
	return &b
}

// putBuf takes back dr's buffer, if it has one; the loop keeps a few for
// the next reads and lets the rest go, so idle pairs hold none.
func (l *loop) putBuf(dr *ldir) {
	dr.pending = nil
	if dr.bp == nil {
		return
	}
	if len(l.bufs) < 16 {
		l.bufs = append(l.bufs, dr.bp)
	}
	dr.bp = nil
}

var lpairs = sync.Pool{New: func() any { return &lpair{done: make(chan struct{}, 1)} }}

// loopJoin is Join on the loop.
func loopJoin(ctx context.Context, l *loop, a, b *Conn, aPending, bPending []byte) (aToB, bToA int64, err error) {
	p := lpairs.Get().(*lpair)
	p.gen++
	p.n = [2]int64{}
	p.errs = [2]error{}
	p.ended = [2]bool{}
	p.dir = [2]ldir{{pending: aPending}, {pending: bPending}}
	var derr error
	p.fd[0], derr = detach(a)
	if derr == nil {
		p.fd[1], derr = detach(b)
		if derr != nil {
			unix.Close(p.fd[0])
		}
	}
	a.TCPConn.Close()
	b.TCPConn.Close()
	if derr != nil {
		lpairs.Put(p)
		return 0, 0, derr
	}
	l.send(command{p: p})
	if ctx.Done() != nil {
		gen := p.gen
		stop := context.AfterFunc(ctx, func() { l.send(command{p: p, abort: true, gen: gen}) })
		<-p.done
		if !stop() {
			// The abort may still be queued, and the loop reads the
			// pair when it takes it: this pair is not used again.
			aToB, bToA = p.n[0], p.n[1]
			return aToB, bToA, nil
		}
	} else {
		<-p.done
	}
	aToB, bToA = p.n[0], p.n[1]
	if ctx.Err() == nil {
		err = errors.Join(p.errs[0], p.errs[1])
	}
	lpairs.Put(p)
	return aToB, bToA, err
}

// detach returns a duplicate of c's descriptor for the loop, which then
// owns it; the caller closes c itself.
func detach(c *Conn) (int, error) {
	rc, err := c.TCPConn.SyscallConn()
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

// loopBusy reports whether the loop's goroutine is there: it is while
// any pair is joined, and ends once none is.
func loopBusy() bool {
	l := theLoop()
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running
}

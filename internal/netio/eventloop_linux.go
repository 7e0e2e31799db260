package netio

import (
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loop: one goroutine that serves every descriptor handed to
// it, waiting in an epoll set of its own, the way an event-driven proxy
// does. Join's relay pairs run on it (loop_linux.go), and so can other
// packages' connections (carrier's HTTP/1.1 path) through Loop.
//
// A goroutine per connection costs, around every message, a read that
// finds nothing, a park, the scheduler's search for work with a second
// epoll_wait, and the wake-up again. The loop instead sleeps in one
// blocking epoll_wait, is woken by the kernel itself, and knows from the
// edge-triggered events (with EPOLLRDHUP, which the runtime's poller does
// not pass on) when a socket has nothing more to read: a read that
// returned less than its buffer drained the socket, and anything arriving
// later (data, FIN, RST) raises a new event. So a message costs what it
// costs nginx: one wait, one read, one write; and under load one wait
// serves many.
//
// The loop owns its descriptors: callers hand it duplicates (Detach) and
// close their connections, which removes them from the runtime's poller,
// so their events wake nothing else. The loop waits through the runtime's
// system call path (entersyscall): its thread then holds no P, and the
// garbage collector never waits for it. Its reads and writes are raw,
// non-blocking system calls. It is not locked to its thread: the
// scheduler's time-slice preemption (every 10 ms for a goroutine that
// never parks) is then a cheap reschedule instead of a hand-off between
// threads. It runs only when the process has at least two Ps: with one,
// the runtime would hand that P away each time the loop sleeps and take
// it back each time it wakes. Its goroutine ends when nothing holds it
// (Hold, Release) and no deadline is set, and starts again with the next
// Post.

// yieldEvery: the loop yields to the scheduler this often when it is
// busy. A goroutine that runs for 10 ms without passing through the
// scheduler (as a loop that only ever sleeps in system calls does) makes
// the runtime's monitor thread take its P away in the middle of a wait
// and then poll every 20 µs for a while; yielding before that costs a
// reschedule every few milliseconds instead.
const yieldEvery = 5 * time.Millisecond

// LoopEnv is the environment variable that turns the event loop off
// ("off"), for comparison and to test the goroutine paths.
const LoopEnv = "GEFYRA_EVENT_LOOP"

// loopMinProcs is the GOMAXPROCS from which the loop is used.
const loopMinProcs = 2

// Events as handlers see them.
const (
	// EvIn: the descriptor may have bytes to read, or an end to report.
	EvIn = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	// EvOut: the descriptor may take bytes.
	EvOut = unix.EPOLLOUT | unix.EPOLLHUP | unix.EPOLLERR
	// EvEnd: the peer closed its side, or the connection failed; a read
	// that returns less than asked no longer means it is drained.
	EvEnd = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	// wakeSlot marks the eventfd's events.
	wakeSlot = -1
)

var (
	loopOnce sync.Once
	// shared is nil when the loop could not be made (no epoll or eventfd
	// to be had): its users then fall back to goroutines.
	shared *Loop
)

// Shared returns the process's event loop, or nil where there is none
// (another platform, fewer than two Ps, no epoll, or the environment's
// GEFYRA_EVENT_LOOP is "off"): the caller then serves its connections
// with goroutines.
func Shared() *Loop {
	if runtime.GOMAXPROCS(0) < loopMinProcs || os.Getenv(LoopEnv) == "off" {
		return nil
	}
	loopOnce.Do(func() { shared, _ = newLoop() })
	return shared
}

// Handler is served by the loop: Event is called on the loop's goroutine
// with the events (EvIn, EvOut, EvEnd bits) of a descriptor added with
// tag, or with no events after Again.
type Handler interface {
	Event(tag int, events uint32)
}

// Slot is a descriptor's place in the loop.
type Slot int32

// Deadline is embedded by a Handler that wants Expire calls; see
// SetDeadline.
type Deadline struct {
	at time.Time
	i  int32 // index in the loop's timed list, -1 when not there
	on bool
}

func (d *Deadline) deadline() *Deadline { return d }

// Expirer is a Handler with a Deadline.
type Expirer interface {
	// Expire is called on the loop once the deadline set has passed.
	Expire(now time.Time)
	deadline() *Deadline
}

// Loop is an event loop of its own epoll set; see Shared. Every method
// but Post runs on the loop's goroutine only, from a Handler's Event or
// Expire or a function given to Post.
type Loop struct {
	epfd, wakefd int

	mu      sync.Mutex // guards queue and running
	queue   []func()
	running bool // run's goroutine is there (or about to be)
	// spare is the queue's other slice, swapped in by the loop, so
	// neither is allocated again.
	spare []func()

	// Owned by the loop's goroutine.
	slots []slot
	free  []int32
	holds int
	// ready are handlers to call again after the next wait; spareReady
	// is its other slice.
	ready, spareReady []again
	// waits counts epoll_waits; yielded is when the loop last yielded.
	waits   uint64
	yielded time.Time
	events  []unix.EpollEvent
	bufs    []*[]byte
	now     time.Time
	// timed are the Expirers with a deadline; next is the earliest of
	// them (or earlier: a sweep then finds nothing).
	timed   []Expirer
	next    time.Time
	expired []Expirer
}

type slot struct {
	h   Handler
	tag int
	gen uint32
}

type again struct {
	h   Handler
	tag int
}

func newLoop() (*Loop, error) {
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
	return &Loop{epfd: epfd, wakefd: wakefd, events: make([]unix.EpollEvent, 128)}, nil
}

// Post runs f on the loop's goroutine, starting it if need be. It may be
// called from any goroutine.
func (l *Loop) Post(f func()) {
	l.mu.Lock()
	l.queue = append(l.queue, f)
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

// Hold keeps the loop's goroutine running until the matching Release.
func (l *Loop) Hold() { l.holds++ }

// Release ends a Hold.
func (l *Loop) Release() { l.holds-- }

// Now is the time the loop read after its last wait.
func (l *Loop) Now() time.Time { return l.now }

// Add registers fd, edge-triggered for reading, writing and the peer's
// close, with events going to h with tag.
func (l *Loop) Add(fd int, h Handler, tag int) (Slot, error) {
	var s int32
	if n := len(l.free); n > 0 {
		s = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		s = int32(len(l.slots))
		l.slots = append(l.slots, slot{})
	}
	sl := &l.slots[s]
	sl.h, sl.tag = h, tag
	sl.gen++
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
		Fd:     s,
		Pad:    int32(sl.gen),
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		sl.h = nil
		l.free = append(l.free, s)
		return -1, os.NewSyscallError("epoll_ctl", err)
	}
	return Slot(s), nil
}

// Bind sends s's events to h with tag from now on; no system call.
func (l *Loop) Bind(s Slot, h Handler, tag int) {
	sl := &l.slots[s]
	sl.h, sl.tag = h, tag
}

// Close takes fd, registered at s, out of the epoll set and closes it.
// Events of it already taken in this turn are dropped.
func (l *Loop) Close(s Slot, fd int) {
	l.Remove(s, fd)
	unix.Close(fd)
}

// Remove takes fd, registered at s, out of the epoll set, and leaves it
// open (for Attach).
func (l *Loop) Remove(s Slot, fd int) {
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	sl := &l.slots[s]
	sl.h = nil
	sl.gen++
	l.free = append(l.free, int32(s))
}

// Again calls h.Event(tag, 0) after the next wait (which then does not
// block). The handler asks for that once: Again does not look for it.
func (l *Loop) Again(h Handler, tag int) {
	l.ready = append(l.ready, again{h, tag})
}

// Unqueue drops h's pending Again calls.
func (l *Loop) Unqueue(h Handler) {
	for i := range l.ready {
		if l.ready[i].h == h {
			l.ready[i].h = nil
		}
	}
}

// SetDeadline makes the loop call h.Expire once at has passed; a zero at
// cancels. The loop looks at its clock after every wait, so Expire may
// come late by as much as a busy turn takes.
func (l *Loop) SetDeadline(h Expirer, at time.Time) {
	d := h.deadline()
	if !d.on {
		d.on, d.i = true, -1
	}
	d.at = at
	switch {
	case at.IsZero():
		if d.i >= 0 {
			last := len(l.timed) - 1
			moved := l.timed[last]
			l.timed[d.i] = moved
			moved.deadline().i = d.i
			l.timed[last] = nil
			l.timed = l.timed[:last]
			d.i = -1
		}
		return
	case d.i < 0:
		d.i = int32(len(l.timed))
		l.timed = append(l.timed, h)
	}
	if l.next.IsZero() || at.Before(l.next) {
		l.next = at
	}
}

// expire calls Expire on every handler whose deadline has passed, and
// finds the next deadline.
func (l *Loop) expire() {
	l.next = time.Time{}
	exp := l.expired[:0]
	for _, h := range l.timed {
		at := h.deadline().at
		if !at.After(l.now) {
			exp = append(exp, h)
		} else if l.next.IsZero() || at.Before(l.next) {
			l.next = at
		}
	}
	for i, h := range exp {
		exp[i] = nil
		if d := h.deadline(); d.i >= 0 && !d.at.After(l.now) {
			l.SetDeadline(h, time.Time{})
			h.Expire(l.now)
		}
	}
	l.expired = exp[:0]
}

// waitTimeout is epoll_wait's timeout in milliseconds: none with handlers
// to call again, until the next deadline, or forever.
func (l *Loop) waitTimeout() int {
	if len(l.ready) > 0 {
		return 0
	}
	if l.next.IsZero() {
		return -1
	}
	d := l.next.Sub(l.now)
	if d <= 0 {
		return 0
	}
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

// run is the loop's goroutine. It ends when nothing holds it, and Post
// starts it again: an idle process keeps no thread blocked for it.
func (l *Loop) run() {
	l.now = time.Now()
	for {
		l.commands()
		if l.holds == 0 && len(l.ready) == 0 && len(l.timed) == 0 {
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
			if l.now.Sub(l.yielded) > yieldEvery {
				// See yieldEvery.
				l.yielded = l.now
				runtime.Gosched()
			}
		}
		n, err := unix.EpollWait(l.epfd, l.events, l.waitTimeout())
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			panic("netio: epoll_wait: " + err.Error())
		}
		l.now = time.Now()
		for i := range n {
			ev := &l.events[i]
			if ev.Fd == wakeSlot {
				var b [8]byte
				sysRead(uintptr(l.wakefd), b[:])
				continue
			}
			sl := &l.slots[ev.Fd]
			if sl.h == nil || sl.gen != uint32(ev.Pad) {
				continue // removed earlier in this turn
			}
			sl.h.Event(sl.tag, ev.Events)
		}
		if len(l.ready) > 0 {
			ready := l.ready
			l.ready = l.spareReady[:0]
			for i, a := range ready {
				ready[i] = again{}
				if a.h != nil { // nil: it ended meanwhile
					a.h.Event(a.tag, 0)
				}
			}
			l.spareReady = ready[:0]
		}
		if !l.next.IsZero() && !l.now.Before(l.next) {
			l.expire()
		}
	}
}

// commands runs the posted functions.
func (l *Loop) commands() {
	l.mu.Lock()
	q := l.queue
	l.queue, l.spare = l.spare[:0], nil
	l.mu.Unlock()
	for i, f := range q {
		q[i] = nil
		f()
	}
	l.mu.Lock()
	if l.spare == nil {
		l.spare = q[:0]
	}
	l.mu.Unlock()
}

// Buf returns one of the loop's 64 KiB buffers.
func (l *Loop) Buf() *[]byte {
	if n := len(l.bufs); n > 0 {
		bp := l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
		return bp
	}
	b := make([]byte, bufSize)
	return &b
}

// PutBuf gives a buffer of Buf back; the loop keeps a few for the next
// reads and lets the rest go, so idle connections hold none.
func (l *Loop) PutBuf(bp *[]byte) {
	if len(l.bufs) < 16 {
		l.bufs = append(l.bufs, bp)
	}
}

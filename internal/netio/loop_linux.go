package netio

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Join's relay pairs on the event loop (eventloop_linux.go): a pair is a
// Handler of two descriptors, tag 0 for a and 1 for b.

// moveReads bounds the reads of one direction per turn (1 MiB with 64 KiB
// buffers), so that a bulk transfer does not hold up the other pairs.
const moveReads = 16

// theLoop returns the loop Join uses, or nil when Join should use a
// goroutine per direction.
func theLoop() *Loop { return Shared() }

// lpair is one joined pair, a and b, as the loop moves it. Side 0 is a,
// side 1 is b; dir[0] moves a→b, dir[1] moves b→a.
type lpair struct {
	l        *Loop
	fd       [2]int
	slot     [2]Slot
	gen      uint32
	live     bool // between add and finish
	queued   bool // in the loop's ready list
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

// Event takes the events of side tag (none: the pair's turn again).
func (p *lpair) Event(side int, ev uint32) {
	if ev == 0 {
		p.queued = false
	}
	if ev&EvIn != 0 {
		p.readable[side] = true
	}
	if ev&EvOut != 0 {
		p.writable[side] = true
	}
	if ev&EvEnd != 0 {
		p.ended[side] = true
	}
	p.l.pump(p)
}

// again puts p on the list of pairs pumped after the next wait, once.
func (l *Loop) again(p *lpair) {
	if !p.queued {
		p.queued = true
		l.Again(p, 0)
	}
}

// add takes a new pair on the loop.
func (l *Loop) add(p *lpair) {
	p.l = l
	p.live = true
	p.slot = [2]Slot{-1, -1}
	l.Hold()
	for side := range 2 {
		s, err := l.Add(p.fd[side], p, side)
		if err != nil {
			p.errs[0] = err
			l.finish(p, false)
			return
		}
		p.slot[side] = s
	}
	// Both may have bytes already, and both can take some: try at once.
	p.readable = [2]bool{true, true}
	p.writable = [2]bool{true, true}
	l.pump(p)
}

// abort ends the pair of generation gen, if it is still on the loop: ctx
// ended, and the caller does not count that as an error.
func (l *Loop) abort(p *lpair, gen uint32) {
	if p.live && p.gen == gen {
		l.finish(p, true)
	}
}

// pump moves what it can in both directions, and finishes the pair once
// both ended or one failed.
func (l *Loop) pump(p *lpair) {
	if !p.live {
		return
	}
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
func (l *Loop) move(p *lpair, d int) bool {
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
			dr.bp = l.Buf()
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
func (l *Loop) fail(p *lpair, d int, op string, errno syscall.Errno) {
	unix.Shutdown(p.fd[1-d], unix.SHUT_WR)
	if errno != syscall.ECONNRESET && errno != syscall.EPIPE {
		p.errs[d] = os.NewSyscallError(op, errno)
	}
}

// finish closes both descriptors and hands the pair back to Join.
func (l *Loop) finish(p *lpair, aborted bool) {
	for side := range 2 {
		if p.slot[side] >= 0 {
			l.Close(p.slot[side], p.fd[side])
		} else {
			unix.Close(p.fd[side])
		}
		p.fd[side] = -1
	}
	for d := range 2 {
		l.putBuf(&p.dir[d])
	}
	if aborted {
		p.errs = [2]error{}
	}
	if p.queued {
		// Join may reuse p as soon as it has it back.
		l.Unqueue(p)
		p.queued = false
	}
	p.live = false
	l.Release()
	p.done <- struct{}{}
}

// putBuf takes back dr's buffer, if it has one.
func (l *Loop) putBuf(dr *ldir) {
	dr.pending = nil
	if dr.bp == nil {
		return
	}
	l.PutBuf(dr.bp)
	dr.bp = nil
}

var lpairs = sync.Pool{New: func() any { return &lpair{done: make(chan struct{}, 1)} }}

// loopJoin is Join on the loop.
func loopJoin(ctx context.Context, l *Loop, a, b *Conn, aPending, bPending []byte) (aToB, bToA int64, err error) {
	p := lpairs.Get().(*lpair)
	p.gen++
	p.n = [2]int64{}
	p.errs = [2]error{}
	p.ended = [2]bool{}
	p.dir = [2]ldir{{pending: aPending}, {pending: bPending}}
	var derr error
	p.fd[0], derr = Detach(a.TCPConn)
	if derr == nil {
		p.fd[1], derr = Detach(b.TCPConn)
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
	l.Post(func() { l.add(p) })
	if ctx.Done() != nil {
		gen := p.gen
		stop := context.AfterFunc(ctx, func() { l.Post(func() { l.abort(p, gen) }) })
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

// loopBusy reports whether the loop's goroutine is there: it is while
// anything is on it, and ends once nothing is.
func loopBusy() bool {
	l := theLoop()
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running
}

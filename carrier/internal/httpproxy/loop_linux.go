package httpproxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/upstream"
	"gefyra.dev/gefyra/internal/netio"
)

// HTTP/1.1 on the event loop (internal/netio's Loop). The common request
// (HTTP/1.1, no body or a small one received whole, routed to a cluster
// with an idle upstream connection, answered with a Content-Length body or
// none) is served there from start to end, as a state machine: one wait,
// one read and one write on each side, as nginx does, with no goroutine
// woken. What the loop cannot do in one thread's turn goes to the
// connection's goroutine, which waits in ServeConn meanwhile:
//
//   - dialling (the bridge's handshake with stowaway included), after
//     which the request goes on on the loop;
//   - everything else, before anything of the request was sent: the
//     connection leaves the loop and the goroutine path serves it from
//     then on (request bodies that did not come whole, chunked ones,
//     Expect, Upgrade, HTTP/1.0, h2c, malformed requests);
//   - a response with a chunked body, a body until close, an interim
//     (1xx) response or a head larger than the loop's buffer: the
//     goroutine relays it and serves the connection from then on.
//
// The loop keeps idle upstream connections of its own, registered in its
// epoll set, so one that the server closes is dropped when it does.

// The states of a connection on the loop.
const (
	stHead = iota // reading a request head
	stAway        // the goroutine dials
	stSend        // writing the request upstream
	stWait        // reading the response head
	stBody        // writing to the client, reading the response body
	stDone        // closed, or handed to the goroutine
)

// Tags of a connection's descriptors.
const (
	tagClient = iota
	tagUpstream
)

// lconn is a client connection on the loop. Its fields belong to the
// loop's goroutine, except while it is stAway: then req and l are the
// connection goroutine's until it posts the result.
type lconn struct {
	netio.Deadline
	p       *Proxy
	loop    *netio.Loop
	current func() *config.Listener
	wake    chan lwake

	fd                        int
	slot                      netio.Slot
	readable, writable, ended bool
	in                        []byte // the client's bytes: in[r:w] not yet taken
	r, w                      int
	out                       []byte // what goes to the client next
	head                      []byte // heads and local answers are built here
	clientIP                  []byte
	client                    netip.AddrPort
	local                     net.Addr

	sr      sliceReader // heads are parsed from it (a local one would escape)
	state   int
	aborted bool // ctx ended while the goroutine dialled
	// dialing is what the goroutine does while the connection is stAway.
	dialing int
	req     message
	resp    message
	// The request in hand.
	l          *config.Listener
	rt         *config.Route
	target     *config.Cluster
	stats      *metrics.Series
	started    time.Time
	sent       time.Time // the request went out
	last       time.Time // the previous response went out
	timeout    time.Duration
	idle       time.Duration
	closeAfter bool
	retried    bool
	requests   int // taken on this connection
	status     int
	nUp, nDown int64
	reqBytes   []byte // the request as it goes upstream
	upOut      []byte // of reqBytes, not yet written

	up        *lup
	upIn      []byte // the response's bytes: upIn[ur:uw] not yet taken
	ur, uw    int
	remaining int64
	reuse     bool
}

// What the goroutine does for a request while the connection is stAway.
const (
	dialChoose   = iota // route it and dial (choose)
	dialFallback        // dial the fallback: its bridge could not be reached
	dialRetry           // dial again: its kept-alive connection was closed
)

// lwake is what the loop asks of the connection's goroutine.
type lwake struct {
	dial bool     // choose and dial for the request in hand
	h    *handoff // serve the connection from now on (nil and !dial: it ended)
}

// handoff is a connection leaving the loop.
type handoff struct {
	fd      int
	pending []byte // the client's bytes not yet taken
	fresh   bool   // no request was taken on the connection yet
	// A request whose response the goroutine reads (upFd >= 0).
	upFd      int
	upPending []byte
	req       message
	rt        *config.Route
	target    *config.Cluster
	stats     *metrics.Series
	started   time.Time
	sent      time.Time
	nUp       int64
}

// lbufSize is the size of the buffers a connection on the loop reads
// requests and responses into, taken only while it has bytes to hold; a
// head that does not fit leaves the loop.
const lbufSize = 16 << 10

// serveOnLoop serves c on the loop until it closes (nil) or leaves it;
// the handoff then says what the goroutine path takes on.
func (p *Proxy) serveOnLoop(ctx context.Context, loop *netio.Loop, c *net.TCPConn, current func() *config.Listener) *handoff {
	fd, err := netio.Detach(c)
	if err != nil {
		return &handoff{fd: -1, upFd: -1, fresh: true}
	}
	lc := &lconn{p: p, loop: loop, current: current, wake: make(chan lwake, 1), fd: fd, local: c.LocalAddr()}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		lc.client = ta.AddrPort()
		lc.clientIP = lc.client.Addr().Unmap().AppendTo(nil)
	}
	c.Close()
	loop.Post(lc.start)
	stop := context.AfterFunc(ctx, func() { loop.Post(lc.abort) })
	defer stop()
	for {
		w := <-lc.wake
		switch {
		case w.dial:
			res := lc.dial(ctx)
			loop.Post(func() { lc.dialled(res) })
		case w.h != nil:
			return w.h
		default:
			return nil
		}
	}
}

func (lc *lconn) start() {
	lc.loop.Hold()
	s, err := lc.loop.Add(lc.fd, lc, tagClient)
	if err != nil {
		lc.loop.Release()
		syscall.Close(lc.fd)
		lc.state = stDone
		lc.wake <- lwake{}
		return
	}
	lc.slot = s
	lc.readable, lc.writable = true, true
	lc.last = lc.loop.Now()
	lc.state = stHead
	lc.run()
}

// abort ends the connection: its ctx is done.
func (lc *lconn) abort() {
	switch lc.state {
	case stDone:
	case stAway:
		lc.aborted = true // dialled ends it
	default:
		lc.finish()
	}
}

// Event takes the events of the client's or the upstream's descriptor.
func (lc *lconn) Event(tag int, ev uint32) {
	if tag == tagClient {
		lc.readable = lc.readable || ev&netio.EvIn != 0
		lc.writable = lc.writable || ev&netio.EvOut != 0
		lc.ended = lc.ended || ev&netio.EvEnd != 0
	} else if u := lc.up; u != nil {
		u.readable = u.readable || ev&netio.EvIn != 0
		u.writable = u.writable || ev&netio.EvOut != 0
		u.ended = u.ended || ev&netio.EvEnd != 0
	}
	lc.run()
}

// Expire: a timeout of the state the connection is in.
func (lc *lconn) Expire(time.Time) {
	switch lc.state {
	case stHead:
		lc.finish()
		return
	case stSend, stWait:
		lc.failed(os.ErrDeadlineExceeded)
	case stBody:
		// Stuck writing to the client, or waiting for the upstream.
		lc.broken(len(lc.out) == 0 && lc.up != nil)
		return
	}
	lc.run()
}

// run goes from state to state until the connection waits for an event.
func (lc *lconn) run() {
	for {
		var more bool
		switch lc.state {
		case stHead:
			more = lc.readHead()
		case stSend:
			more = lc.send()
		case stWait:
			more = lc.readResponseHead()
		case stBody:
			more = lc.relay()
		}
		if !more {
			return
		}
	}
}

// readHead takes the next request once its head, and its body if it has
// one, are in.
func (lc *lconn) readHead() bool {
	v := sniffHTTP
	if lc.r < lc.w && lc.requests == 0 {
		v = sniff(lc.in[lc.r:lc.w])
		if v == sniffOther {
			return lc.handoff(false) // see serve
		}
	}
	if lc.r < lc.w && v == sniffHTTP {
		sr := &lc.sr
		*sr = sliceReader{b: lc.in[lc.r:lc.w]}
		err := lc.req.readRequest(sr)
		switch {
		case err == errIncomplete:
		case err != nil:
			return lc.handoff(false)
		case !lc.fits(&lc.req):
			return lc.handoff(false)
		case lc.req.contentLength > 0 && lc.r+sr.off+int(lc.req.contentLength) > lc.w:
			// The body is on its way. If it is not in the socket
			// already, the goroutine path waits for it, with the
			// route's timeouts and metrics.
			if !lc.readable {
				return lc.handoff(false)
			}
		default:
			return lc.begin(sr.off)
		}
	}
	if lc.in != nil && lc.w == len(lc.in) {
		if lc.r == 0 {
			return lc.handoff(false) // a head larger than the buffer
		}
		lc.w = copy(lc.in, lc.in[lc.r:lc.w])
		lc.r = 0
	}
	if !lc.readable {
		if lc.r == lc.w {
			// At rest: the buffer goes back until bytes come.
			lc.bufs().putBuf(lc.in)
			lc.in, lc.r, lc.w = nil, 0, 0
		}
		lc.headDeadline()
		return false
	}
	if lc.in == nil {
		lc.in = lc.bufs().getBuf()
	}
	n, errno := netio.Read(lc.fd, lc.in[lc.w:])
	switch errno {
	case 0:
		if n == 0 {
			lc.finish()
			return false
		}
		if lc.w+n < len(lc.in) && !lc.ended {
			lc.readable = false // drained
		}
		lc.w += n
		return true
	case syscall.EINTR:
		return true
	case syscall.EAGAIN:
		lc.readable = false
		return true
	}
	lc.finish()
	return false
}

// fits reports whether the loop serves req itself.
func (lc *lconn) fits(req *message) bool {
	return req.minor == 1 && !req.chunked && !req.expect100 && !req.isUpgrade() &&
		req.contentLength <= lbufSize/2 && !eqFold(req.Method(), "connect")
}

// headDeadline sets the timeout of the wait for a request.
func (lc *lconn) headDeadline() {
	l := lc.l
	if l == nil || l.HTTP == nil {
		if l = lc.current(); l == nil || l.HTTP == nil {
			lc.loop.SetDeadline(lc, time.Time{})
			return
		}
	}
	h := l.HTTP
	at := time.Time{}
	switch {
	case lc.r < lc.w && h.RequestHeadersTimeout > 0:
		if lc.started.Before(lc.last) {
			lc.started = lc.loop.Now() // the first bytes of this request
		}
		at = lc.started.Add(h.RequestHeadersTimeout)
	case h.IdleTimeout > 0:
		at = lc.last.Add(h.IdleTimeout)
	}
	lc.loop.SetDeadline(lc, at)
}

// begin routes the request whose head is headLen bytes.
func (lc *lconn) begin(headLen int) bool {
	l := lc.current()
	if l == nil || l.HTTP == nil {
		lc.finish()
		return false
	}
	req := &lc.req
	lc.started = lc.loop.Now()
	lc.requests++
	lc.l = l
	lc.closeAfter = req.connClose
	lc.retried = false
	lc.nUp, lc.nDown = 0, 0
	body := int(max(req.contentLength, 0))
	lc.reqBytes = appendRequestHead(lc.reqBytes[:0], req, lc.clientIP, false, lc.local)
	lc.reqBytes = append(lc.reqBytes, lc.in[lc.r+headLen:lc.r+headLen+body]...)
	lc.nUp = int64(body)
	req.bodyRead = body > 0
	lc.r += headLen + body
	if lc.r == lc.w {
		lc.r, lc.w = 0, 0
	}
	ch := lc.p.choose(l, req, lc)
	if ch.dial {
		lc.away(dialChoose)
		return false
	}
	return lc.chosen(ch)
}

// away leaves the request to the goroutine, to dial as what says.
func (lc *lconn) away(what int) {
	lc.dialing = what
	lc.state = stAway
	lc.loop.SetDeadline(lc, time.Time{})
	lc.wake <- lwake{dial: true}
}

// connect takes an idle connection of the loop to an endpoint of c.
func (lc *lconn) connect(c *config.Cluster) error {
	ep := c.Endpoint()
	if ep == "" {
		return errNeedDial
	}
	ps := lc.p.loopPools(lc.loop)
	k := keyOf(c, ep)
	u := ps.take(k)
	for u != nil && lc.nUp > 0 && !netio.Quiet(u.fd) {
		// A request with a body cannot be sent again if the connection
		// turns out closed: look first, as the goroutine path does.
		ps.loop.Close(u.slot, u.fd)
		u = ps.take(k)
	}
	if u == nil {
		return errNeedDial
	}
	lc.loop.Bind(u.slot, lc, tagUpstream)
	lc.up = u
	return nil
}

// chosen goes on with where the request goes.
func (lc *lconn) chosen(ch choice) bool {
	if ch.target == nil {
		lc.answer(ch.stats, ch.status, ch.msg)
		return true
	}
	lc.rt, lc.target, lc.stats = ch.rt, ch.target, ch.stats
	lc.timeout, lc.idle = lc.p.routeTimes(ch.rt)
	lc.upOut = lc.reqBytes
	lc.ur, lc.uw = 0, 0
	lc.state = stSend
	return true
}

// loopDialer is the connector of the goroutine dialling for the loop. A
// second connect is the fallback's, after the route's bridge could not be
// reached: it is left to the loop, which may have an idle connection.
type loopDialer struct {
	ctx      context.Context
	client   netip.AddrPort
	tried    bool
	deferred bool
	tc       *net.TCPConn
	key      lkey
}

func (d *loopDialer) connect(c *config.Cluster) error {
	if d.tried {
		d.deferred = true
		return nil
	}
	d.tried = true
	tc, key, err := dialCluster(d.ctx, c, d.client)
	d.tc, d.key = tc, key
	return err
}

// dialCluster opens a connection to an endpoint of c, as upstream.Dial
// does, and says which.
func dialCluster(ctx context.Context, c *config.Cluster, client netip.AddrPort) (*net.TCPConn, lkey, error) {
	ep := c.Endpoint()
	if ep == "" {
		return nil, lkey{}, &upstream.DialError{Cluster: c.Name, Kind: upstream.KindNoEndpoints, Err: upstream.ErrNoEndpoints}
	}
	tc, err := upstream.DialEndpoint(ctx, c, ep, client)
	return tc, keyOf(c, ep), err
}

// dialResult is the goroutine's answer: where the request goes (ch), with
// the connection it opened (fd >= 0), or with none yet (deferred: the
// fallback), or the error that ends it (err, for target and stats of ch).
type dialResult struct {
	ch       choice
	fd       int
	key      lkey
	deferred bool
	err      error
}

// dial runs on the connection's goroutine while the connection is stAway.
func (lc *lconn) dial(ctx context.Context) dialResult {
	p := lc.p
	var tc *net.TCPConn
	var key lkey
	var res dialResult
	switch lc.dialing {
	case dialChoose:
		d := &loopDialer{ctx: ctx, client: lc.client}
		res.ch = p.choose(lc.l, &lc.req, d)
		res.deferred = d.deferred
		tc, key = d.tc, d.key
	case dialFallback:
		res.ch = choice{rt: lc.rt, target: lc.target, stats: lc.stats}
		c, k, err := dialCluster(ctx, lc.target, lc.client)
		if err != nil {
			var de *upstream.DialError
			if errors.As(err, &de) {
				p.Metrics.UpstreamError(lc.target.Name, de.Kind)
			}
			res.ch = choice{rt: lc.rt, stats: lc.stats, status: http.StatusServiceUnavailable, msg: "carrier: fallback connect error: " + err.Error() + "\n"}
			break
		}
		tc, key = c, k
	case dialRetry:
		uc, target, stats, err := p.redial(ctx, lc.l, lc.rt, lc.target, lc.stats, lc.client)
		res.ch = choice{rt: lc.rt, target: target, stats: stats}
		if err != nil {
			res.err = err
			break
		}
		tc, key = uc.TCPConn, keyOf(target, uc.Endpoint())
	}
	res.fd = -1
	if tc == nil {
		return res
	}
	fd, err := netio.Detach(tc)
	tc.Close()
	if err != nil {
		res.ch = choice{stats: res.ch.stats, status: http.StatusBadGateway, msg: "carrier: " + err.Error() + "\n"}
		return res
	}
	res.fd, res.key = fd, key
	return res
}

// dialled takes the goroutine's result back on the loop.
func (lc *lconn) dialled(res dialResult) {
	if lc.aborted || lc.state != stAway {
		if res.fd >= 0 {
			syscall.Close(res.fd)
		}
		if lc.state != stDone {
			lc.finish()
		}
		return
	}
	switch {
	case res.err != nil:
		lc.rt, lc.target, lc.stats = res.ch.rt, res.ch.target, res.ch.stats
		lc.failed(res.err)
		lc.run()
		return
	case res.fd >= 0:
		u := lc.p.loopPools(lc.loop).newConn(res.key, res.fd)
		s, err := lc.loop.Add(res.fd, lc, tagUpstream)
		if err != nil {
			syscall.Close(res.fd)
			res.ch = choice{stats: res.ch.stats, status: http.StatusBadGateway, msg: "carrier: " + err.Error() + "\n"}
		} else {
			u.slot = s
			lc.up = u
		}
	case res.deferred:
		if lc.connect(res.ch.target) != nil {
			lc.rt, lc.target, lc.stats = res.ch.rt, res.ch.target, res.ch.stats
			lc.away(dialFallback)
			return
		}
	}
	if lc.chosen(res.ch) {
		lc.run()
	}
}

// send writes the request upstream.
func (lc *lconn) send() bool {
	u := lc.up
	if errno := flush(u.fd, &lc.upOut, &u.writable); errno != 0 {
		return lc.upstreamError(errno)
	}
	if len(lc.upOut) > 0 {
		lc.after(lc.idle)
		return false
	}
	lc.sent = lc.loop.Now()
	lc.after(lc.timeout)
	if lc.upIn == nil {
		lc.upIn = lc.bufs().getBuf()
	}
	lc.ur, lc.uw = 0, 0
	lc.state = stWait
	return true
}

// readResponseHead reads the response head and starts the response.
func (lc *lconn) readResponseHead() bool {
	u := lc.up
	buf := lc.upIn
	for {
		if lc.ur < lc.uw {
			sr := &lc.sr
			*sr = sliceReader{b: buf[lc.ur:lc.uw]}
			err := lc.resp.readResponse(sr)
			if err == nil {
				return lc.respond(sr.off)
			}
			if err != errIncomplete {
				lc.failed(err)
				return true
			}
		}
		if lc.uw == len(buf) {
			return lc.handoff(true) // a head larger than the buffer
		}
		if !u.readable {
			return false // the route timeout runs
		}
		n, errno := netio.Read(u.fd, buf[lc.uw:])
		switch {
		case errno == 0 && n > 0:
			if lc.uw+n < len(buf) && !u.ended {
				u.readable = false
			}
			lc.uw += n
		case errno == syscall.EINTR:
		case errno == syscall.EAGAIN:
			u.readable = false
		default:
			var err error = errUnexpectedEOF
			if errno != 0 {
				err = errno
			}
			return lc.upstreamError(err)
		}
	}
}

// respond starts relaying a response whose head is headLen bytes.
func (lc *lconn) respond(headLen int) bool {
	req, resp := &lc.req, &lc.resp
	if resp.status < 200 {
		return lc.handoff(true)
	}
	noBody := eqFold(req.Method(), "head") || resp.status == 204 || resp.status == 304
	if !noBody && (resp.chunked || resp.contentLength < 0) {
		return lc.handoff(true)
	}
	lc.ur += headLen
	lc.remaining = 0
	if !noBody {
		lc.remaining = resp.contentLength
	}
	lc.reuse = resp.minor == 1 && !resp.connClose
	lc.status = resp.status
	lc.head = appendResponseHead(lc.head[:0], resp, bodyFixed, false, lc.closeAfter, 1)
	have := int(min(int64(lc.uw-lc.ur), lc.remaining))
	if lc.ur+have < lc.uw {
		lc.reuse = false // bytes after the response
	}
	lc.head = append(lc.head, lc.upIn[lc.ur:lc.ur+have]...)
	lc.ur += have
	lc.remaining -= int64(have)
	lc.nDown = int64(have)
	lc.out = lc.head
	lc.state = stBody
	return true
}

// relay writes to the client and reads the rest of the response body.
func (lc *lconn) relay() bool {
	for {
		if len(lc.out) > 0 {
			if errno := flush(lc.fd, &lc.out, &lc.writable); errno != 0 {
				lc.broken(false)
				return false
			}
			if len(lc.out) > 0 {
				lc.after(lc.idle)
				return false
			}
		}
		if lc.remaining == 0 {
			return lc.done()
		}
		u := lc.up
		if !u.readable {
			lc.after(lc.idle)
			return false
		}
		// Read what comes, not only what is left: bytes after the
		// response mean the connection must not serve another.
		buf := lc.upIn
		n, errno := netio.Read(u.fd, buf)
		switch {
		case errno == 0 && n > 0:
			if n < len(buf) && !u.ended {
				u.readable = false
			}
			if int64(n) > lc.remaining {
				n = int(lc.remaining)
				lc.reuse = false
			}
			lc.remaining -= int64(n)
			lc.nDown += int64(n)
			lc.out = buf[:n]
		case errno == syscall.EINTR:
		case errno == syscall.EAGAIN:
			u.readable = false
		default:
			lc.broken(true)
			return false
		}
	}
}

// flush writes *b to fd until it is all out or fd takes no more
// (*writable turns false), and returns the error of a write that failed.
func flush(fd int, b *[]byte, writable *bool) syscall.Errno {
	for len(*b) > 0 && *writable {
		n, errno := netio.Write(fd, *b)
		switch errno {
		case 0:
			*b = (*b)[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			*writable = false
		default:
			return errno
		}
	}
	return 0
}

// after sets the timeout of the wait the connection starts: d from now,
// none if d <= 0.
func (lc *lconn) after(d time.Duration) {
	var at time.Time
	if d > 0 {
		at = lc.loop.Now().Add(d)
	}
	lc.loop.SetDeadline(lc, at)
}

// done ends a request whose answer went out whole.
func (lc *lconn) done() bool {
	now := time.Now()
	lc.stats.Request(lc.status, now.Sub(lc.started).Seconds())
	if u := lc.up; u != nil {
		lc.stats.Bytes(lc.nUp, lc.nDown)
		lc.up = nil
		if lc.reuse && u.readable && !netio.Quiet(u.fd) {
			lc.reuse = false // the last read may have left bytes behind
		}
		if lc.reuse {
			u.pools.put(u, now)
		} else {
			lc.loop.Close(u.slot, u.fd)
		}
	}
	lc.bufs().putBuf(lc.upIn)
	lc.upIn = nil
	lc.last = now
	if lc.closeAfter {
		lc.finish()
		return false
	}
	lc.state = stHead
	return true
}

// bufs are the buffers of the connection's Proxy on the loop.
func (lc *lconn) bufs() *lpools { return lc.p.loopPools(lc.loop) }

// dropBufs gives the connection's buffers back.
func (lc *lconn) dropBufs() {
	lc.bufs().putBuf(lc.in)
	lc.bufs().putBuf(lc.upIn)
	lc.in, lc.upIn = nil, nil
	lc.r, lc.w = 0, 0
}

// answer makes carrier's own answer the response.
func (lc *lconn) answer(stats *metrics.Series, status int, msg string) {
	lc.head = appendLocal(lc.head[:0], status, msg, lc.closeAfter, eqFold(lc.req.Method(), "head"))
	lc.idle = lc.p.streamIdle()
	lc.out = lc.head
	lc.stats, lc.status = stats, status
	lc.remaining = 0
	lc.state = stBody
}

// upstreamError: the upstream failed before any byte of the response
// came. A kept-alive connection that the server closed meanwhile is
// tried once more, on a new connection the goroutine dials, if the
// request has no body (as on the goroutine path).
func (lc *lconn) upstreamError(err error) bool {
	if u := lc.up; u != nil && u.reused && !lc.retried && lc.nUp == 0 && lc.uw == 0 && !isTimeout(err) {
		lc.retried = true
		lc.closeUp()
		lc.away(dialRetry)
		return false
	}
	lc.failed(err)
	return true
}

// failed answers a request whose upstream failed before any byte of the
// response reached the client.
func (lc *lconn) failed(err error) {
	lc.closeUp()
	kind, status, msg := failure(err)
	lc.p.Metrics.UpstreamError(lc.target.Name, kind)
	lc.answer(lc.stats, status, msg+err.Error()+"\n")
}

// broken ends a connection whose response broke off: the upstream's
// (upstream) or the client's side failed.
func (lc *lconn) broken(upstreamSide bool) {
	lc.stats.Request(lc.status, time.Since(lc.started).Seconds())
	if lc.up != nil {
		lc.stats.Bytes(lc.nUp, lc.nDown)
	}
	if upstreamSide {
		lc.p.Metrics.UpstreamError(lc.target.Name, metrics.ErrIO)
	}
	lc.finish()
}

func (lc *lconn) closeUp() {
	if u := lc.up; u != nil {
		lc.loop.Close(u.slot, u.fd)
		lc.up = nil
	}
}

// finish closes the connection and tells its goroutine.
func (lc *lconn) finish() {
	lc.loop.SetDeadline(lc, time.Time{})
	lc.loop.Close(lc.slot, lc.fd)
	lc.closeUp()
	lc.dropBufs()
	lc.state = stDone
	lc.loop.Release()
	lc.wake <- lwake{}
}

// handoff gives the connection to its goroutine; with a request under way
// (mid), the goroutine reads its response.
func (lc *lconn) handoff(mid bool) bool {
	lc.loop.SetDeadline(lc, time.Time{})
	lc.loop.Remove(lc.slot, lc.fd)
	h := &handoff{fd: lc.fd, upFd: -1, pending: append([]byte(nil), lc.in[lc.r:lc.w]...), fresh: lc.requests == 0}
	if mid {
		u := lc.up
		lc.up = nil
		lc.loop.Remove(u.slot, u.fd)
		h.upFd = u.fd
		h.upPending = append([]byte(nil), lc.upIn[lc.ur:lc.uw]...)
		h.req, lc.req = lc.req, message{}
		h.rt, h.target, h.stats = lc.rt, lc.target, lc.stats
		h.started, h.sent, h.nUp = lc.started, lc.sent, lc.nUp
	}
	lc.dropBufs()
	lc.state = stDone
	lc.loop.Release()
	lc.wake <- lwake{h: h}
	return false
}

// resume serves, on the goroutine path, what a handoff left: the
// response of a request under way, if any. false means close.
func (cc *clientConn) resume(ctx context.Context, h *handoff) bool {
	if h.upFd < 0 {
		return true
	}
	p := cc.p
	cc.req, h.req = h.req, cc.req
	cc.started = h.started
	tc, err := netio.Attach(h.upFd)
	if err != nil {
		return cc.upstreamFailed(h.target, h.stats, h.started, err, false)
	}
	uc := upstream.Adopt(tc, h.upPending)
	cc.busy.Store(uc)
	defer cc.busy.Store(nil)
	timeout, idle := p.routeTimes(h.rt)
	uc.DL.Read(uc.TCPConn, h.sent, timeout)
	if err := cc.readResponseHead(uc); err != nil {
		p.Pools.Discard(uc)
		return cc.upstreamFailed(h.target, h.stats, h.started, err, false)
	}
	return cc.relay(ctx, h.target, uc, h.stats, h.started, h.nUp, idle)
}

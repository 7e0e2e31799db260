package httpproxy

import (
	"context"
	"errors"
	"net"
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
	status     int
	nUp, nDown int64
	reqBytes   []byte // the request as it goes upstream
	upOut      []byte // of reqBytes, not yet written

	up        *lup
	upIn      *[]byte // the response's bytes: (*upIn)[ur:uw] not yet taken (made at the first response)
	ur, uw    int
	remaining int64
	reuse     bool
}

// lwake is what the loop asks of the connection's goroutine.
type lwake struct {
	dial bool     // choose and dial for the request in hand
	h    *handoff // serve the connection from now on (nil and !dial: it ended)
}

// handoff is a connection leaving the loop.
type handoff struct {
	fd      int
	pending []byte // the client's bytes not yet taken
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

// lbufSize is the loop's read buffer for a client's request heads; a
// head that does not fit leaves the loop.
const lbufSize = 16 << 10

// serveOnLoop serves c on the loop until it closes (nil) or leaves it;
// the handoff then says what the goroutine path takes on.
func (p *Proxy) serveOnLoop(ctx context.Context, loop *netio.Loop, c *net.TCPConn, current func() *config.Listener) *handoff {
	fd, err := netio.Detach(c)
	if err != nil {
		return &handoff{fd: -1, upFd: -1}
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
	lc.in = make([]byte, lbufSize)
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
	if lc.r < lc.w {
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
			// The body is on its way.
		default:
			return lc.begin(sr.off)
		}
	}
	if lc.w == len(lc.in) {
		if lc.r == 0 {
			return lc.handoff(false) // a head larger than the buffer
		}
		lc.w = copy(lc.in, lc.in[lc.r:lc.w])
		lc.r = 0
	}
	if !lc.readable {
		lc.headDeadline()
		return false
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
		lc.away()
		return false
	}
	return lc.chosen(ch)
}

// away leaves the request to the goroutine, to choose and dial.
func (lc *lconn) away() {
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

// loopDialer is the connector of the goroutine dialling for the loop.
type loopDialer struct {
	ctx    context.Context
	client netip.AddrPort
	tc     *net.TCPConn
	key    lkey
}

func (d *loopDialer) connect(c *config.Cluster) error {
	ep := c.Endpoint()
	if ep == "" {
		return &upstream.DialError{Cluster: c.Name, Kind: upstream.KindNoEndpoints, Err: upstream.ErrNoEndpoints}
	}
	tc, err := upstream.DialEndpoint(d.ctx, c, ep, d.client)
	if err != nil {
		return err
	}
	d.tc, d.key = tc, keyOf(c, ep)
	return nil
}

// dialResult is the goroutine's choice, with the connection it opened.
type dialResult struct {
	ch  choice
	fd  int
	key lkey
}

// dial runs on the connection's goroutine while the connection is stAway.
func (lc *lconn) dial(ctx context.Context) dialResult {
	d := &loopDialer{ctx: ctx, client: lc.client}
	res := dialResult{ch: lc.p.choose(lc.l, &lc.req, d), fd: -1}
	if d.tc == nil {
		return res
	}
	fd, err := netio.Detach(d.tc)
	d.tc.Close()
	if err != nil {
		res.ch = choice{stats: res.ch.stats, status: 502, msg: "carrier: " + err.Error() + "\n"}
		return res
	}
	res.fd, res.key = fd, d.key
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
	if res.fd >= 0 {
		u := &lup{pools: lc.p.loopPools(lc.loop), key: res.key, fd: res.fd, writable: true}
		s, err := lc.loop.Add(res.fd, lc, tagUpstream)
		if err != nil {
			syscall.Close(res.fd)
			res.ch = choice{stats: res.ch.stats, status: 502, msg: "carrier: " + err.Error() + "\n"}
		} else {
			u.slot = s
			lc.up = u
		}
	}
	if lc.chosen(res.ch) {
		lc.run()
	}
}

// send writes the request upstream.
func (lc *lconn) send() bool {
	u := lc.up
	for len(lc.upOut) > 0 {
		if !u.writable {
			lc.after(lc.idle)
			return false
		}
		n, errno := netio.Write(u.fd, lc.upOut)
		switch errno {
		case 0:
			lc.upOut = lc.upOut[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			u.writable = false
		default:
			return lc.upstreamError(errno)
		}
	}
	lc.sent = lc.loop.Now()
	lc.after(lc.timeout)
	if lc.upIn == nil {
		b := make([]byte, lbufSize)
		lc.upIn = &b
	}
	lc.ur, lc.uw = 0, 0
	lc.state = stWait
	return true
}

// readResponseHead reads the response head and starts the response.
func (lc *lconn) readResponseHead() bool {
	u := lc.up
	buf := *lc.upIn
	for {
		if lc.ur < lc.uw {
			sr := &lc.sr
			*sr = sliceReader{b: buf[lc.ur:lc.uw]}
			err := lc.resp.readResponse(sr)
			if err == nil {
				return lc.respond(sr.off)
			}
			if err != errIncomplete {
				var pe *protoError
				if errors.As(err, &pe) {
					pe.Status = 502
				}
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
	lc.head = append(lc.head, (*lc.upIn)[lc.ur:lc.ur+have]...)
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
			if !lc.writable {
				lc.after(lc.idle)
				return false
			}
			n, errno := netio.Write(lc.fd, lc.out)
			switch errno {
			case 0:
				lc.out = lc.out[n:]
			case syscall.EINTR:
			case syscall.EAGAIN:
				lc.writable = false
			default:
				lc.broken(false)
				return false
			}
			continue
		}
		if lc.remaining == 0 {
			return lc.done()
		}
		u := lc.up
		if !u.readable {
			lc.after(lc.idle)
			return false
		}
		buf := *lc.upIn
		want := int(min(int64(len(buf)), lc.remaining))
		n, errno := netio.Read(u.fd, buf[:want])
		switch {
		case errno == 0 && n > 0:
			if n < want && !u.ended {
				u.readable = false
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
		if lc.reuse {
			u.pools.put(u, now)
		} else {
			lc.loop.Close(u.slot, u.fd)
		}
	}
	lc.last = now
	if lc.closeAfter {
		lc.finish()
		return false
	}
	lc.state = stHead
	return true
}

// answer makes carrier's own answer the response.
func (lc *lconn) answer(stats *metrics.Series, status int, msg string) {
	lc.head = appendLocal(lc.head[:0], status, msg, false, eqFold(lc.req.Method(), "head"))
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
		lc.away()
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
	lc.state = stDone
	lc.loop.Release()
	lc.wake <- lwake{}
}

// handoff gives the connection to its goroutine; with a request under way
// (mid), the goroutine reads its response.
func (lc *lconn) handoff(mid bool) bool {
	lc.loop.SetDeadline(lc, time.Time{})
	lc.loop.Remove(lc.slot, lc.fd)
	h := &handoff{fd: lc.fd, upFd: -1, pending: append([]byte(nil), lc.in[lc.r:lc.w]...)}
	if mid {
		u := lc.up
		lc.up = nil
		lc.loop.Remove(u.slot, u.fd)
		h.upFd = u.fd
		h.upPending = append([]byte(nil), (*lc.upIn)[lc.ur:lc.uw]...)
		h.req, lc.req = lc.req, message{}
		h.rt, h.target, h.stats = lc.rt, lc.target, lc.stats
		h.started, h.sent, h.nUp = lc.started, lc.sent, lc.nUp
	}
	lc.state = stDone
	lc.loop.Release()
	lc.wake <- lwake{h: h}
	return false
}

// lkey names a pool of idle upstream connections on the loop.
type lkey struct {
	cluster, endpoint, bridge string
	port                      uint16
}

func keyOf(c *config.Cluster, ep string) lkey {
	k := lkey{cluster: c.Name, endpoint: ep}
	if c.Bridge != nil {
		k.bridge, k.port = c.Bridge.Name, c.Bridge.Port
	}
	return k
}

// lup is an upstream connection on the loop. Idle, it is its own handler:
// any sign of life from the server (bytes, a close) drops it.
type lup struct {
	netio.Deadline
	pools                     *lpools
	key                       lkey
	fd                        int
	slot                      netio.Slot
	readable, writable, ended bool
	reused                    bool
}

func (u *lup) Event(_ int, ev uint32) {
	if ev&netio.EvIn != 0 {
		u.pools.drop(u)
	}
}

// Expire: idle too long.
func (u *lup) Expire(time.Time) { u.pools.drop(u) }

// lpools are the loop's idle upstream connections of one Proxy.
type lpools struct {
	loop        *netio.Loop
	idle        map[lkey][]*lup
	max         int
	idleTimeout time.Duration
}

// loopPools returns p's pools on the loop (made on first use); on the
// loop only.
func (p *Proxy) loopPools(loop *netio.Loop) *lpools {
	if p.lpools == nil {
		max, idle := 64, 60*time.Second
		if p.Pools != nil {
			if p.Pools.MaxIdle > 0 {
				max = p.Pools.MaxIdle
			}
			if p.Pools.IdleTimeout > 0 {
				idle = p.Pools.IdleTimeout
			}
		}
		p.lpools = &lpools{loop: loop, idle: map[lkey][]*lup{}, max: max, idleTimeout: idle}
	}
	return p.lpools
}

func (ps *lpools) take(k lkey) *lup {
	list := ps.idle[k]
	n := len(list)
	if n == 0 {
		return nil
	}
	u := list[n-1]
	list[n-1] = nil
	ps.idle[k] = list[:n-1]
	ps.loop.SetDeadline(u, time.Time{})
	u.reused = true
	u.readable, u.writable, u.ended = false, true, false
	return u
}

func (ps *lpools) put(u *lup, now time.Time) {
	list := ps.idle[u.key]
	if len(list) >= ps.max || u.ended {
		// u.ended: the server's close came with the response, and its
		// event will not come again.
		ps.loop.Close(u.slot, u.fd)
		return
	}
	ps.loop.Bind(u.slot, u, 0)
	ps.idle[u.key] = append(list, u)
	ps.loop.SetDeadline(u, now.Add(ps.idleTimeout))
}

// drop closes an idle connection.
func (ps *lpools) drop(u *lup) {
	list := ps.idle[u.key]
	for i, x := range list {
		if x == u {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			ps.idle[u.key] = list[:last]
			ps.loop.SetDeadline(u, time.Time{})
			ps.loop.Close(u.slot, u.fd)
			return
		}
	}
}

// prune drops the idle connections to endpoints not in keep (all, if keep
// is nil).
func (ps *lpools) prune(keep map[lkey]bool) {
	for k, list := range ps.idle {
		if keep[k] {
			continue
		}
		for _, u := range list {
			ps.loop.SetDeadline(u, time.Time{})
			ps.loop.Close(u.slot, u.fd)
		}
		delete(ps.idle, k)
	}
}

// pruneLoop drops the loop's idle connections to endpoints cfg no longer
// has (all, for a nil cfg).
func (p *Proxy) pruneLoop(cfg *config.Config) {
	loop := netio.Shared()
	if loop == nil {
		return
	}
	var keep map[lkey]bool
	if cfg != nil {
		keep = map[lkey]bool{}
		for _, c := range cfg.Clusters {
			for _, ep := range c.Endpoints {
				keep[keyOf(c, ep)] = true
			}
		}
	}
	loop.Post(func() {
		if p.lpools != nil {
			p.lpools.prune(keep)
		}
	})
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

// Package httpproxy is carrier's HTTP data path: a hand-written HTTP/1.1
// server and client with pooled upstream keep-alive connections, Upgrade
// (WebSocket) tunnels, and HTTP/2 (h2c prior knowledge) served with
// golang.org/x/net/http2.
//
// Each request is routed on the listener's route table at the moment it
// arrives, to its route's cluster (a bridge through stowaway, or a plain
// cluster), to the listener's fallback when no route matches or the bridge
// cannot be reached before any request byte was sent, or answered
// locally (direct responses, errors). Headers pass as they are, except the
// hop-by-hop ones (RFC 9110 7.6.1) and X-Forwarded-For, to which the
// client's address is appended.
//
// A connection whose first bytes do not start as an HTTP request line (a
// client of another protocol, on a port no bridge carries as raw TCP) is
// relayed whole to the listener's fallback, as a TCP listener would.
//
// On Linux, with two Ps or more, HTTP/1.1 connections are served on
// internal/netio's event loop (loop_linux.go), which hands what it does
// not serve itself to the goroutine path here. Either way the HTTP/1.1
// path allocates nothing per request in the steady state: message heads
// are parsed into per-connection buffers, bodies move through the
// connections' buffers, and metric handles hang on the compiled routes.
// On the goroutine path TCP connections are read and written through
// internal/netio, which keeps the runtime's monitor thread from waking up
// around every request.
package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/upstream"
	"gefyra.dev/gefyra/internal/netio"
	"gefyra.dev/gefyra/internal/pipe"
)

var (
	errEOF            = io.EOF
	errUnexpectedEOF  = io.ErrUnexpectedEOF
	errMalformedChunk = errors.New("malformed chunked encoding")
)

// earlyAnswerWait bounds the wait for an answer from an upstream that
// stopped taking the request body.
const earlyAnswerWait = 2 * time.Second

// lingerWait and lingerBytes bound lingerClose.
const (
	lingerWait  = 2 * time.Second
	lingerBytes = 64 << 20
)

// lingerClose ends a connection whose client may still be sending a body
// carrier did not read: it sends its FIN and reads and drops what comes
// for a while before closing. Closing at once, with bytes unread, would
// make the kernel reset the connection, and the client could lose the
// answer written just before.
func lingerClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(lingerWait))
	io.CopyN(io.Discard, c, lingerBytes)
}

// DefaultStreamIdleTimeout bounds a pause in a body when the route sets no
// idle_timeout (Envoy's stream_idle_timeout default).
const DefaultStreamIdleTimeout = 5 * time.Minute

// Proxy serves client connections of HTTP listeners.
type Proxy struct {
	Pools   *upstream.Pools
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// StreamIdleTimeout: see DefaultStreamIdleTimeout; 0 means the default.
	StreamIdleTimeout time.Duration

	h2once  sync.Once
	h2      *http2.Server
	h2conns h2Conns
	// lpools: the event loop's idle upstream connections; the loop's
	// goroutine alone uses them.
	lpools *lpools
}

func (p *Proxy) streamIdle() time.Duration {
	if p.StreamIdleTimeout > 0 {
		return p.StreamIdleTimeout
	}
	return DefaultStreamIdleTimeout
}

const bufSize = 16 << 10

type clientConn struct {
	p        *Proxy
	c        net.Conn
	nc       *netio.Conn // c's reads and writes, for a *net.TCPConn
	br       *bufio.Reader
	bw       *bufio.Writer
	req      message
	resp     message
	clientIP []byte
	client   netip.AddrPort
	scratch  []byte // a message head as it goes out
	ctx      context.Context
	uc       *upstream.Conn // set by connect
	dl       upstream.Deadlines
	// started is when the request in hand arrived; last when the previous
	// response went out (or the connection was accepted). Reading the
	// clock twice per request is enough.
	started, last time.Time
	// linger: the connection ends with a request body not read whole, so
	// it is closed gently (see lingerClose).
	linger bool
	// busy is the upstream connection of the request under way.
	busy *atomic.Pointer[upstream.Conn]
}

var clientConns = sync.Pool{New: func() any {
	return &clientConn{nc: netio.New(nil), br: bufio.NewReaderSize(nil, bufSize), bw: bufio.NewWriterSize(nil, bufSize)}
}}

// ServeConn serves one client connection until it closes, ctx is done, or
// the listener is gone (current returns nil). current returns the
// listener's config as of now; each request uses the one current when it
// arrived.
func (p *Proxy) ServeConn(ctx context.Context, c net.Conn, current func() *config.Listener) {
	var h *handoff
	if tc, ok := c.(*net.TCPConn); ok {
		if loop := netio.Shared(); loop != nil {
			if l := current(); l != nil && l.HTTP != nil && l.HTTP.Codec != config.CodecHTTP2 {
				if h = p.serveOnLoop(ctx, loop, tc, current); h == nil {
					return
				}
				if h.fd >= 0 {
					// The connection left the loop.
					nc, err := netio.Attach(h.fd)
					if err != nil {
						if h.upFd >= 0 {
							syscall.Close(h.upFd)
						}
						return
					}
					c = nc
				}
			}
		}
	}
	p.serve(ctx, c, h, current)
}

// serve is ServeConn on the goroutine path, from the start or from where
// the event loop handed the connection over (h not nil).
func (p *Proxy) serve(ctx context.Context, c net.Conn, h *handoff, current func() *config.Listener) {
	defer c.Close()
	// When ctx ends, the upstream connection of the request under way
	// closes too, or the wait for its answer would go on.
	var busy atomic.Pointer[upstream.Conn]
	stop := context.AfterFunc(ctx, func() {
		c.Close()
		if uc := busy.Load(); uc != nil {
			uc.TCPConn.Close()
		}
	})
	defer stop()

	cc := clientConns.Get().(*clientConn)
	cc.p, cc.c, cc.ctx, cc.busy = p, c, ctx, &busy
	cc.last = time.Now()
	cc.dl.Reset()
	var r io.Reader = c
	if tc, ok := c.(*net.TCPConn); ok {
		cc.nc.Reset(tc)
		r = cc.nc
	}
	cc.bw.Reset(r.(io.Writer))
	if h != nil && len(h.pending) > 0 {
		r = io.MultiReader(bytes.NewReader(h.pending), r)
	}
	cc.br.Reset(r)
	cc.client = netip.AddrPort{}
	cc.linger = false
	cc.clientIP = cc.clientIP[:0]
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		cc.client = ta.AddrPort()
		cc.clientIP = cc.client.Addr().Unmap().AppendTo(cc.clientIP)
	}
	h2 := false
	defer func() {
		if h2 {
			// x/net/http2's reader goroutine may still be in cc.br when
			// ServeConn returns: cc is left to it (and to the GC).
			return
		}
		cc.br.Reset(nil)
		cc.bw.Reset(nil)
		cc.nc.Reset(nil)
		cc.p, cc.c, cc.ctx, cc.uc, cc.busy = nil, nil, nil, nil, nil
		clientConns.Put(cc)
	}()

	l := current()
	if l == nil || l.HTTP == nil {
		if h != nil && h.upFd >= 0 {
			syscall.Close(h.upFd)
		}
		return
	}
	if (h == nil || h.fresh) && l.Fallback != nil {
		// A connection that does not start as HTTP (another protocol on
		// a port no bridge carries as raw TCP) goes to the fallback whole.
		cc.dl.Read(c, cc.last, l.HTTP.IdleTimeout)
		if v, err := cc.sniff(); err != nil {
			return
		} else if v == sniffOther {
			p.passThrough(ctx, cc, l)
			return
		}
	}
	if h != nil && h.upFd >= 0 {
		if !cc.resume(ctx, h) {
			if cc.linger {
				lingerClose(c)
			}
			return
		}
	} else if l.HTTP.Codec != config.CodecHTTP1 {
		cc.dl.Read(c, cc.last, l.HTTP.IdleTimeout)
		pre, err := cc.br.Peek(4)
		if err != nil {
			return
		}
		if string(pre) == "PRI " {
			h2 = true
			p.serveH2(ctx, c, cc.br, current)
			return
		}
		if l.HTTP.Codec == config.CodecHTTP2 {
			return
		}
	}
	for ctx.Err() == nil {
		l = current()
		if l == nil || l.HTTP == nil {
			return
		}
		if !cc.serveOne(ctx, l, current) {
			if cc.linger {
				lingerClose(c)
			}
			return
		}
	}
}

// sniff reads until the connection's first bytes say whether it speaks
// HTTP.
func (cc *clientConn) sniff() (int, error) {
	for n := 1; ; {
		if _, err := cc.br.Peek(n); err != nil {
			return sniffMore, err
		}
		b, _ := cc.br.Peek(cc.br.Buffered())
		if v := sniff(b); v != sniffMore {
			return v, nil
		}
		n = len(b) + 1
	}
}

// passThrough relays a connection that does not speak HTTP to the
// listener's fallback, as a TCP listener would, with the bytes read so
// far. It counts as a fallback of the listener's unrouted requests.
func (p *Proxy) passThrough(ctx context.Context, cc *clientConn, l *config.Listener) {
	stats := l.NoRouteStats
	stats.Fallback(metrics.ReasonNotHTTP)
	uc, err := upstream.Dial(ctx, l.Fallback, cc.client)
	if err != nil {
		var de *upstream.DialError
		if errors.As(err, &de) {
			p.Metrics.UpstreamError(l.Fallback.Name, de.Kind)
		}
		p.logf(slog.LevelWarn, "fallback connect failed", "cluster", l.Fallback.Name, "err", err)
		return
	}
	stats.Connection()
	pending, _ := cc.br.Peek(cc.br.Buffered())
	var up, down int64
	if cc.nc.TCPConn != nil {
		up, down, err = netio.Join(ctx, cc.nc, netio.New(uc), pending, nil)
	} else {
		up, down, err = pipe.Options{APending: pending}.Join(ctx, cc.c, uc)
	}
	stats.Bytes(up, down)
	if err != nil {
		p.Metrics.UpstreamError(l.Fallback.Name, metrics.ErrIO)
	}
}

// serveOne reads and answers one request; false means close. l's
// timeouts apply while waiting for the request; the request is routed on
// the config current once it has arrived (a kept-alive connection may wait
// long, and the config change meanwhile).
func (cc *clientConn) serveOne(ctx context.Context, l *config.Listener, current func() *config.Listener) bool {
	h := l.HTTP
	if h.RequestHeadersTimeout > 0 || cc.br.Buffered() == 0 {
		cc.dl.Read(cc.c, cc.last, h.IdleTimeout)
		if _, err := cc.br.Peek(1); err != nil {
			return false
		}
	}
	started := time.Now()
	cc.started = started
	if h.RequestHeadersTimeout > 0 {
		cc.dl.Read(cc.c, started, h.RequestHeadersTimeout)
	}
	req := &cc.req
	if err := req.readRequest(cc.br); err != nil {
		var pe *protoError
		switch {
		case errors.As(err, &pe):
			cc.local(l.NoRouteStats, started, pe.Status, "carrier: "+pe.Msg+"\n", true)
		case errors.Is(err, errHeadTooLarge), errors.Is(err, errTooMany):
			cc.local(l.NoRouteStats, started, http.StatusRequestHeaderFieldsTooLarge, "carrier: request head too large\n", true)
		}
		return false
	}
	if eqFold(req.Method(), "connect") {
		return cc.local(l.NoRouteStats, started, http.StatusMethodNotAllowed, "carrier: CONNECT is not supported\n", true)
	}
	if now := current(); now != nil && now.HTTP != nil {
		l = now
	}

	p := cc.p
	ch := p.choose(l, req, cc)
	if ch.target == nil {
		return cc.local(ch.stats, started, ch.status, ch.msg, false)
	}
	uc := cc.uc
	cc.uc = nil
	return cc.forward(ctx, l, ch.rt, ch.target, uc, ch.stats, started)
}

// connector opens an upstream for a cluster, keeping it for the caller.
// The event loop's connector only takes idle connections, and says
// errNeedDial when there is none: choose then leaves the request to a
// goroutine, which chooses again and may dial.
type connector interface {
	connect(*config.Cluster) error
}

var errNeedDial = errors.New("no idle upstream connection")

func (cc *clientConn) connect(c *config.Cluster) error {
	uc, err := cc.p.Pools.GetAt(cc.ctx, c, cc.client, false, cc.req.chunked || cc.req.contentLength > 0, cc.started)
	cc.uc = uc
	return err
}

// choice is where a request goes: a cluster whose connection the
// connector opened, or (target nil) a local answer.
type choice struct {
	rt     *config.Route
	target *config.Cluster
	stats  *metrics.Series
	status int
	msg    string
	// dial: the connector said errNeedDial; nothing was decided.
	dial bool
}

// choose routes req; when its bridge cannot be reached it falls back.
func (p *Proxy) choose(l *config.Listener, req config.Request, conn connector) choice {
	h := l.HTTP
	var rt *config.Route
	reason := ""
	if h.Routes == nil {
		reason = metrics.ReasonRoutesPending
	} else if rt = h.Routes.Route(req); rt == nil {
		reason = metrics.ReasonNoRoute
	}
	if rt != nil && rt.Direct != nil {
		return choice{rt: rt, stats: rt.Stats, status: rt.Direct.Status, msg: string(rt.Direct.Body)}
	}
	var target *config.Cluster
	var stats *metrics.Series
	fbStats := l.NoRouteStats
	bridge := ""
	if rt != nil {
		fbStats = rt.FallbackStats
		if rt.Cluster == nil {
			reason = metrics.ReasonClusterAbsent
		} else {
			target, stats = rt.Cluster, rt.Stats
			bridge = target.BridgeName()
		}
	}
	if target != nil {
		err := conn.connect(target)
		if err == nil {
			return choice{rt: rt, target: target, stats: stats}
		}
		if err == errNeedDial {
			return choice{dial: true}
		}
		var de *upstream.DialError
		kind := upstream.KindConnect
		if errors.As(err, &de) {
			kind = de.Kind
		}
		p.Metrics.UpstreamError(target.Name, kind)
		if target.Bridge == nil || l.Fallback == nil || l.Fallback == target {
			p.logf(slog.LevelWarn, "upstream connect failed", "cluster", target.Name, "err", err)
			return choice{rt: rt, stats: stats, status: http.StatusServiceUnavailable, msg: "carrier: upstream connect error: " + err.Error() + "\n"}
		}
		reason = fallbackReason(kind)
		p.logf(slog.LevelDebug, "bridge unreachable, using the fallback", "bridge", bridge, "err", err)
	}
	if l.Fallback == nil {
		msg := "carrier: no route matched and no fallback is configured\n"
		if reason != metrics.ReasonNoRoute {
			msg = "carrier: no fallback is configured (" + reason + ")\n"
		}
		return choice{rt: rt, stats: fbStats, status: http.StatusServiceUnavailable, msg: msg}
	}
	err := conn.connect(l.Fallback)
	if err == errNeedDial {
		return choice{dial: true}
	}
	primary := l.NoRouteStats
	if rt != nil {
		primary = rt.Stats
	}
	primary.Fallback(reason)
	if err != nil {
		var de *upstream.DialError
		if errors.As(err, &de) {
			p.Metrics.UpstreamError(l.Fallback.Name, de.Kind)
		}
		return choice{rt: rt, stats: fbStats, status: http.StatusServiceUnavailable, msg: "carrier: fallback connect error: " + err.Error() + "\n"}
	}
	return choice{rt: rt, target: l.Fallback, stats: fbStats}
}

// fallbackReason is the fallback metric's reason for a bridge that could
// not be reached for kind.
func fallbackReason(kind string) string {
	switch kind {
	case upstream.KindRefused:
		return metrics.ReasonBridgeRefused
	case upstream.KindNoEndpoints:
		return metrics.ReasonNoEndpoints
	}
	return metrics.ReasonConnectFailed
}

func (p *Proxy) logf(level slog.Level, msg string, args ...any) {
	if p.Log != nil {
		p.Log.Log(context.Background(), level, msg, args...)
	}
}

// local answers a request itself. The request body, if any, is read and
// dropped when small; otherwise the connection closes after the answer.
func (cc *clientConn) local(stats *metrics.Series, started time.Time, status int, body string, closeConn bool) bool {
	req := &cc.req
	if !closeConn && !req.bodyRead && (req.chunked || req.contentLength > 0) {
		if req.chunked || req.contentLength > 1<<20 || req.expect100 {
			closeConn = true
		} else {
			cc.dl.Read(cc.c, time.Now(), 10*time.Second)
			if _, err := cc.br.Discard(int(req.contentLength)); err != nil {
				return false
			}
		}
	}
	if req.minor == 0 || req.connClose {
		closeConn = true
	}
	if closeConn && !req.bodyRead && (req.chunked || req.contentLength > 0) {
		cc.linger = true
	}
	w := cc.bw
	cc.dl.Write(cc.c, time.Now(), cc.p.streamIdle())
	cc.scratch = appendLocal(cc.scratch[:0], status, body, closeConn, eqFold(req.Method(), "head"))
	w.Write(cc.scratch)
	err := w.Flush()
	cc.last = time.Now()
	stats.Request(status, cc.last.Sub(started).Seconds())
	return err == nil && !closeConn
}

// appendLocal appends carrier's own answer: status, a plain-text body
// (left out for a HEAD request), and Connection: close if closeConn.
func appendLocal(b []byte, status int, body string, closeConn, head bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	if closeConn {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if !head {
		b = append(b, body...)
	}
	return b
}

type bodyKind int

const (
	bodyNone bodyKind = iota
	bodyFixed
	bodyChunked
	bodyUntilClose
)

// forward sends the request on uc and relays the response.
func (cc *clientConn) forward(ctx context.Context, l *config.Listener, rt *config.Route, target *config.Cluster, uc *upstream.Conn, stats *metrics.Series, started time.Time) bool {
	p := cc.p
	req := &cc.req
	timeout, idle := p.routeTimes(rt)
	client := endpoint{cc.c, &cc.dl, idle}
	hasBody := req.chunked || req.contentLength > 0
	upgrade := req.isUpgrade()
	var up int64
	defer cc.busy.Store(nil)
	for attempt := 0; ; attempt++ {
		cc.busy.Store(uc)
		upside := endpoint{uc.TCPConn, &uc.DL, idle}
		if req.expect100 && hasBody && attempt == 0 {
			cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			cc.dl.Write(cc.c, time.Now(), idle)
			if err := cc.bw.Flush(); err != nil {
				p.Pools.Discard(uc)
				return false
			}
		}
		cc.writeRequestHead(uc.W, upgrade)
		var err error
		switch {
		case req.chunked:
			up, err = copyChunked(uc.W, cc.br, true, upside, client)
		case req.contentLength > 0:
			up, err = copyN(uc.W, cc.br, req.contentLength, upside, client)
		}
		if hasBody {
			req.bodyRead = err == nil
		}
		if err == nil {
			uc.DL.Write(uc.TCPConn, time.Now(), idle)
			if ferr := uc.W.Flush(); ferr != nil {
				err = writeError{ferr}
			}
		}
		if isReadError(err) {
			// The client went away or sent a broken body.
			p.Pools.Discard(uc)
			stats.Request(499, time.Since(started).Seconds())
			return false
		}
		if err == nil {
			// The route timeout runs from the end of the request;
			// after a long upload, read the clock again.
			now := started
			if up > 1<<20 {
				now = time.Now()
			}
			uc.DL.Read(uc.TCPConn, now, timeout)
			err = cc.readResponseHead(uc)
		} else if hasBody && isWriteError(err) {
			// The upstream stopped taking the body: it may have answered
			// already (401, 413) and closed. That answer is the client's.
			uc.DL.Read(uc.TCPConn, time.Now(), earlyAnswerWait)
			if herr := cc.readResponseHead(uc); herr == nil {
				err = nil
			}
		}
		if err == nil {
			break
		}
		// Nothing of the response has reached the client yet.
		p.Pools.Discard(uc)
		if uc.Reused && !hasBody && attempt == 0 && !isTimeout(err) && uc.R.Buffered() == 0 {
			// A kept-alive connection the server closed meanwhile.
			var nuc *upstream.Conn
			var derr error
			nuc, target, stats, derr = p.redial(ctx, l, rt, target, stats, cc.client)
			if derr == nil {
				uc = nuc
				continue
			}
			err = derr
		}
		return cc.upstreamFailed(target, stats, started, err, hasBody && !req.bodyRead)
	}
	return cc.relay(ctx, target, uc, stats, started, up, idle)
}

// redial opens a new connection for a request whose kept-alive upstream
// connection turned out closed: to target again or, for a bridge that
// cannot be reached now (stowaway closes the connections of a developer
// that vanished), to the listener's fallback, as a new request would go.
// It returns where the request goes and the series that counts it.
func (p *Proxy) redial(ctx context.Context, l *config.Listener, rt *config.Route, target *config.Cluster, stats *metrics.Series, client netip.AddrPort) (*upstream.Conn, *config.Cluster, *metrics.Series, error) {
	uc, err := p.Pools.Get(ctx, target, client, true, false)
	var de *upstream.DialError
	if err != nil && target.Bridge != nil && l.Fallback != nil && l.Fallback != target && errors.As(err, &de) {
		p.Metrics.UpstreamError(target.Name, de.Kind)
		p.logf(slog.LevelDebug, "bridge unreachable, using the fallback", "bridge", target.BridgeName(), "err", err)
		stats.Fallback(fallbackReason(de.Kind))
		stats = l.NoRouteStats
		if rt != nil {
			stats = rt.FallbackStats
		}
		target = l.Fallback
		uc, err = p.Pools.Get(ctx, target, client, true, false)
	}
	return uc, target, stats, err
}

// upstreamFailed answers a request whose upstream failed before any byte
// of its response reached the client. If the body did not make it out
// whole (bodyLeft), the client's stream is out of step: the connection
// closes after the answer.
func (cc *clientConn) upstreamFailed(target *config.Cluster, stats *metrics.Series, started time.Time, err error, bodyLeft bool) bool {
	kind, status, msg := failure(err)
	cc.p.Metrics.UpstreamError(target.Name, kind)
	return cc.local(stats, started, status, msg+err.Error()+"\n", bodyLeft)
}

// failure is what an upstream's failure before its response counts as:
// the metric's kind, the client's status, the start of the message.
func failure(err error) (kind string, status int, msg string) {
	var pe *protoError
	switch {
	case isTimeout(err):
		return metrics.ErrTimeout, http.StatusGatewayTimeout, "carrier: upstream timed out: "
	case errors.As(err, &pe), errors.Is(err, errHeadTooLarge), errors.Is(err, errTooMany):
		return metrics.ErrProtocol, http.StatusBadGateway, "carrier: upstream failed before responding: "
	}
	return metrics.ErrIO, http.StatusBadGateway, "carrier: upstream failed before responding: "
}

// routeTimes are the route's timeout (for the response head) and its idle
// timeout (for a pause in a body).
func (p *Proxy) routeTimes(rt *config.Route) (timeout, idle time.Duration) {
	timeout, idle = config.DefaultRouteTimeout, p.streamIdle()
	if rt != nil {
		timeout = rt.Timeout
		if rt.IdleTimeout > 0 {
			idle = rt.IdleTimeout
		}
	}
	return timeout, idle
}

// relay relays the response whose head cc.resp holds from uc, up being
// the request body bytes sent.
func (cc *clientConn) relay(ctx context.Context, target *config.Cluster, uc *upstream.Conn, stats *metrics.Series, started time.Time, up int64, idle time.Duration) bool {
	p := cc.p
	req, resp := &cc.req, &cc.resp
	client := endpoint{cc.c, &cc.dl, idle}
	hasBody := req.chunked || req.contentLength > 0
	upgrade := req.isUpgrade()
	noBody := eqFold(req.Method(), "head") || resp.status < 200 || resp.status == 204 || resp.status == 304
	kind := bodyNone
	switch {
	case noBody:
	case resp.chunked:
		kind = bodyChunked
	case resp.contentLength >= 0:
		kind = bodyFixed
	default:
		kind = bodyUntilClose
	}
	switching := upgrade && resp.status == http.StatusSwitchingProtocols
	// A request body not sent whole (the upstream answered early) leaves
	// the client's stream out of step and the upstream's too.
	bodyLeft := hasBody && !req.bodyRead
	closeClient := req.connClose || req.minor == 0 || kind == bodyUntilClose || bodyLeft
	reuse := resp.minor == 1 && !resp.connClose && kind != bodyUntilClose && !upgrade && !bodyLeft
	cc.linger = bodyLeft
	cc.writeResponseHead(kind, switching, closeClient)

	if switching {
		cc.dl.Write(cc.c, time.Now(), idle)
		if err := cc.bw.Flush(); err != nil {
			p.Pools.Discard(uc)
			return false
		}
		stats.Request(resp.status, time.Since(started).Seconds())
		cpend, _ := cc.br.Peek(cc.br.Buffered())
		upend, _ := uc.R.Peek(uc.R.Buffered())
		// The connection now belongs to the tunnel; stop watching ctx here
		// (Join does) and never give it back to a pool.
		var toUp, toClient int64
		var err error
		if cc.nc.TCPConn != nil {
			toUp, toClient, err = netio.Join(ctx, cc.nc, uc.IO, cpend, upend)
		} else {
			toUp, toClient, err = pipe.Options{APending: cpend, BPending: upend}.Join(ctx, cc.c, uc.TCPConn)
		}
		stats.Bytes(up+toUp, toClient)
		if err != nil {
			p.logf(slog.LevelDebug, "upgraded connection ended", "err", err)
		}
		return false
	}

	var down int64
	var err error
	upside := endpoint{uc.TCPConn, &uc.DL, idle}
	switch kind {
	case bodyFixed:
		down, err = copyN(cc.bw, uc.R, resp.contentLength, client, upside)
	case bodyChunked:
		down, err = copyChunked(cc.bw, uc.R, req.minor == 1, client, upside)
	case bodyUntilClose:
		down, err = copyAll(cc.bw, uc.R, client, upside)
	}
	if err == nil {
		cc.dl.Write(cc.c, time.Now(), idle)
		if ferr := cc.bw.Flush(); ferr != nil {
			err = writeError{ferr}
		}
	}
	cc.last = time.Now()
	stats.Request(resp.status, cc.last.Sub(started).Seconds())
	stats.Bytes(up, down)
	if err != nil {
		if isReadError(err) {
			p.Metrics.UpstreamError(target.Name, metrics.ErrIO)
		}
		p.Pools.Discard(uc)
		return false
	}
	if reuse {
		p.Pools.PutAt(uc, cc.last)
	} else {
		p.Pools.Discard(uc)
	}
	return !closeClient
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// readResponseHead reads the response head, relaying interim (1xx)
// responses other than 101 to the client.
func (cc *clientConn) readResponseHead(uc *upstream.Conn) error {
	resp := &cc.resp
	for {
		if err := resp.readResponse(uc.R); err != nil {
			if errors.Is(err, io.EOF) {
				return errUnexpectedEOF
			}
			return err
		}
		if resp.status >= 200 {
			return nil
		}
		if resp.status == http.StatusSwitchingProtocols {
			if !cc.req.isUpgrade() {
				return bad(502, "upstream switched protocols unasked")
			}
			return nil
		}
		if resp.status == http.StatusContinue && cc.req.expect100 {
			continue // the client already had its 100 Continue from carrier
		}
		if cc.req.minor == 1 {
			cc.writeResponseHead(bodyNone, false, false)
			if err := cc.bw.Flush(); err != nil {
				return err
			}
		}
	}
}

func (cc *clientConn) writeRequestHead(w *bufio.Writer, upgrade bool) {
	cc.scratch = appendRequestHead(cc.scratch[:0], &cc.req, cc.clientIP, upgrade, cc.c.LocalAddr())
	w.Write(cc.scratch)
}

// appendRequestHead appends the head of req as carrier forwards it:
// hop-by-hop fields dropped, X-Forwarded-For with clientIP appended, a
// Host naming local (the address the client connected to) if it had none.
func appendRequestHead(b []byte, req *message, clientIP []byte, upgrade bool, local net.Addr) []byte {
	b = append(b, req.b(req.method)...)
	b = append(b, ' ')
	b = append(b, req.b(req.target)...)
	b = append(b, " HTTP/1.1\r\n"...)
	if !req.hasHost {
		// HTTP/1.1 needs a Host; an HTTP/1.0 client may not have sent one:
		// name the address it connected to.
		b = append(b, "Host: "...)
		b = append(b, local.String()...)
		b = append(b, "\r\n"...)
	}
	for _, f := range req.fields {
		name := req.b(f.name)
		if req.hopByHop(name, true) {
			continue
		}
		b = append(b, name...)
		b = append(b, ": "...)
		b = append(b, req.b(f.value)...)
		b = append(b, "\r\n"...)
	}
	if req.chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if req.teTrailers {
		b = append(b, "TE: trailers\r\n"...)
	}
	if upgrade {
		b = append(b, "Connection: Upgrade\r\nUpgrade: "...)
		b = append(b, req.b(req.upgrade)...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Forwarded-For: "...)
	for _, x := range req.xff {
		b = append(b, req.b(x)...)
		b = append(b, ", "...)
	}
	b = append(b, clientIP...)
	return append(b, "\r\n\r\n"...)
}

func (cc *clientConn) writeResponseHead(kind bodyKind, switching, closeClient bool) {
	cc.scratch = appendResponseHead(cc.scratch[:0], &cc.resp, kind, switching, closeClient, cc.req.minor)
	cc.bw.Write(cc.scratch)
}

// appendResponseHead appends the head of resp as carrier relays it to a
// client of HTTP/1.reqMinor.
func appendResponseHead(b []byte, resp *message, kind bodyKind, switching, closeClient bool, reqMinor int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(resp.status), 10)
	b = append(b, ' ')
	b = append(b, resp.b(resp.reason)...)
	b = append(b, "\r\n"...)
	for _, f := range resp.fields {
		name := resp.b(f.name)
		if resp.hopByHop(name, false) {
			continue
		}
		if kind == bodyChunked && eqFold(name, "content-length") {
			continue
		}
		b = append(b, name...)
		b = append(b, ": "...)
		b = append(b, resp.b(f.value)...)
		b = append(b, "\r\n"...)
	}
	switch {
	case switching:
		b = append(b, "Connection: Upgrade\r\nUpgrade: "...)
		b = append(b, resp.b(resp.upgrade)...)
		b = append(b, "\r\n"...)
	case closeClient:
		b = append(b, "Connection: close\r\n"...)
	}
	if kind == bodyChunked && reqMinor == 1 {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	return append(b, "\r\n"...)
}

package httpproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/upstream"
)

// HTTP/2 clients (h2c with prior knowledge) are served by x/net/http2.
// Their requests go upstream over HTTP/2 when the cluster says so (gRPC),
// and over carrier's own HTTP/1.1 client otherwise. HTTP/1.1 trailers are
// not carried over to HTTP/2 responses.

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (p *Proxy) serveH2(ctx context.Context, c net.Conn, br *bufio.Reader, current func() *config.Listener) {
	p.h2once.Do(func() {
		p.h2 = &http2.Server{IdleTimeout: 5 * time.Minute}
	})
	c.SetDeadline(time.Time{})
	h := &h2Handler{p: p, current: current}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		h.client = ta.AddrPort()
		h.clientIP = h.client.Addr().Unmap().String()
	}
	p.h2.ServeConn(&bufConn{Conn: c, r: br}, &http2.ServeConnOpts{Context: ctx, Handler: h})
}

type h2Handler struct {
	p        *Proxy
	current  func() *config.Listener
	client   netip.AddrPort
	clientIP string
}

// h2Request makes an *http.Request a config.Request.
type h2Request struct {
	r    *http.Request
	join []byte
}

func (q *h2Request) Method() []byte { return []byte(q.r.Method) }
func (q *h2Request) Host() []byte   { return []byte(q.r.Host) }
func (q *h2Request) Path() []byte   { return []byte(q.r.RequestURI) }
func (q *h2Request) Header(name string) ([]byte, bool) {
	vv := q.r.Header.Values(name)
	switch len(vv) {
	case 0:
		return nil, false
	case 1:
		return []byte(vv[0]), true
	}
	q.join = append(q.join[:0], strings.Join(vv, ",")...)
	return q.join, true
}

type h2conn struct {
	h   *h2Handler
	ctx context.Context
	uc  *upstream.Conn
	h2c *http2.ClientConn
	key string
}

func (c *h2conn) connect(cl *config.Cluster) error {
	c.uc, c.h2c = nil, nil
	if cl.Protocol == config.ProtocolHTTP1 {
		uc, err := c.h.p.Pools.Get(c.ctx, cl, c.h.client, false, true)
		c.uc = uc
		return err
	}
	cc, key, err := c.h.p.h2ClientConn(c.ctx, cl, c.h.client)
	c.h2c, c.key = cc, key
	return err
}

// Close closes the upstream HTTP/2 connections (in-flight streams on them
// fail) and the event loop's idle HTTP/1.1 ones.
func (p *Proxy) Close() {
	p.pruneLoop(nil)
	pc := &p.h2conns
	pc.mu.Lock()
	conns := pc.conns
	pc.conns = nil
	pc.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Prune closes the upstream HTTP/2 connections, and the event loop's idle
// HTTP/1.1 ones, to endpoints cfg no longer has.
func (p *Proxy) Prune(cfg *config.Config) {
	p.pruneLoop(cfg)
	keep := map[string]bool{}
	for _, c := range cfg.Clusters {
		for _, ep := range c.Endpoints {
			keep[h2Key(c, ep)] = true
		}
	}
	pc := &p.h2conns
	pc.mu.Lock()
	var drop []*http2.ClientConn
	for k, c := range pc.conns {
		if !keep[k] {
			drop = append(drop, c)
			delete(pc.conns, k)
		}
	}
	pc.mu.Unlock()
	for _, c := range drop {
		go c.Shutdown(context.Background()) // lets streams in flight finish
	}
}

func h2Key(c *config.Cluster, ep string) string {
	return c.Name + "|" + ep + "|" + c.BridgeName()
}

type h2Conns struct {
	mu    sync.Mutex // guards conns
	conns map[string]*http2.ClientConn
	t     *http2.Transport
}

// h2ClientConn returns an HTTP/2 connection to an endpoint of c that can
// take another request, dialling one if needed.
func (p *Proxy) h2ClientConn(ctx context.Context, c *config.Cluster, client netip.AddrPort) (*http2.ClientConn, string, error) {
	ep := c.Endpoint()
	if ep == "" {
		return nil, "", &upstream.DialError{Cluster: c.Name, Kind: upstream.KindNoEndpoints, Err: upstream.ErrNoEndpoints}
	}
	key := h2Key(c, ep)
	h2conns := &p.h2conns
	h2conns.mu.Lock()
	if h2conns.conns == nil {
		h2conns.conns = map[string]*http2.ClientConn{}
		h2conns.t = &http2.Transport{AllowHTTP: true, IdleConnTimeout: time.Minute}
	}
	cc := h2conns.conns[key]
	h2conns.mu.Unlock()
	if cc != nil && cc.CanTakeNewRequest() {
		return cc, key, nil
	}
	tc, err := upstream.DialEndpoint(ctx, c, ep, client)
	if err != nil {
		return nil, key, err
	}
	cc, err = h2conns.t.NewClientConn(tc)
	if err != nil {
		tc.Close()
		return nil, key, &upstream.DialError{Cluster: c.Name, Endpoint: ep, Kind: upstream.KindProtocol, Err: err}
	}
	h2conns.mu.Lock()
	h2conns.conns[key] = cc
	h2conns.mu.Unlock()
	return cc, key, nil
}

func (h *h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	l := h.current()
	if l == nil || l.HTTP == nil {
		http.Error(w, "carrier: listener is gone", http.StatusServiceUnavailable)
		return
	}
	conn := &h2conn{h: h, ctx: r.Context()}
	ch := h.p.choose(l, &h2Request{r: r}, conn)
	if ch.target == nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(ch.status)
		io.WriteString(w, ch.msg)
		ch.stats.Request(ch.status, time.Since(started).Seconds())
		return
	}
	timeout, idle := config.DefaultRouteTimeout, h.p.streamIdle()
	if ch.rt != nil {
		timeout = ch.rt.Timeout
		if ch.rt.IdleTimeout > 0 {
			idle = ch.rt.IdleTimeout
		}
	}
	if conn.h2c != nil {
		h.forwardH2(w, r, conn, ch, timeout, started)
		return
	}
	h.forwardH1(w, r, conn.uc, ch, timeout, idle, started)
}

var h2HopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

func (h *h2Handler) forwardH2(w http.ResponseWriter, r *http.Request, conn *h2conn, ch choice, timeout time.Duration, started time.Time) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var timer *time.Timer
	if timeout > 0 {
		// The route timeout covers the time to the response headers only.
		timer = time.AfterFunc(timeout, cancel)
	}
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = "http", r.Host
	for _, k := range h2HopByHop {
		out.Header.Del(k)
	}
	if te := out.Header.Get("Te"); te != "" && te != "trailers" {
		out.Header.Del("Te")
	}
	prior := strings.Join(out.Header.Values("X-Forwarded-For"), ", ")
	if prior != "" {
		prior += ", "
	}
	out.Header.Set("X-Forwarded-For", prior+h.clientIP)
	resp, err := conn.h2c.RoundTrip(out)
	if timer != nil && !timer.Stop() && err == nil {
		resp.Body.Close()
		err = context.DeadlineExceeded
	}
	if err != nil {
		h.p.Metrics.UpstreamError(ch.target.Name, metrics.ErrIO)
		pc := &h.p.h2conns
		pc.mu.Lock()
		if pc.conns[conn.key] == conn.h2c {
			delete(pc.conns, conn.key)
		}
		pc.mu.Unlock()
		http.Error(w, "carrier: upstream failed: "+err.Error(), http.StatusBadGateway)
		ch.stats.Request(http.StatusBadGateway, time.Since(started).Seconds())
		return
	}
	defer resp.Body.Close()
	for k, vv := range resp.Header {
		w.Header()[k] = vv
	}
	for k := range resp.Trailer {
		w.Header().Add("Trailer", k)
	}
	w.WriteHeader(resp.StatusCode)
	// The headers go out now, not with the first piece of the body: in a
	// full-duplex stream (gRPC, an echo) the client may wait for them
	// before it sends what the body answers.
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	fw := &flushWriter{w: w}
	down, _ := io.Copy(fw, resp.Body)
	for k, vv := range resp.Trailer {
		w.Header()[http.TrailerPrefix+k] = vv
	}
	ch.stats.Request(resp.StatusCode, time.Since(started).Seconds())
	ch.stats.Bytes(0, down)
}

type flushWriter struct{ w http.ResponseWriter }

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

func (h *h2Handler) forwardH1(w http.ResponseWriter, r *http.Request, uc *upstream.Conn, ch choice, timeout, idle time.Duration, started time.Time) {
	p := h.p
	bw := uc.W
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(r.RequestURI)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	var xff []string
	for k, vv := range r.Header {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Host", "Content-Length":
			continue
		case "Te":
			if len(vv) == 1 && vv[0] == "trailers" {
				bw.WriteString("TE: trailers\r\n")
			}
			continue
		case "X-Forwarded-For":
			xff = vv
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	chunked := false
	switch {
	case r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
		bw.WriteString("\r\n")
	case r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody:
		chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("X-Forwarded-For: ")
	for _, v := range xff {
		bw.WriteString(v)
		bw.WriteString(", ")
	}
	bw.WriteString(h.clientIP)
	bw.WriteString("\r\n\r\n")

	fail := func(status int, kind string, err error) {
		p.Pools.Discard(uc)
		p.Metrics.UpstreamError(ch.target.Name, kind)
		http.Error(w, "carrier: upstream failed: "+err.Error(), status)
		ch.stats.Request(status, time.Since(started).Seconds())
	}
	uc.DL.Write(uc.TCPConn, time.Now(), idle)
	var up int64
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		var dst io.Writer = bw
		var cw io.WriteCloser
		if chunked {
			cw = httputil.NewChunkedWriter(bw)
			dst = cw
		}
		n, err := io.Copy(dst, r.Body)
		up = n
		if err == nil && cw != nil {
			if err = cw.Close(); err == nil {
				_, err = bw.WriteString("\r\n")
			}
		}
		if err != nil {
			fail(http.StatusBadGateway, metrics.ErrIO, err)
			return
		}
	}
	if err := bw.Flush(); err != nil {
		fail(http.StatusBadGateway, metrics.ErrIO, err)
		return
	}
	uc.DL.Read(uc.TCPConn, time.Now(), timeout)
	var resp message
	for {
		if err := resp.readResponse(uc.R); err != nil {
			switch {
			case isTimeout(err):
				fail(http.StatusGatewayTimeout, metrics.ErrTimeout, err)
			default:
				fail(http.StatusBadGateway, metrics.ErrProtocol, err)
			}
			return
		}
		if resp.status >= 200 {
			break
		}
	}
	kind := bodyNone
	switch {
	case r.Method == http.MethodHead || resp.status == 204 || resp.status == 304:
	case resp.chunked:
		kind = bodyChunked
	case resp.contentLength >= 0:
		kind = bodyFixed
	default:
		kind = bodyUntilClose
	}
	hdr := w.Header()
	for _, f := range resp.fields {
		name := resp.b(f.name)
		if resp.hopByHop(name, false) || (kind == bodyChunked && eqFold(name, "content-length")) {
			continue
		}
		hdr.Add(string(name), string(resp.b(f.value)))
	}
	w.WriteHeader(resp.status)
	fw := bufio.NewWriterSize(&flushWriter{w: w}, bufSize)
	down := endpoint{}
	upside := endpoint{uc.TCPConn, &uc.DL, idle}
	var n int64
	var err error
	switch kind {
	case bodyFixed:
		n, err = copyN(fw, uc.R, resp.contentLength, down, upside)
	case bodyChunked:
		n, err = copyChunked(fw, uc.R, false, down, upside)
	case bodyUntilClose:
		n, err = copyAll(fw, uc.R, down, upside)
	}
	if err == nil {
		err = fw.Flush()
	}
	ch.stats.Request(resp.status, time.Since(started).Seconds())
	ch.stats.Bytes(up, n)
	if err != nil {
		if isReadError(err) {
			p.Metrics.UpstreamError(ch.target.Name, metrics.ErrIO)
		}
		p.Pools.Discard(uc)
		panic(http.ErrAbortHandler) // resets the stream: the client must not take a cut body as whole
	}
	if resp.minor == 1 && !resp.connClose && kind != bodyUntilClose {
		p.Pools.Put(uc)
	} else {
		p.Pools.Discard(uc)
	}
}

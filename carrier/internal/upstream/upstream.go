// Package upstream opens carrier's connections to clusters and keeps idle
// HTTP/1.1 keep-alive connections for reuse.
//
// A connection to a bridge cluster goes to stowaway and starts with the
// internal/wire preamble; it counts as open only once stowaway has
// accepted it. Every failure up to that point is a *DialError: nothing of
// the client's request has been sent yet, so the caller may still use the
// fallback.
package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/internal/netio"
	"gefyra.dev/gefyra/internal/wire"
)

// Kinds of DialError.
const (
	KindNoEndpoints = "no_endpoints"
	KindConnect     = "connect"
	KindRefused     = "refused"
	KindTimeout     = "timeout"
	KindProtocol    = "protocol"
)

// DialError is a failure to open an upstream connection.
type DialError struct {
	Cluster  string
	Endpoint string
	Kind     string
	Err      error
}

func (e *DialError) Error() string {
	if e.Endpoint == "" {
		return fmt.Sprintf("cluster %s: %v", e.Cluster, e.Err)
	}
	return fmt.Sprintf("cluster %s endpoint %s: %v", e.Cluster, e.Endpoint, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// ErrNoEndpoints is wrapped by DialErrors of clusters without endpoints.
var ErrNoEndpoints = errors.New("no endpoints")

// Dial opens a connection to one endpoint of c; for a bridge cluster it
// sends the preamble and waits for stowaway's acceptance. client is the
// original client address, passed on to stowaway (may be zero).
func Dial(ctx context.Context, c *config.Cluster, client netip.AddrPort) (*net.TCPConn, error) {
	ep := c.Endpoint()
	if ep == "" {
		return nil, &DialError{Cluster: c.Name, Kind: KindNoEndpoints, Err: ErrNoEndpoints}
	}
	return DialEndpoint(ctx, c, ep, client)
}

// DialEndpoint is Dial to a given endpoint of c.
func DialEndpoint(ctx context.Context, c *config.Cluster, ep string, client netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", ep)
	if err != nil {
		kind := KindConnect
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			kind = KindTimeout
		}
		return nil, &DialError{Cluster: c.Name, Endpoint: ep, Kind: kind, Err: err}
	}
	tc := nc.(*net.TCPConn)
	tc.SetNoDelay(true)
	if c.Bridge == nil {
		return tc, nil
	}
	h := wire.Header{Bridge: c.Bridge.Name, Port: c.Bridge.Port, Credential: c.Bridge.Credential, ClientAddr: client}
	var buf [wire.MaxHeaderLen]byte
	b, err := h.AppendEncode(buf[:0])
	if err != nil {
		tc.Close()
		return nil, &DialError{Cluster: c.Name, Endpoint: ep, Kind: KindProtocol, Err: err}
	}
	deadline := time.Now().Add(c.ConnectTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	tc.SetDeadline(deadline)
	if _, err = tc.Write(b); err == nil {
		err = wire.ReadReply(tc)
	}
	if err != nil {
		tc.Close()
		kind := KindProtocol
		var re *wire.RefusedError
		var ne net.Error
		switch {
		case errors.As(err, &re):
			kind = KindRefused
		case errors.As(err, &ne) && ne.Timeout():
			kind = KindTimeout
		case errors.Is(err, net.ErrClosed), isConnReset(err):
			kind = KindConnect
		}
		return nil, &DialError{Cluster: c.Name, Endpoint: ep, Kind: kind, Err: err}
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

func isConnReset(err error) bool {
	return errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNREFUSED)
}

// Conn is a pooled upstream connection with its buffers.
type Conn struct {
	*net.TCPConn
	IO     *netio.Conn // the TCPConn's reads and writes; R and W use it
	R      *bufio.Reader
	W      *bufio.Writer
	Reused bool // it served a request before
	DL     Deadlines

	pool      *pool
	idleSince time.Time
}

// Endpoint is the cluster endpoint uc is connected to ("" for one that
// Adopt made).
func (uc *Conn) Endpoint() string {
	if uc.pool == nil {
		return ""
	}
	return uc.pool.key.endpoint
}

// Pools holds idle upstream connections per cluster endpoint.
type Pools struct {
	// MaxIdle is the most idle connections kept per endpoint; 0 means 64.
	MaxIdle int
	// IdleTimeout closes connections idle longer; 0 means 60s.
	IdleTimeout time.Duration

	mu    sync.Mutex // guards pools
	pools map[poolKey]*pool
}

type poolKey struct {
	cluster, endpoint, bridge string
	port                      uint16
}

type pool struct {
	key    poolKey
	mu     sync.Mutex // guards the fields below
	idle   []*Conn
	closed bool
}

const bufSize = 16 << 10

func (p *Pools) pool(c *config.Cluster, ep string) *pool {
	k := poolKey{cluster: c.Name, endpoint: ep}
	if c.Bridge != nil {
		k.bridge, k.port = c.Bridge.Name, c.Bridge.Port
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pools == nil {
		p.pools = map[poolKey]*pool{}
	}
	pl := p.pools[k]
	if pl == nil {
		pl = &pool{key: k}
		p.pools[k] = pl
	}
	return pl
}

func (p *Pools) idleTimeout() time.Duration {
	if p.IdleTimeout > 0 {
		return p.IdleTimeout
	}
	return 60 * time.Second
}

// Get returns an idle connection to an endpoint of c, or dials one; with
// fresh it always dials. A request that could not be sent again if the
// connection turned out closed (it has a body) passes check: an idle
// connection is then always looked at first, not only after a pause.
func (p *Pools) Get(ctx context.Context, c *config.Cluster, client netip.AddrPort, fresh, check bool) (*Conn, error) {
	return p.GetAt(ctx, c, client, fresh, check, time.Now())
}

// GetAt is Get for a caller that has just read the clock: now is the
// time the idle connections' ages are taken at.
func (p *Pools) GetAt(ctx context.Context, c *config.Cluster, client netip.AddrPort, fresh, check bool, now time.Time) (*Conn, error) {
	ep := c.Endpoint()
	if ep == "" {
		return nil, &DialError{Cluster: c.Name, Kind: KindNoEndpoints, Err: ErrNoEndpoints}
	}
	pl := p.pool(c, ep)
	for !fresh {
		pl.mu.Lock()
		n := len(pl.idle)
		if n == 0 {
			pl.mu.Unlock()
			break
		}
		uc := pl.idle[n-1]
		pl.idle[n-1] = nil
		pl.idle = pl.idle[:n-1]
		pl.mu.Unlock()
		idle := now.Sub(uc.idleSince)
		// A connection idle for a while may have been closed by the
		// server; look before sending a request that cannot be retried.
		if idle > p.idleTimeout() || ((check || idle > 500*time.Millisecond) && !uc.IO.Quiet()) {
			uc.TCPConn.Close()
			continue
		}
		uc.Reused = true
		return uc, nil
	}
	tc, err := DialEndpoint(ctx, c, ep, client)
	if err != nil {
		return nil, err
	}
	nc := netio.New(tc)
	return &Conn{TCPConn: tc, IO: nc, R: bufio.NewReaderSize(nc, bufSize), W: bufio.NewWriterSize(nc, bufSize), pool: pl}, nil
}

// Adopt wraps tc, a connection opened elsewhere (an HTTP request that
// left carrier's event loop), whose bytes pending were read already. It
// serves the one response under way and is not pooled.
func Adopt(tc *net.TCPConn, pending []byte) *Conn {
	nc := netio.New(tc)
	var r io.Reader = nc
	if len(pending) > 0 {
		r = io.MultiReader(bytes.NewReader(pending), nc)
	}
	return &Conn{TCPConn: tc, IO: nc, R: bufio.NewReaderSize(r, bufSize), W: bufio.NewWriterSize(nc, bufSize)}
}

// Put returns a connection for reuse. The caller guarantees that the last
// response was read completely and nothing else is buffered.
func (p *Pools) Put(uc *Conn) {
	p.PutAt(uc, time.Now())
}

// PutAt is Put for a caller that has just read the clock: the
// connection's idle time starts at now.
func (p *Pools) PutAt(uc *Conn, now time.Time) {
	if uc.R.Buffered() > 0 || uc.W.Buffered() > 0 || uc.pool == nil {
		uc.TCPConn.Close()
		return
	}
	max := p.MaxIdle
	if max == 0 {
		max = 64
	}
	uc.idleSince = now
	pl := uc.pool
	pl.mu.Lock()
	if pl.closed || len(pl.idle) >= max {
		pl.mu.Unlock()
		uc.TCPConn.Close()
		return
	}
	pl.idle = append(pl.idle, uc)
	pl.mu.Unlock()
}

// Discard closes a connection that must not be reused.
func (p *Pools) Discard(uc *Conn) {
	if uc != nil {
		uc.TCPConn.Close()
	}
}

// Prune closes the idle connections of endpoints cfg no longer has, and
// makes connections in use to them close when returned.
func (p *Pools) Prune(cfg *config.Config) {
	keep := map[poolKey]bool{}
	for _, c := range cfg.Clusters {
		for _, ep := range c.Endpoints {
			k := poolKey{cluster: c.Name, endpoint: ep}
			if c.Bridge != nil {
				k.bridge, k.port = c.Bridge.Name, c.Bridge.Port
			}
			keep[k] = true
		}
	}
	p.mu.Lock()
	var drop []*pool
	for k, pl := range p.pools {
		if !keep[k] {
			drop = append(drop, pl)
			delete(p.pools, k)
		}
	}
	p.mu.Unlock()
	for _, pl := range drop {
		pl.close()
	}
}

func (pl *pool) close() {
	pl.mu.Lock()
	idle := pl.idle
	pl.idle, pl.closed = nil, true
	pl.mu.Unlock()
	for _, uc := range idle {
		uc.TCPConn.Close()
	}
}

// Run closes connections idle too long until ctx is done, then closes all.
func (p *Pools) Run(ctx context.Context) error {
	t := time.NewTicker(p.idleTimeout() / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			pools := p.pools
			p.pools = nil
			p.mu.Unlock()
			for _, pl := range pools {
				pl.close()
			}
			return nil
		case <-t.C:
			p.sweep()
		}
	}
}

func (p *Pools) sweep() {
	p.mu.Lock()
	pools := make([]*pool, 0, len(p.pools))
	for _, pl := range p.pools {
		pools = append(pools, pl)
	}
	p.mu.Unlock()
	cutoff := time.Now().Add(-p.idleTimeout())
	for _, pl := range pools {
		pl.mu.Lock()
		keep := pl.idle[:0]
		var stale []*Conn
		for _, uc := range pl.idle {
			if uc.idleSince.Before(cutoff) {
				stale = append(stale, uc)
			} else {
				keep = append(keep, uc)
			}
		}
		for i := len(keep); i < len(pl.idle); i++ {
			pl.idle[i] = nil
		}
		pl.idle = keep
		pl.mu.Unlock()
		for _, uc := range stale {
			uc.TCPConn.Close()
		}
	}
}

// Deadlines remembers the deadlines set on one connection, so that
// pushing an idle timeout forward on every request costs nothing until it
// has moved by more than a little: setting a deadline takes the runtime's
// timer lock. A deadline may so fire up to min(timeout/10, 1s) early.
type Deadlines struct{ r, w time.Time }

func slack(timeout time.Duration) time.Duration {
	return min(timeout/10, time.Second)
}

func keep(old, now time.Time, timeout time.Duration) (time.Time, bool) {
	if timeout <= 0 {
		return time.Time{}, old.IsZero()
	}
	nd := now.Add(timeout)
	if !old.IsZero() && !old.After(nd) && nd.Sub(old) < slack(timeout) {
		return old, true
	}
	return nd, false
}

// Read sets c's read deadline to now+timeout (none if timeout <= 0).
func (d *Deadlines) Read(c net.Conn, now time.Time, timeout time.Duration) {
	nd, same := keep(d.r, now, timeout)
	if !same {
		c.SetReadDeadline(nd)
		d.r = nd
	}
}

// Write sets c's write deadline to now+timeout (none if timeout <= 0).
func (d *Deadlines) Write(c net.Conn, now time.Time, timeout time.Duration) {
	nd, same := keep(d.w, now, timeout)
	if !same {
		c.SetWriteDeadline(nd)
		d.w = nd
	}
}

// Reset forgets the remembered deadlines, for a connection whose deadlines
// were set some other way.
func (d *Deadlines) Reset() { *d = Deadlines{} }

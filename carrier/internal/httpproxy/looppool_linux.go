package httpproxy

import (
	"time"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/internal/netio"
)

// The event loop's idle upstream connections (see loop_linux.go): kept per
// Proxy and endpoint, registered in the loop's epoll set while idle, so
// that one the server closes is dropped at once.

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
	pool                      *lpool
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
	pools       map[lkey]*lpool
	max         int
	idleTimeout time.Duration
	// free are buffers of lbufSize for the connections on the loop.
	free [][]byte
}

// maxFree is the most buffers kept for reuse (4 MiB).
const maxFree = 256

// getBuf returns a buffer of lbufSize.
func (ps *lpools) getBuf() []byte {
	if n := len(ps.free); n > 0 {
		b := ps.free[n-1]
		ps.free[n-1] = nil
		ps.free = ps.free[:n-1]
		return b
	}
	return make([]byte, lbufSize)
}

// putBuf takes a buffer of getBuf back (nil: none).
func (ps *lpools) putBuf(b []byte) {
	if b != nil && len(ps.free) < maxFree {
		ps.free = append(ps.free, b)
	}
}

// lpool are the idle connections to one endpoint; closed once the
// endpoint is gone from the config, so one in use is not kept either.
type lpool struct {
	idle   []*lup
	closed bool
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
		p.lpools = &lpools{loop: loop, pools: map[lkey]*lpool{}, max: max, idleTimeout: idle}
	}
	return p.lpools
}

// pool returns k's pool, made if need be.
func (ps *lpools) pool(k lkey) *lpool {
	pl := ps.pools[k]
	if pl == nil {
		pl = &lpool{}
		ps.pools[k] = pl
	}
	return pl
}

// newConn makes an upstream connection of fd, dialled to k.
func (ps *lpools) newConn(k lkey, fd int) *lup {
	return &lup{pools: ps, pool: ps.pool(k), fd: fd, writable: true}
}

func (ps *lpools) take(k lkey) *lup {
	pl := ps.pools[k]
	if pl == nil || len(pl.idle) == 0 {
		return nil
	}
	n := len(pl.idle)
	u := pl.idle[n-1]
	pl.idle[n-1] = nil
	pl.idle = pl.idle[:n-1]
	ps.loop.SetDeadline(u, time.Time{})
	u.reused = true
	u.readable, u.writable, u.ended = false, true, false
	return u
}

func (ps *lpools) put(u *lup, now time.Time) {
	pl := u.pool
	if pl.closed || len(pl.idle) >= ps.max || u.ended {
		// u.ended: the server's close came with the response, and its
		// event will not come again.
		ps.loop.Close(u.slot, u.fd)
		return
	}
	ps.loop.Bind(u.slot, u, 0)
	pl.idle = append(pl.idle, u)
	ps.loop.SetDeadline(u, now.Add(ps.idleTimeout))
}

// drop closes an idle connection.
func (ps *lpools) drop(u *lup) {
	pl := u.pool
	for i, x := range pl.idle {
		if x == u {
			last := len(pl.idle) - 1
			pl.idle[i] = pl.idle[last]
			pl.idle[last] = nil
			pl.idle = pl.idle[:last]
			ps.loop.SetDeadline(u, time.Time{})
			ps.loop.Close(u.slot, u.fd)
			return
		}
	}
}

// prune closes the pools of endpoints not in keep (all, if keep is nil)
// with their idle connections.
func (ps *lpools) prune(keep map[lkey]bool) {
	for k, pl := range ps.pools {
		if keep[k] {
			continue
		}
		for _, u := range pl.idle {
			ps.loop.SetDeadline(u, time.Time{})
			ps.loop.Close(u.slot, u.fd)
		}
		pl.idle, pl.closed = nil, true
		delete(ps.pools, k)
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

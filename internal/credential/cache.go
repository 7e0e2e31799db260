package credential

import (
	"fmt"
	"sync"
	"time"
)

// DefaultCacheSize bounds a Cache made with size 0.
const DefaultCacheSize = 1 << 16

// Cache hands out a bridge's credential again while it is fresh, so a
// configuration that embeds credentials stays byte-identical from one
// translation to the next and changes only when a credential is renewed.
//
// A credential is due for renewal half-way through its lifetime (RenewAt);
// the Cache renews it up to an eighth of its lifetime before that. So an
// issuer that translates again at the first RenewAt renews along with it
// every credential due within the next eighth of a lifetime: credentials
// issued at different times are renewed in batches at least that far
// apart, not one translation each, and every credential handed out has at
// least half its lifetime left.
//
// Entries of bridges that are gone are dropped with Retain; beyond its
// size the Cache drops entries that are no longer fresh, then any. Safe
// for concurrent use.
type Cache struct {
	signer *Signer
	size   int

	mu      sync.Mutex // guards entries
	entries map[string]Credential
}

// Credential is an issued credential.
type Credential struct {
	Token string
	// TTL is the lifetime it was asked for; Expires is its "exp" (whole
	// seconds, as in the token).
	TTL     time.Duration
	Expires time.Time
}

// RenewAt is when half of the credential's lifetime is left: it must be
// renewed by then.
func (c Credential) RenewAt() time.Time { return c.Expires.Add(-c.TTL / 2) }

// fresh reports whether the Cache hands c out again at now.
func (c Credential) fresh(now time.Time) bool {
	return now.Before(c.RenewAt().Add(-c.TTL / 8))
}

// NewCache returns a Cache that issues with s and holds at most size
// credentials (DefaultCacheSize if size is 0 or less).
func NewCache(s *Signer, size int) (*Cache, error) {
	if s == nil {
		return nil, fmt.Errorf("credential: cache without a signer")
	}
	if size <= 0 {
		size = DefaultCacheSize
	}
	return &Cache{signer: s, size: size, entries: map[string]Credential{}}, nil
}

// Signer is the signer the cache issues with.
func (c *Cache) Signer() *Signer { return c.signer }

// Issue returns bridge's credential for ttl: the one issued before if it
// was issued for the same ttl and is still fresh at the signer's clock,
// else a new one. Its RenewAt is at least an eighth of ttl away.
func (c *Cache) Issue(bridge string, ttl time.Duration) (Credential, error) {
	now := c.signer.Now()
	c.mu.Lock()
	e, ok := c.entries[bridge]
	c.mu.Unlock()
	if ok && e.TTL == ttl && e.fresh(now) {
		return e, nil
	}
	// Signed outside the lock: an RSA signature takes a millisecond or so.
	tok, exp, err := c.signer.issue(bridge, now, ttl)
	if err != nil {
		return Credential{}, err
	}
	e = Credential{Token: tok, TTL: ttl, Expires: exp}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.entries[bridge]; ok && cur.TTL == ttl && cur.fresh(now) {
		return cur, nil // issued concurrently: one credential per bridge
	}
	if _, ok := c.entries[bridge]; !ok && len(c.entries) >= c.size {
		c.evict(now)
	}
	c.entries[bridge] = e
	return e, nil
}

// evict makes room for one entry; c.mu is held.
func (c *Cache) evict(now time.Time) {
	for b, e := range c.entries {
		if !e.fresh(now) {
			delete(c.entries, b)
		}
	}
	for b := range c.entries {
		if len(c.entries) < c.size {
			return
		}
		delete(c.entries, b)
	}
}

// Retain drops the credentials of the bridges keep says no to, and
// returns how many it dropped.
func (c *Cache) Retain(keep func(bridge string) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for b := range c.entries {
		if !keep(b) {
			delete(c.entries, b)
			n++
		}
	}
	return n
}

// Len is the number of credentials held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

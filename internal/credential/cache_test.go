package credential

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable clock safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }
func newClock(t time.Time) *clock        { c := &clock{}; c.set(t); return c }
func cacheFor(t *testing.T, size int) (*Cache, *clock, *Verifier) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock(time.Date(2026, 11, 29, 12, 0, 0, 300_000_000, time.UTC))
	s, err := NewSigner(key, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCache(s, size)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier([]crypto.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	v.now = clk.now
	return c, clk, v
}

func TestCacheReusesFreshCredentials(t *testing.T) {
	const ttl = 10 * time.Minute
	tests := []struct {
		name    string
		advance time.Duration // after the first Issue
		ttl     time.Duration // of the second Issue
		bridge  string        // of the second Issue
		same    bool
	}{
		{name: "right away", ttl: ttl, bridge: "ns/b", same: true},
		// exp is in whole seconds: issued at :00.3, it expires at :00.0
		// ten minutes later, so it is renewed 300ms early; renewals
		// start an eighth of its lifetime before half of it.
		{name: "just before three eighths of its lifetime", advance: 3*ttl/8 - 301*time.Millisecond, ttl: ttl, bridge: "ns/b", same: true},
		{name: "at three eighths of its lifetime", advance: 3*ttl/8 - 300*time.Millisecond, ttl: ttl, bridge: "ns/b"},
		{name: "at half its lifetime", advance: ttl / 2, ttl: ttl, bridge: "ns/b"},
		{name: "expired", advance: 2 * ttl, ttl: ttl, bridge: "ns/b"},
		{name: "another lifetime", ttl: time.Hour, bridge: "ns/b"},
		{name: "another bridge", ttl: ttl, bridge: "ns/c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, clk, v := cacheFor(t, 0)
			a, err := c.Issue("ns/b", ttl)
			if err != nil {
				t.Fatal(err)
			}
			if want := time.Date(2026, 11, 29, 12, 10, 0, 0, time.UTC); !a.Expires.Equal(want) || a.TTL != ttl {
				t.Fatalf("expires %v ttl %v, want %v %v", a.Expires, a.TTL, want, ttl)
			}
			clk.advance(tt.advance)
			b, err := c.Issue(tt.bridge, tt.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Token == b.Token; got != tt.same {
				t.Fatalf("same credential %v, want %v", got, tt.same)
			}
			if err := v.Verify([]byte(b.Token), tt.bridge); err != nil {
				t.Fatalf("the credential handed out does not verify: %v", err)
			}
			if !tt.same && tt.bridge == "ns/b" && !b.Expires.After(a.Expires) && tt.ttl == ttl {
				t.Fatalf("renewed credential expires %v, not after %v", b.Expires, a.Expires)
			}
		})
	}
}

func TestCacheRetainAndBound(t *testing.T) {
	c, clk, _ := cacheFor(t, 3)
	issue := func(b string) Credential {
		t.Helper()
		cr, err := c.Issue(b, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return cr
	}
	first := issue("ns/a")
	issue("ns/b")
	issue("ns/c")
	if n := c.Retain(func(b string) bool { return b != "ns/b" }); n != 1 || c.Len() != 2 {
		t.Fatalf("Retain dropped %d, %d left; want 1 and 2", n, c.Len())
	}
	if issue("ns/a").Token != first.Token {
		t.Fatal("Retain dropped a bridge it was told to keep")
	}
	// ns/a goes stale; a fourth bridge over the bound evicts it first.
	clk.advance(40 * time.Second)
	issue("ns/c")
	issue("ns/d")
	issue("ns/e")
	if c.Len() != 3 {
		t.Fatalf("%d credentials held, want 3", c.Len())
	}
	c.mu.Lock()
	_, stale := c.entries["ns/a"]
	c.mu.Unlock()
	if stale {
		t.Fatal("a stale credential was kept over fresh ones")
	}
	for i := range 10 {
		issue(fmt.Sprintf("ns/x%d", i))
		if c.Len() > 3 {
			t.Fatalf("%d credentials held, bound 3", c.Len())
		}
	}
	if _, err := NewCache(nil, 0); err == nil {
		t.Error("a cache without a signer")
	}
}

func TestCacheConcurrent(t *testing.T) {
	c, clk, v := cacheFor(t, 0)
	const bridges, workers = 20, 8
	got := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range bridges {
				cr, err := c.Issue(fmt.Sprintf("ns/b%d", i), time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				got[w] = append(got[w], cr.Token)
			}
		}()
	}
	// The clock moves while they issue; each bridge must still end up
	// with one credential that every later Issue returns.
	go clk.advance(time.Second)
	wg.Wait()
	for i := range bridges {
		b := fmt.Sprintf("ns/b%d", i)
		cr, err := c.Issue(b, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Verify([]byte(cr.Token), b); err != nil {
			t.Fatal(err)
		}
		again, _ := c.Issue(b, time.Minute)
		if again.Token != cr.Token {
			t.Fatalf("bridge %s: two credentials in a row", b)
		}
	}
	if c.Len() != bridges {
		t.Fatalf("%d credentials held, want %d", c.Len(), bridges)
	}
}

// TestCacheRenewsInBatches: issued a little apart, credentials are renewed
// together at the first one's RenewAt.
func TestCacheRenewsInBatches(t *testing.T) {
	const ttl = 8 * time.Minute
	c, clk, _ := cacheFor(t, 0)
	a, _ := c.Issue("ns/a", ttl)
	clk.advance(ttl / 16)
	b, _ := c.Issue("ns/b", ttl)
	clk.advance(ttl / 4)
	far, _ := c.Issue("ns/far", ttl)
	clk.set(a.RenewAt())
	for _, tt := range []struct {
		name    string
		was     Credential
		renewed bool
	}{
		{name: "ns/a", was: a, renewed: true},
		{name: "ns/b", was: b, renewed: true},
		{name: "ns/far", was: far},
	} {
		got, err := c.Issue(tt.name, ttl)
		if err != nil {
			t.Fatal(err)
		}
		if renewed := got.Token != tt.was.Token; renewed != tt.renewed {
			t.Errorf("%s: renewed %v, want %v", tt.name, renewed, tt.renewed)
		}
		if left := got.Expires.Sub(clk.now()); left < ttl/2 {
			t.Errorf("%s: handed out with %v of %v left", tt.name, left, ttl)
		}
	}
}

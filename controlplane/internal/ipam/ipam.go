// Package ipam hands out tunnel addresses to clients, each one once. The
// allocations live in one ConfigMap (client name → address) that every
// change rewrites with optimistic concurrency: two allocators racing (two
// reconciles, or two replicas during a leader handover) cannot both win an
// address, the loser sees a conflict and tries again with the fresh state.
package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Pool is a tunnel network. Its first host address belongs to stowaway;
// clients get the others.
type Pool struct {
	prefix netip.Prefix
}

// NewPool checks prefix: IPv4 or IPv6, at least 2 client addresses, at most
// a /16 of them (the ConfigMap must stay small).
func NewPool(prefix netip.Prefix) (Pool, error) {
	if !prefix.IsValid() {
		return Pool{}, errors.New("tunnel CIDR: invalid prefix")
	}
	prefix = prefix.Masked()
	hostBits := prefix.Addr().BitLen() - prefix.Bits()
	if hostBits < 2 {
		return Pool{}, fmt.Errorf("tunnel CIDR %s: too small, want at most a /30 (IPv4) or /126 (IPv6)", prefix)
	}
	if hostBits > 16 {
		return Pool{}, fmt.Errorf("tunnel CIDR %s: too large, want at least a /%d", prefix, prefix.Addr().BitLen()-16)
	}
	return Pool{prefix: prefix}, nil
}

// Prefix is the pool's network.
func (p Pool) Prefix() netip.Prefix { return p.prefix }

// Stowaway is stowaway's own address, the first host address.
func (p Pool) Stowaway() netip.Addr { return p.prefix.Addr().Next() }

// Next returns the lowest client address not in used.
func (p Pool) Next(used map[netip.Addr]bool) (netip.Addr, error) {
	for a := p.Stowaway().Next(); p.prefix.Contains(a); a = a.Next() {
		if a.Is4() && !p.prefix.Contains(a.Next()) {
			break // IPv4 broadcast address
		}
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("tunnel CIDR %s is exhausted (%d clients)", p.prefix, len(used))
}

// Store keeps the allocations in a ConfigMap.
type Store struct {
	Client    client.Client // should read from the API server, not a cache
	Namespace string
	Name      string
	Pool      Pool
}

// Allocate returns the address of clientName, allocating one if it has none.
func (s *Store) Allocate(ctx context.Context, clientName string) (netip.Addr, error) {
	var got netip.Addr
	err := retry.OnError(backoff, retryable, func() error {
		cm, exists, err := s.get(ctx)
		if err != nil {
			return err
		}
		used := make(map[netip.Addr]bool, len(cm.Data))
		for name, v := range cm.Data {
			a, err := netip.ParseAddr(v)
			if err != nil || !s.Pool.prefix.Contains(a) {
				continue // written for another CIDR: reallocate
			}
			if name == clientName {
				got = a
				return nil
			}
			used[a] = true
		}
		a, err := s.Pool.Next(used)
		if err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[clientName] = a.String()
		if exists {
			err = s.Client.Update(ctx, cm)
		} else {
			err = s.Client.Create(ctx, cm)
		}
		if err != nil {
			return err
		}
		got = a
		return nil
	})
	return got, err
}

// Release frees clientName's address.
func (s *Store) Release(ctx context.Context, clientName string) error {
	return retry.OnError(backoff, retryable, func() error {
		cm, exists, err := s.get(ctx)
		if err != nil || !exists {
			return err
		}
		if _, ok := cm.Data[clientName]; !ok {
			return nil
		}
		delete(cm.Data, clientName)
		return s.Client.Update(ctx, cm)
	})
}

// Allocations returns the current allocations.
func (s *Store) Allocations(ctx context.Context) (map[string]netip.Addr, error) {
	cm, _, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]netip.Addr, len(cm.Data))
	for name, v := range cm.Data {
		if a, err := netip.ParseAddr(v); err == nil {
			out[name] = a
		}
	}
	return out, nil
}

func (s *Store) get(ctx context.Context) (*corev1.ConfigMap, bool, error) {
	cm := &corev1.ConfigMap{}
	err := s.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name}, cm)
	if apierrors.IsNotFound(err) {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: s.Namespace, Name: s.Name,
			Labels: map[string]string{"app.kubernetes.io/part-of": "gefyra"},
		}}, false, nil
	}
	return cm, err == nil, err
}

// backoff retries conflicts generously: every allocator that lost a race
// retries at once with the state that beat it, so progress is guaranteed,
// but under a burst one allocator may lose many times in a row.
var backoff = wait.Backoff{Steps: 30, Duration: 5 * time.Millisecond, Factor: 1.3, Jitter: 1, Cap: 500 * time.Millisecond}

func retryable(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}

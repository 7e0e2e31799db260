package main

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sync"
	"time"
)

const (
	// keysMaxAge is how long fetched keys are trusted before a refetch.
	keysMaxAge = 5 * time.Minute
	// refetchMinInterval keeps tokens with unknown key IDs from turning the
	// backend into a load generator against the identity provider.
	refetchMinInterval = 10 * time.Second
	maxJWKSBytes       = 1 << 20
)

// keySet holds the RSA signing keys of an identity provider, fetched from its
// JWKS endpoint and refreshed when they get old or a token names an unknown
// key.
type keySet struct {
	url    string
	client *http.Client

	mu        sync.Mutex // guards the fields below
	keys      map[string]*rsa.PublicKey
	fetched   time.Time // when keys were last fetched successfully
	attempted time.Time // when a fetch was last tried
}

func newKeySet(rawURL string, client *http.Client) (*keySet, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("JWKS URL %q: want an absolute http(s) URL", rawURL)
	}
	return &keySet{url: rawURL, client: client}, nil
}

// key returns the public key with the given key ID; an empty ID is accepted
// when the set holds exactly one key.
func (s *keySet) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	k, ok := s.lookup(kid)
	stale := now.Sub(s.fetched) > keysMaxAge
	if (!ok || stale) && now.Sub(s.attempted) >= refetchMinInterval {
		s.attempted = now
		keys, err := s.fetch(ctx)
		if err != nil {
			if !ok {
				return nil, err
			}
		} else {
			s.keys, s.fetched = keys, now
			k, ok = s.lookup(kid)
		}
	}
	if !ok {
		return nil, fmt.Errorf("no signing key %q in %s", kid, s.url)
	}
	return k, nil
}

func (s *keySet) lookup(kid string) (*rsa.PublicKey, bool) {
	if kid == "" && len(s.keys) == 1 {
		for _, k := range s.keys {
			return k, true
		}
	}
	k, ok := s.keys[kid]
	return k, ok
}

func (s *keySet) fetch(ctx context.Context) (map[string]*rsa.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS %s: %s", s.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS %s is larger than %d bytes", s.url, maxJWKSBytes)
	}
	return parseJWKS(body)
}

// parseJWKS returns the RSA signature keys of a JSON Web Key Set by key ID.
func parseJWKS(body []byte) (map[string]*rsa.PublicKey, error) {
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		n, err := base64.RawURLEncoding.DecodeString(k.N)
		if err != nil || len(n) == 0 {
			return nil, fmt.Errorf("parse JWKS: key %q: bad modulus", k.Kid)
		}
		e, err := base64.RawURLEncoding.DecodeString(k.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("parse JWKS: key %q: bad exponent", k.Kid)
		}
		exp := new(big.Int).SetBytes(e)
		if exp.Int64() < 3 || exp.Int64()%2 == 0 {
			return nil, fmt.Errorf("parse JWKS: key %q: bad exponent", k.Kid)
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}
	}
	if len(keys) == 0 {
		return nil, errors.New("parse JWKS: no RSA signing keys")
	}
	return keys, nil
}

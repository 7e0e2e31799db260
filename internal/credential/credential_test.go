package credential

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestVerify(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	_, otherEd, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	both, err := NewVerifier([]crypto.PublicKey{&rsaKey.PublicKey, edPub})
	if err != nil {
		t.Fatal(err)
	}
	edOnly, _ := NewVerifier([]crypto.PublicKey{edPub})
	none, _ := NewVerifier(nil)

	issue := func(k crypto.Signer, bridge string, ttl time.Duration) []byte {
		s, err := Issue(k, bridge, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(s)
	}
	sign := func(m jwt.SigningMethod, key any, c Claims) []byte {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(s)
	}
	exp := jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Minute))}
	tests := []struct {
		name    string
		v       *Verifier
		token   []byte
		bridge  string
		wantErr error
	}{
		{name: "rs256", v: both, token: issue(rsaKey, "ns/b", time.Minute), bridge: "ns/b"},
		{name: "eddsa", v: both, token: issue(edPriv, "ns/b", time.Minute), bridge: "ns/b"},
		{name: "other bridge", v: both, token: issue(edPriv, "ns/other", time.Minute), bridge: "ns/b", wantErr: ErrForbidden},
		{name: "expired", v: both, token: issue(edPriv, "ns/b", -time.Minute), bridge: "ns/b", wantErr: ErrUnauthenticated},
		{name: "no exp", v: both, token: sign(jwt.SigningMethodEdDSA, edPriv, Claims{Bridge: "ns/b"}), bridge: "ns/b", wantErr: ErrUnauthenticated},
		{name: "not yet valid", v: both, token: sign(jwt.SigningMethodEdDSA, edPriv, Claims{Bridge: "ns/b", RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: exp.ExpiresAt, NotBefore: jwt.NewNumericDate(time.Now().Add(time.Hour))}}), bridge: "ns/b", wantErr: ErrUnauthenticated},
		{name: "unknown key", v: both, token: issue(otherEd, "ns/b", time.Minute), bridge: "ns/b", wantErr: ErrUnauthenticated},
		{name: "rsa token, only ed key", v: edOnly, token: issue(rsaKey, "ns/b", time.Minute), bridge: "ns/b", wantErr: ErrUnauthenticated},
		{name: "es256", v: both, token: sign(jwt.SigningMethodES256, ecKey, Claims{Bridge: "ns/b", RegisteredClaims: exp}), bridge: "ns/b", wantErr: ErrUnauthenticated},
		{name: "none alg", v: both, token: sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, Claims{Bridge: "ns/b", RegisteredClaims: exp}), bridge: "ns/b", wantErr: ErrUnauthenticated},
		{name: "empty", v: both, token: nil, bridge: "ns/b", wantErr: ErrUnauthenticated},
		{name: "garbage", v: both, token: []byte("a.b.c"), bridge: "ns/b", wantErr: ErrUnauthenticated},
		{name: "no keys configured", v: none, token: issue(edPriv, "ns/b", time.Minute), bridge: "ns/b", wantErr: ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.v.Verify(tt.token, tt.bridge)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
		})
	}
	if _, err := NewVerifier([]crypto.PublicKey{&ecKey.PublicKey}); err == nil {
		t.Error("NewVerifier accepted an ECDSA key")
	}
	if _, err := Issue(ecKey, "ns/b", time.Minute); err == nil {
		t.Error("Issue accepted an ECDSA key")
	}
}

func FuzzVerify(f *testing.F) {
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	v, _ := NewVerifier([]crypto.PublicKey{edPub})
	good, _ := Issue(edPriv, "ns/b", time.Hour)
	f.Add([]byte(good))
	f.Add([]byte("a.b.c"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, tok []byte) {
		err := v.Verify(tok, "ns/b")
		if err != nil && !errors.Is(err, ErrUnauthenticated) && !errors.Is(err, ErrForbidden) {
			t.Fatalf("unclassified error %v", err)
		}
	})
}

// Package credential issues and verifies the credential a carrier presents
// to stowaway: a short-lived JWT the control plane signs (RS256 with an RSA
// key, or EdDSA with an Ed25519 key) that names the one bridge it is good
// for. The control plane signs with a Signer (through a Cache, which hands
// out each bridge's credential again while it is fresh) and hands stowaway
// the PEM public keys (PublicKeyPEM); stowaway verifies with a Verifier.
//
// Claims:
//
//	bridge  string   the GefyraBridge as "namespace/name" (required)
//	exp     NumericDate  expiry (required)
//	nbf, iat         checked when present
//
// Any other claim is ignored. The algorithm must match the key type, so a
// token cannot choose a weaker algorithm than the control plane's key.
package credential

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors Verify returns (wrapped); test with errors.Is.
var (
	// ErrUnauthenticated: no credential, a bad signature, expired, or not a
	// JWT at all.
	ErrUnauthenticated = errors.New("credential: unauthenticated")
	// ErrForbidden: a good credential, but for another bridge.
	ErrForbidden = errors.New("credential: not valid for this bridge")
)

// Claims are the claims of a carrier credential.
type Claims struct {
	Bridge string `json:"bridge"`
	jwt.RegisteredClaims
}

// Verifier checks credentials against a set of public keys.
type Verifier struct {
	rsa, ed []jwt.VerificationKey
	methods []string
	now     func() time.Time
}

// NewVerifier returns a Verifier for keys (*rsa.PublicKey or
// ed25519.PublicKey). With no keys every credential is refused.
func NewVerifier(keys []crypto.PublicKey) (*Verifier, error) {
	v := &Verifier{now: time.Now}
	for _, k := range keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			v.rsa = append(v.rsa, k)
		case ed25519.PublicKey:
			v.ed = append(v.ed, k)
		default:
			return nil, fmt.Errorf("credential: key type %T, want *rsa.PublicKey or ed25519.PublicKey", k)
		}
	}
	if len(v.rsa) > 0 {
		v.methods = append(v.methods, jwt.SigningMethodRS256.Alg())
	}
	if len(v.ed) > 0 {
		v.methods = append(v.methods, jwt.SigningMethodEdDSA.Alg())
	}
	return v, nil
}

// Verify checks that token is a valid, unexpired credential for bridge.
func (v *Verifier) Verify(token []byte, bridge string) error {
	return v.VerifyAt(token, bridge, v.now())
}

// VerifyAt is Verify at the time now.
func (v *Verifier) VerifyAt(token []byte, bridge string, now time.Time) error {
	if len(token) == 0 {
		return fmt.Errorf("%w: no credential", ErrUnauthenticated)
	}
	if len(v.methods) == 0 {
		return fmt.Errorf("%w: no credential keys configured", ErrUnauthenticated)
	}
	var claims Claims
	_, err := jwt.ParseWithClaims(string(token), &claims, v.keyFunc,
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(5*time.Second),
	)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if claims.Bridge != bridge {
		return fmt.Errorf("%w: credential is for bridge %q, not %q", ErrForbidden, claims.Bridge, bridge)
	}
	return nil
}

func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case jwt.SigningMethodRS256.Alg():
		return jwt.VerificationKeySet{Keys: v.rsa}, nil
	case jwt.SigningMethodEdDSA.Alg():
		return jwt.VerificationKeySet{Keys: v.ed}, nil
	}
	return nil, fmt.Errorf("algorithm %q not accepted", t.Method.Alg())
}

// Issue signs a credential for bridge that expires after ttl, with an RSA
// (RS256) or Ed25519 (EdDSA) private key. The control plane issues
// credentials; tests and tools use this to make them the same way.
func Issue(key crypto.Signer, bridge string, ttl time.Duration) (string, error) {
	s, err := NewSigner(key, nil)
	if err != nil {
		return "", err
	}
	return s.Issue(bridge, ttl)
}

// Signer issues credentials with one private key and a clock, so the same
// inputs give the same token (Ed25519 and RSA PKCS #1 v1.5 signatures are
// deterministic).
type Signer struct {
	key    crypto.Signer
	method jwt.SigningMethod
	now    func() time.Time
}

// NewSigner returns a Signer for an *rsa.PrivateKey (RS256, at least 2048
// bits) or an ed25519.PrivateKey (EdDSA). now defaults to time.Now.
func NewSigner(key crypto.Signer, now func() time.Time) (*Signer, error) {
	s := &Signer{key: key, now: now}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("credential: RSA key of %d bits, want at least 2048", k.N.BitLen())
		}
		s.method = jwt.SigningMethodRS256
	case ed25519.PrivateKey:
		s.method = jwt.SigningMethodEdDSA
	default:
		return nil, fmt.Errorf("credential: key type %T, want *rsa.PrivateKey or ed25519.PrivateKey", key)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Issue signs a credential for bridge that expires ttl from now.
func (s *Signer) Issue(bridge string, ttl time.Duration) (string, error) {
	tok, _, err := s.issue(bridge, s.now(), ttl)
	return tok, err
}

// issue signs a credential issued at now; expires is its "exp".
func (s *Signer) issue(bridge string, now time.Time, ttl time.Duration) (tok string, expires time.Time, err error) {
	c := Claims{
		Bridge: bridge,
		RegisteredClaims: jwt.RegisteredClaims{
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	tok, err = jwt.NewWithClaims(s.method, c).SignedString(s.key)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, c.ExpiresAt.Time, nil
}

// Now is the signer's clock.
func (s *Signer) Now() time.Time { return s.now() }

// PublicKeyPEM is the signer's public key as a PEM "PUBLIC KEY" block, the
// form stowaway's configuration takes.
func (s *Signer) PublicKeyPEM() (string, error) { return PublicKeyPEM(s.key.Public()) }

// PublicKeyPEM encodes an RSA or Ed25519 public key as a PEM "PUBLIC KEY"
// (PKIX) block.
func PublicKeyPEM(k crypto.PublicKey) (string, error) {
	switch k.(type) {
	case *rsa.PublicKey, ed25519.PublicKey:
	default:
		return "", fmt.Errorf("credential: key type %T, want RSA or Ed25519", k)
	}
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// ParsePrivateKey reads a PEM "PRIVATE KEY" (PKCS #8) block holding an RSA
// or Ed25519 key, or a PEM "RSA PRIVATE KEY" (PKCS #1).
func ParsePrivateKey(b []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errors.New("credential: no PEM block")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("credential: data after the PEM block")
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("credential: PEM block %q, want PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("credential: key type %T, want RSA or Ed25519", k)
}

// MarshalPrivateKey encodes an RSA or Ed25519 private key as a PEM
// "PRIVATE KEY" (PKCS #8) block.
func MarshalPrivateKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

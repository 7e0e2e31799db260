package wgnet

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// KeyLen is the length of a WireGuard key in bytes.
const KeyLen = 32

// Key is a Curve25519 key, private or public. Its text form is standard
// base64 (44 characters), the form wg(8) prints and reads.
type Key [KeyLen]byte

// GeneratePrivateKey returns a new, clamped Curve25519 private key.
func GeneratePrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("generate private key: %w", err)
	}
	k.clamp()
	return k, nil
}

// clamp applies the Curve25519 scalar clamping that wg genkey applies.
func (k *Key) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// ParseKey parses the base64 text form of a key. Surrounding whitespace,
// as found in a key file, is ignored.
func ParseKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Key{}, errors.New("parse key: empty")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return Key{}, fmt.Errorf("parse key: not base64: %w", err)
	}
	if len(b) != KeyLen {
		return Key{}, fmt.Errorf("parse key: %d bytes, want %d", len(b), KeyLen)
	}
	var k Key
	copy(k[:], b)
	return k, nil
}

// String returns the base64 text form.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MarshalText implements encoding.TextMarshaler (base64).
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (base64).
func (k *Key) UnmarshalText(b []byte) error {
	p, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// IsZero reports whether k is all zeros (unset).
func (k Key) IsZero() bool { return k == Key{} }

// PublicKey returns the public key of the private key k.
func (k Key) PublicKey() Key {
	var pub Key
	priv := k
	priv.clamp()
	curve25519.ScalarBaseMult((*[32]byte)(&pub), (*[32]byte)(&priv))
	return pub
}

// hex returns the lowercase hex form the WireGuard configuration protocol uses.
func (k Key) hex() string {
	const digits = "0123456789abcdef"
	var b [KeyLen * 2]byte
	for i, c := range k {
		b[2*i] = digits[c>>4]
		b[2*i+1] = digits[c&0xf]
	}
	return string(b[:])
}

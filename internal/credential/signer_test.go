package credential

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSigner(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	clock := func() time.Time { return now }
	tests := []struct {
		name string
		key  crypto.Signer
	}{
		{name: "rsa", key: rsaKey},
		{name: "ed25519", key: edKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSigner(tt.key, clock)
			if err != nil {
				t.Fatal(err)
			}
			a, err := s.Issue("ns/b", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := s.Issue("ns/b", time.Minute)
			if a != b {
				t.Error("the same clock and inputs gave two different tokens")
			}
			pemKey, err := s.PublicKeyPEM()
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode([]byte(pemKey))
			if block == nil || block.Type != "PUBLIC KEY" {
				t.Fatalf("public key is not a PEM PUBLIC KEY block: %q", pemKey)
			}
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			v, err := NewVerifier([]crypto.PublicKey{pub})
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Verify([]byte(a), "ns/b"); err != nil {
				t.Errorf("own credential does not verify with the PEM key: %v", err)
			}
			if err := v.Verify([]byte(a), "ns/c"); !errors.Is(err, ErrForbidden) {
				t.Errorf("credential for ns/b accepted for ns/c: %v", err)
			}
			old, _ := NewSigner(tt.key, func() time.Time { return now.Add(-time.Hour) })
			expired, _ := old.Issue("ns/b", time.Minute)
			if err := v.Verify([]byte(expired), "ns/b"); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("credential issued an hour ago for a minute accepted: %v", err)
			}

			der, err := MarshalPrivateKey(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParsePrivateKey(der)
			if err != nil {
				t.Fatal(err)
			}
			s2, _ := NewSigner(back, clock)
			if c, _ := s2.Issue("ns/b", time.Minute); c != a {
				t.Error("the parsed private key signs differently")
			}
		})
	}

	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := NewSigner(small, nil); err == nil {
		t.Error("NewSigner accepted a 1024-bit RSA key")
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := NewSigner(ec, nil); err == nil {
		t.Error("NewSigner accepted an ECDSA key")
	}
	if _, err := PublicKeyPEM(&ec.PublicKey); err == nil {
		t.Error("PublicKeyPEM accepted an ECDSA key")
	}
}

func TestParsePrivateKeyErrors(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := MarshalPrivateKey(ed)
	tests := []struct {
		name, in, want string
	}{
		{name: "empty", in: "", want: "no PEM block"},
		{name: "not pem", in: "hello", want: "no PEM block"},
		{name: "wrong block", in: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})), want: "want PRIVATE KEY"},
		{name: "ecdsa", in: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})), want: "want RSA or Ed25519"},
		{name: "garbage der", in: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})), want: "credential:"},
		{name: "trailing data", in: string(good) + "x", want: "data after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePrivateKey([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func FuzzParsePrivateKey(f *testing.F) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := MarshalPrivateKey(ed)
	f.Add(good)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParsePrivateKey(b)
		if err != nil {
			return
		}
		again, err := MarshalPrivateKey(k)
		if err != nil {
			t.Fatalf("a parsed key does not encode: %v", err)
		}
		if _, err := ParsePrivateKey(again); err != nil {
			t.Fatalf("an encoded key does not parse: %v", err)
		}
	})
}

package wgnet

import (
	"encoding/hex"
	"strings"
	"testing"
)

func TestPublicKeyRFC7748(t *testing.T) {
	// RFC 7748 section 6.1, Alice's key pair.
	priv, _ := hex.DecodeString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	want := "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
	var k Key
	copy(k[:], priv)
	if got := k.PublicKey().hex(); got != want {
		t.Fatalf("public key %s, want %s", got, want)
	}
}

func TestGeneratePrivateKey(t *testing.T) {
	a, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || a.IsZero() {
		t.Fatal("keys not random")
	}
	if a[0]&7 != 0 || a[31]&128 != 0 || a[31]&64 == 0 {
		t.Fatalf("key not clamped: %x", a)
	}
	if a.PublicKey() == b.PublicKey() {
		t.Fatal("public keys equal")
	}
}

func TestParseKey(t *testing.T) {
	k, _ := GeneratePrivateKey()
	tests := []struct {
		name    string
		in      string
		want    Key
		wantErr string
	}{
		{name: "round trip", in: k.String(), want: k},
		{name: "key file with newline", in: k.String() + "\n", want: k},
		{name: "empty", in: "  \n", wantErr: "empty"},
		{name: "not base64", in: "!!!!", wantErr: "base64"},
		{name: "short", in: "AAAA", wantErr: "bytes"},
		{name: "long", in: k.String()[:43] + "AAAA=", wantErr: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKey(tt.in)
			if tt.want.IsZero() {
				if err == nil {
					t.Fatalf("parsed %q", tt.in)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q does not mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
	var u Key
	if err := u.UnmarshalText([]byte(k.String())); err != nil || u != k {
		t.Fatalf("UnmarshalText: %v", err)
	}
}

func FuzzParseKey(f *testing.F) {
	k, _ := GeneratePrivateKey()
	f.Add(k.String())
	f.Add("")
	f.Add("AAAA")
	f.Add(strings.Repeat("A", 44))
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			return
		}
		again, err := ParseKey(k.String())
		if err != nil || again != k {
			t.Fatalf("round trip of %q: %v", s, err)
		}
	})
}

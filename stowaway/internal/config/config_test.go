package config

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/netip"
	"strings"
	"testing"

	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"gefyra.dev/gefyra/internal/wgnet"
)

func pemOf(t testing.TB, typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func pkix(t testing.TB, k any) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(t, "PUBLIC KEY", der)
}

func TestCompile(t *testing.T) {
	k1, _ := wgnet.GeneratePrivateKey()
	k2, _ := wgnet.GeneratePrivateKey()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	p1 := Peer{Name: "alice", PublicKey: k1.PublicKey(), Address: netip.MustParseAddr("10.122.0.2")}
	p2 := Peer{Name: "bob", PublicKey: k2.PublicKey(), Address: netip.MustParseAddr("10.122.0.3")}
	good := Config{
		Peers:          []Peer{p1, p2},
		Bridges:        []Bridge{{Name: "ns/b1", Peer: "alice", Ports: []Port{{Target: 8155}, {Target: 80, PeerPort: 8080}}}},
		CredentialKeys: []string{pkix(t, edPub)},
	}
	with := func(f func(c *Config)) Config {
		b, _ := json.Marshal(good)
		c, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "good", cfg: good},
		{name: "empty", cfg: Config{}},
		{name: "peer without name", cfg: with(func(c *Config) { c.Peers[0].Name = "" }), wantErr: "no name"},
		{name: "duplicate peer", cfg: with(func(c *Config) { c.Peers[1].Name = "alice" }), wantErr: "twice"},
		{name: "peer without key", cfg: with(func(c *Config) { c.Peers[0].PublicKey = wgnet.Key{} }), wantErr: "no public key"},
		{name: "shared key", cfg: with(func(c *Config) { c.Peers[1].PublicKey = c.Peers[0].PublicKey }), wantErr: "share a public key"},
		{name: "no address", cfg: with(func(c *Config) { c.Peers[0].Address = netip.Addr{} }), wantErr: "tunnel address"},
		{name: "shared address", cfg: with(func(c *Config) { c.Peers[1].Address = c.Peers[0].Address }), wantErr: "share tunnel address"},
		{name: "bad bridge name", cfg: with(func(c *Config) { c.Bridges[0].Name = "nonamespace" }), wantErr: "namespace/name"},
		{name: "duplicate bridge", cfg: with(func(c *Config) { c.Bridges = append(c.Bridges, c.Bridges[0]) }), wantErr: "twice"},
		{name: "bridge without peer", cfg: with(func(c *Config) { c.Bridges[0].Peer = "" }), wantErr: "names no peer"},
		{name: "port 0", cfg: with(func(c *Config) { c.Bridges[0].Ports[0].Target = 0 }), wantErr: "port 0"},
		{name: "duplicate port", cfg: with(func(c *Config) { c.Bridges[0].Ports[1].Target = 8155 }), wantErr: "twice"},
		{name: "bad key", cfg: with(func(c *Config) { c.CredentialKeys = []string{"junk"} }), wantErr: "no PEM block"},
		{name: "dangling peer is kept", cfg: with(func(c *Config) { c.Bridges[0].Peer = "carol" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.cfg.Compile()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c == nil {
				t.Fatal("nil result")
			}
		})
	}

	c, err := good.Compile()
	if err != nil {
		t.Fatal(err)
	}
	lookups := []struct {
		name              string
		bridge            string
		port              uint16
		wantFound, wantOK bool
		wantPeer          string
		wantPort          uint16
	}{
		{name: "same port", bridge: "ns/b1", port: 8155, wantFound: true, wantOK: true, wantPeer: "alice", wantPort: 8155},
		{name: "mapped port", bridge: "ns/b1", port: 80, wantFound: true, wantOK: true, wantPeer: "alice", wantPort: 8080},
		{name: "port not allowed", bridge: "ns/b1", port: 8080, wantFound: true},
		{name: "no bridge", bridge: "ns/b2", port: 8155},
	}
	for _, tt := range lookups {
		t.Run("lookup "+tt.name, func(t *testing.T) {
			r, found, ok := c.Lookup(tt.bridge, tt.port)
			if found != tt.wantFound || ok != tt.wantOK {
				t.Fatalf("found=%v ok=%v", found, ok)
			}
			if ok && (r.Peer.Name != tt.wantPeer || r.Port != tt.wantPort) {
				t.Fatalf("route %+v", r)
			}
		})
	}
}

func TestParse(t *testing.T) {
	k, _ := wgnet.GeneratePrivateKey()
	doc := `{"peers":[{"name":"alice","publicKey":"` + k.PublicKey().String() + `","address":"10.122.0.2"}],
	         "bridges":[{"name":"ns/b1","peer":"alice","ports":[{"target":8155}]}],"credentialKeys":[]}`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if c.Peers[0].PublicKey != k.PublicKey() || c.Peers[0].Address != netip.MustParseAddr("10.122.0.2") || c.Bridges[0].Ports[0].Target != 8155 {
		t.Fatalf("parsed %+v", c)
	}
	bad := []struct{ name, doc string }{
		{name: "unknown field", doc: `{"peer":[]}`},
		{name: "bad key", doc: `{"peers":[{"name":"a","publicKey":"xyz"}]}`},
		{name: "bad address", doc: `{"peers":[{"name":"a","address":"10.0.0.300"}]}`},
		{name: "port out of range", doc: `{"bridges":[{"ports":[{"target":70000}]}]}`},
		{name: "trailing", doc: `{} {}`},
		{name: "not json", doc: `peers: []`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.doc)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"peers":[{"name":"alice","publicKey":"` + strings.Repeat("A", 43) + `=","address":"10.122.0.2"}],"bridges":[{"name":"ns/b1","peer":"alice","ports":[{"target":8155,"peerPort":1}]}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"credentialKeys":["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		cc, err := c.Compile()
		if err != nil {
			return
		}
		// A compiled config survives a JSON round trip unchanged.
		out, err := json.Marshal(cc.Config)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if _, err := again.Compile(); err != nil {
			t.Fatalf("re-compile of %s: %v", out, err)
		}
	})
}

func TestParsePublicKey(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	smallRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "rsa pkix", in: pkix(t, &rsaKey.PublicKey)},
		{name: "rsa pkcs1", in: pemOf(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey))},
		{name: "ed25519", in: pkix(t, edPub)},
		{name: "small rsa", in: pkix(t, &smallRSA.PublicKey), wantErr: "at least 2048"},
		{name: "ecdsa", in: pkix(t, &ecKey.PublicKey), wantErr: "want RSA or Ed25519"},
		{name: "private key block", in: pemOf(t, "PRIVATE KEY", []byte{1}), wantErr: "want PUBLIC KEY"},
		{name: "two blocks", in: pkix(t, edPub) + pkix(t, edPub), wantErr: "after the PEM block"},
		{name: "garbage der", in: pemOf(t, "PUBLIC KEY", []byte{1, 2, 3}), wantErr: "asn1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePublicKey([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestResourcesRoundTrip(t *testing.T) {
	k1, _ := wgnet.GeneratePrivateKey()
	k2, _ := wgnet.GeneratePrivateKey()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	alice := Config{
		Peers:   []Peer{{Name: "alice", PublicKey: k1.PublicKey(), Address: netip.MustParseAddr("10.122.0.2")}},
		Bridges: []Bridge{{Name: "ns/alice", Peer: "alice", Ports: []Port{{Target: 8155}, {Target: 80, PeerPort: 8080}}}},
	}
	bob := Config{Peers: []Peer{{Name: "bob", PublicKey: k2.PublicKey(), Address: netip.MustParseAddr("10.122.0.3")}}}
	keys := Config{CredentialKeys: []string{pkix(t, edPub)}}
	var msgs []proto.Message
	for name, c := range map[string]Config{"client/bob": bob, "stowaway": keys, "client/alice": alice} {
		r, err := ToResource(name, c)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, r)
	}
	got, err := FromResources(msgs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := got.Compile(); err != nil {
		t.Fatal(err)
	}
	// Name order: client/alice, client/bob, stowaway.
	if len(got.Peers) != 2 || got.Peers[0].Name != "alice" || got.Peers[1].Name != "bob" ||
		len(got.Bridges) != 1 || got.Bridges[0].Ports[1] != (Port{Target: 80, PeerPort: 8080}) ||
		len(got.CredentialKeys) != 1 || got.CredentialKeys[0] != keys.CredentialKeys[0] ||
		got.Peers[0].PublicKey != k1.PublicKey() || got.Peers[1].Address != netip.MustParseAddr("10.122.0.3") {
		t.Fatalf("merged %+v", got)
	}

	bad := []struct {
		name string
		msgs []proto.Message
	}{
		{name: "wrong type", msgs: []proto.Message{&structpb.Struct{}}},
		{name: "unknown field", msgs: []proto.Message{&runtimev3.Runtime{Name: "x", Layer: mustStruct(t, map[string]any{"peer": []any{}})}}},
		{name: "bad key", msgs: []proto.Message{&runtimev3.Runtime{Name: "x", Layer: mustStruct(t, map[string]any{"peers": []any{map[string]any{"name": "a", "publicKey": "nope"}}})}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := FromResources(tt.msgs); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if c, err := FromResources(nil); err != nil || len(c.Peers) != 0 {
		t.Fatalf("no resources: %+v, %v", c, err)
	}
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseUsers(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr bool
	}{
		{name: "default", in: "john@gefyra.dev:john@gefyra.dev", want: []string{"john@gefyra.dev"}},
		{name: "two, spaces, password with colon", in: " a@x:p:q , b@x:r ,", want: []string{"a@x", "b@x"}},
		{name: "empty", in: " , ", wantErr: true},
		{name: "no password", in: "a@x", wantErr: true},
		{name: "empty password", in: "a@x:", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			users, err := parseUsers(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, users %v", users)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, u := range users {
				names = append(names, u.Username)
				if u.Email != u.Username || u.Password == "" {
					t.Errorf("user %+v", u)
				}
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("users %v, want %v", names, tc.want)
			}
		})
	}
	if u, _ := parseUsers("a@x:p:q"); u[0].Password != "p:q" {
		t.Errorf("password %q, want p:q", u[0].Password)
	}
}

func TestReadKey(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(rk)
	ec8, _ := x509.MarshalPKCS8PrivateKey(ek)
	dir := t.TempDir()
	tests := []struct {
		name    string
		content []byte
		wantErr string
	}{
		{name: "pkcs1", content: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})},
		{name: "pkcs8", content: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})},
		{name: "ec", content: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ec8}), wantErr: "not an RSA key"},
		{name: "not pem", content: []byte("hello"), wantErr: "no PEM block"},
		{name: "garbage der", content: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), wantErr: "asn1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.WriteFile(p, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := readKey(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || k.N.Cmp(rk.N) != 0 {
				t.Fatalf("key %v, err %v", k, err)
			}
		})
	}
	if _, err := readKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := map[string]string{
		"OIDC_LISTEN":        addr,
		"OIDC_ISSUER":        "http://" + addr,
		"OIDC_CLIENT_SECRET": "s",
		"OIDC_REDIRECT_URIS": "http://127.0.0.1:4180/oauth2/callback, http://10.96.100.20:8080/oauth2/callback",
		"LOG_FORMAT":         "json",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, nil, func(k string) string { return env[k] }, io.Discard) }()
	var doc struct{ Issuer string }
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/.well-known/openid-configuration")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&doc)
			resp.Body.Close()
			if err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("provider not up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if doc.Issuer != "http://"+addr {
		t.Fatalf("issuer %q", doc.Issuer)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRunErrors(t *testing.T) {
	base := map[string]string{"OIDC_CLIENT_SECRET": "s", "OIDC_REDIRECT_URIS": "http://127.0.0.1/cb", "OIDC_LISTEN": "127.0.0.1:0"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "no secret", env: map[string]string{"OIDC_REDIRECT_URIS": "http://x/cb"}, wantErr: "secret"},
		{name: "no redirect", env: map[string]string{"OIDC_CLIENT_SECRET": "s"}, wantErr: "redirect"},
		{name: "bad users", args: []string{"-users", "nopassword"}, env: base, wantErr: "username:password"},
		{name: "bad log format", args: []string{"-log-format", "xml"}, env: base, wantErr: "log format"},
		{name: "extra argument", args: []string{"serve"}, env: base, wantErr: "unexpected"},
		{name: "bad issuer", args: []string{"-issuer", "10.96.100.10:8080"}, env: base, wantErr: "issuer"},
		{name: "missing key file", args: []string{"-signing-key", "/nonexistent.pem"}, env: base, wantErr: "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzParseUsers(f *testing.F) {
	f.Add("john@gefyra.dev:john@gefyra.dev")
	f.Add("a:b:c,,d:e")
	f.Add(":")
	f.Fuzz(func(t *testing.T, s string) {
		users, err := parseUsers(s)
		if err != nil {
			return
		}
		var pairs []string
		for _, u := range users {
			if u.Username == "" || u.Password == "" || strings.ContainsAny(u.Username, ":,") {
				t.Fatalf("bad user %+v from %q", u, s)
			}
			pairs = append(pairs, u.Username+":"+u.Password)
		}
		again, err := parseUsers(strings.Join(pairs, ","))
		if err != nil || len(again) != len(users) {
			t.Fatalf("%q does not round-trip: %v %v", s, again, err)
		}
	})
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
	// otherKey signs tokens the JWKS does not know.
	otherKey *rsa.PrivateKey
)

func keys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		if testKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return testKey, otherKey
}

func sign(t testing.TB, key *rsa.PrivateKey, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// keycloakClaims are the claims of an access token as Keycloak issues them:
// the address is in the lowercase "email" claim.
func keycloakClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":                "http://keycloak.127.0.0.1.nip.io:8080/realms/gefyra",
		"sub":                "2b1d9c1e-0000-4000-8000-000000000001",
		"exp":                now.Add(5 * time.Minute).Unix(),
		"iat":                now.Unix(),
		"email":              "john@gefyra.dev",
		"email_verified":     true,
		"preferred_username": "john@gefyra.dev",
	}
}

func jwksJSON(kid string, pub *rsa.PublicKey) string {
	return fmt.Sprintf(`{"keys":[{"kty":"RSA","kid":%q,"use":"sig","alg":"RS256","n":%q,"e":%q}]}`,
		kid, base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()))
}

type response struct {
	status int
	ctype  string
	body   string
}

func do(t *testing.T, srv *httptest.Server, method, path, token string) response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Forwarded-Access-Token", token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: string(body)}
}

func newServer(t *testing.T, claim string, ks *keySet) (*httptest.Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	h := &handler{log: slog.New(slog.NewTextHandler(logs, nil)), emailClaim: claim, keys: ks}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, logs
}

func TestBuggyDefault(t *testing.T) {
	if emailClaim != "Email" {
		t.Fatalf("emailClaim = %q: the shipped backend must carry the tutorial's bug (claim \"Email\")", emailClaim)
	}
}

func TestAPI(t *testing.T) {
	priv, _ := keys(t)
	keycloakToken := sign(t, priv, "k1", keycloakClaims())
	capitalised := keycloakClaims()
	capitalised["Email"] = "jane@gefyra.dev"
	capitalisedToken := sign(t, priv, "k1", capitalised)
	tests := []struct {
		name       string
		claim      string
		method     string
		path       string
		token      string
		wantStatus int
		wantCType  string
		wantBody   string
		wantLog    []string
	}{
		{name: "root", claim: emailClaim, method: "GET", path: "/", wantStatus: 200, wantCType: "application/json", wantBody: `{"Hello":"World"}`},
		{name: "item without token", claim: emailClaim, method: "GET", path: "/items/123", wantStatus: 200, wantCType: "application/json", wantBody: `{"item_id":123,"Email":"not given"}`},
		{name: "negative item", claim: emailClaim, method: "GET", path: "/items/-7", wantStatus: 200, wantBody: `{"item_id":-7,"Email":"not given"}`},
		{name: "bad item id", claim: emailClaim, method: "GET", path: "/items/abc", wantStatus: 422, wantCType: "application/json",
			wantBody: `{"detail":[{"type":"int_parsing","loc":["path","item_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"}]}`,
			wantLog:  []string{"invalid item id"}},
		{name: "item id overflow", claim: emailClaim, method: "GET", path: "/items/99999999999999999999", wantStatus: 422, wantLog: []string{"invalid item id"}},
		{name: "bug: keycloak token", claim: "Email", method: "GET", path: "/items/123", token: keycloakToken, wantStatus: 500,
			wantCType: "text/plain; charset=utf-8", wantBody: "Internal Server Error",
			wantLog: []string{"level=ERROR", `msg="claim missing from access token"`, "claim=Email", `"KeyError: 'Email'"`}},
		{name: "bug: token with capitalised claim", claim: "Email", method: "GET", path: "/items/123", token: capitalisedToken, wantStatus: 200,
			wantBody: `{"item_id":123,"Email":"jane@gefyra.dev"}`},
		{name: "fixed: keycloak token", claim: "email", method: "GET", path: "/items/123", token: keycloakToken, wantStatus: 200,
			wantCType: "application/json", wantBody: `{"item_id":123,"Email":"john@gefyra.dev"}`},
		{name: "garbled token", claim: "email", method: "GET", path: "/items/1", token: "not.a.jwt", wantStatus: 401,
			wantBody: `{"detail":"invalid access token"}`, wantLog: []string{"level=WARN", "invalid access token"}},
		{name: "oversized token", claim: "email", method: "GET", path: "/items/1", token: strings.Repeat("a", maxTokenBytes+1), wantStatus: 431,
			wantLog: []string{"access token too large"}},
		{name: "unknown path", claim: emailClaim, method: "GET", path: "/nope", wantStatus: 404, wantBody: `{"detail":"Not Found"}`},
		{name: "nested item path", claim: emailClaim, method: "GET", path: "/items/1/2", wantStatus: 404},
		{name: "empty item id", claim: emailClaim, method: "GET", path: "/items/", wantStatus: 404},
		{name: "wrong method", claim: emailClaim, method: "POST", path: "/", wantStatus: 405, wantBody: `{"detail":"Method Not Allowed"}`},
		{name: "wrong method on item", claim: emailClaim, method: "DELETE", path: "/items/1", wantStatus: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, logs := newServer(t, tc.claim, nil)
			got := do(t, srv, tc.method, tc.path, tc.token)
			if got.status != tc.wantStatus {
				t.Errorf("status = %d, want %d (body %q)", got.status, tc.wantStatus, got.body)
			}
			if tc.wantCType != "" && got.ctype != tc.wantCType {
				t.Errorf("content type = %q, want %q", got.ctype, tc.wantCType)
			}
			if tc.wantBody != "" && got.body != tc.wantBody {
				t.Errorf("body = %q, want %q", got.body, tc.wantBody)
			}
			srv.Close() // flushes the access log line
			for _, want := range tc.wantLog {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
			if !strings.Contains(logs.String(), fmt.Sprintf(" %d ", tc.wantStatus)) {
				t.Errorf("no access log line with status %d:\n%s", tc.wantStatus, logs.String())
			}
		})
	}
}

func TestVerifiedTokens(t *testing.T) {
	priv, other := keys(t)
	var fetches int
	var mu sync.Mutex
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fetches++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, jwksJSON("k1", &priv.PublicKey))
	}))
	defer jwks.Close()
	expired := keycloakClaims()
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	noExp := keycloakClaims()
	delete(noExp, "exp")
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, keycloakClaims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, keycloakClaims())
	hs.Header["kid"] = "k1"
	hmacToken, err := hs.SignedString([]byte(jwksJSON("k1", &priv.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		token      string
		wantStatus int
	}{
		{name: "valid", token: sign(t, priv, "k1", keycloakClaims()), wantStatus: 200},
		{name: "valid without kid", token: sign(t, priv, "", keycloakClaims()), wantStatus: 200},
		{name: "signed by another key", token: sign(t, other, "k1", keycloakClaims()), wantStatus: 401},
		{name: "unknown key id", token: sign(t, other, "k2", keycloakClaims()), wantStatus: 401},
		{name: "expired", token: sign(t, priv, "k1", expired), wantStatus: 401},
		{name: "no expiry", token: sign(t, priv, "k1", noExp), wantStatus: 401},
		{name: "unsigned", token: none, wantStatus: 401},
		{name: "hmac with the public key", token: hmacToken, wantStatus: 401},
	}
	ks, err := newKeySet(jwks.URL, jwks.Client())
	if err != nil {
		t.Fatal(err)
	}
	srv, logs := newServer(t, "email", ks)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := do(t, srv, "GET", "/items/5", tc.token)
			if got.status != tc.wantStatus {
				t.Errorf("status = %d, want %d (body %q)\n%s", got.status, tc.wantStatus, got.body, logs.String())
			}
			if tc.wantStatus == 200 && got.body != `{"item_id":5,"Email":"john@gefyra.dev"}` {
				t.Errorf("body = %q", got.body)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if fetches != 1 {
		t.Errorf("JWKS fetched %d times, want once (unknown key IDs must not refetch within %v)", fetches, refetchMinInterval)
	}
}

func TestKeyRotation(t *testing.T) {
	priv, other := keys(t)
	var mu sync.Mutex
	current := jwksJSON("k1", &priv.PublicKey)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		io.WriteString(w, current)
	}))
	defer jwks.Close()
	ks, err := newKeySet(jwks.URL, jwks.Client())
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := newServer(t, "email", ks)
	if got := do(t, srv, "GET", "/items/1", sign(t, priv, "k1", keycloakClaims())); got.status != 200 {
		t.Fatalf("before rotation: status %d", got.status)
	}
	mu.Lock()
	current = jwksJSON("k2", &other.PublicKey)
	mu.Unlock()
	ks.mu.Lock()
	ks.attempted = time.Time{} // as if the refetch interval had passed
	ks.mu.Unlock()
	if got := do(t, srv, "GET", "/items/1", sign(t, other, "k2", keycloakClaims())); got.status != 200 {
		t.Fatalf("after rotation: status %d, want 200", got.status)
	}
}

func TestJWKSUnreachable(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	ks, err := newKeySet(url, &http.Client{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := keys(t)
	srv, logs := newServer(t, "email", ks)
	if got := do(t, srv, "GET", "/items/1", sign(t, priv, "k1", keycloakClaims())); got.status != 401 {
		t.Fatalf("status %d, want 401", got.status)
	}
	if !strings.Contains(logs.String(), "fetch JWKS") {
		t.Errorf("log does not name the JWKS failure:\n%s", logs.String())
	}
}

func TestParseJWKS(t *testing.T) {
	priv, _ := keys(t)
	tests := []struct {
		name    string
		body    string
		wantErr string
		wantKID string
	}{
		{name: "valid", body: jwksJSON("a", &priv.PublicKey), wantKID: "a"},
		{name: "not json", body: "<html>", wantErr: "parse JWKS"},
		{name: "empty", body: `{"keys":[]}`, wantErr: "no RSA signing keys"},
		{name: "only EC", body: `{"keys":[{"kty":"EC","kid":"x","crv":"P-256","x":"AA","y":"AA"}]}`, wantErr: "no RSA signing keys"},
		{name: "encryption key skipped", body: `{"keys":[{"kty":"RSA","kid":"x","use":"enc","n":"AQAB","e":"AQAB"}]}`, wantErr: "no RSA signing keys"},
		{name: "bad modulus", body: `{"keys":[{"kty":"RSA","kid":"x","n":"!!","e":"AQAB"}]}`, wantErr: "bad modulus"},
		{name: "even exponent", body: `{"keys":[{"kty":"RSA","kid":"x","n":"AQAB","e":"Ag"}]}`, wantErr: "bad exponent"},
		{name: "huge exponent", body: `{"keys":[{"kty":"RSA","kid":"x","n":"AQAB","e":"AQIDBAU"}]}`, wantErr: "bad exponent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := parseJWKS([]byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k := keys[tc.wantKID]; k == nil || k.N.Cmp(priv.N) != 0 || k.E != priv.E {
				t.Fatalf("key %q not parsed correctly: %v", tc.wantKID, keys)
			}
		})
	}
}

func TestNewKeySetRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x/keys", "/relative", "http://"} {
		if _, err := newKeySet(u, http.DefaultClient); err == nil {
			t.Errorf("newKeySet(%q) succeeded", u)
		}
	}
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-host", "127.0.0.1", "-port", "0"}, func(string) string { return "" }, pw)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var addr string
	for sc.Scan() {
		if _, after, ok := strings.Cut(sc.Text(), " addr="); ok {
			addr, _, _ = strings.Cut(after, " ")
			break
		}
	}
	if addr == "" {
		t.Fatalf("no listen address logged: %v", sc.Err())
	}
	go io.Copy(io.Discard, pr)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != `{"Hello":"World"}` {
		t.Fatalf("body %q", body)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{name: "unknown flag", args: []string{"-nope"}, wantErr: "flag provided but not defined"},
		{name: "extra argument", args: []string{"main:app"}, wantErr: "unexpected arguments"},
		{name: "bad log format", args: []string{"-log-format", "xml"}, wantErr: "unknown log format"},
		{name: "bad JWKS URL", env: map[string]string{"JWKS_URL": "keys.json"}, wantErr: "JWKS URL"},
		{name: "named port", env: map[string]string{"PORT": "http"}, wantErr: "want a number"},
		{name: "port out of range", args: []string{"-port", "65536"}, wantErr: "want a number"},
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

func FuzzParseItemID(f *testing.F) {
	for _, s := range []string{"123", "-1", "abc", "", " 7", "1e3", "0x10", "99999999999999999999", "+5", "١٢٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseItemID(s)
		if err != nil {
			var v validationError
			b, merr := json.Marshal(err)
			if merr != nil || json.Unmarshal(b, &v) != nil || len(v.Detail) != 1 || (utf8.ValidString(s) && v.Detail[0].Input != s) {
				t.Fatalf("error for %q does not round-trip as FastAPI JSON: %s", s, b)
			}
			return
		}
		if got, _ := parseItemID(fmt.Sprint(n)); got != n {
			t.Fatalf("parseItemID(%q) = %d does not round-trip", s, n)
		}
	})
}

func FuzzToken(f *testing.F) {
	priv, _ := keys(f)
	f.Add(sign(f, priv, "k1", keycloakClaims()))
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJFbWFpbCI6MX0.")
	f.Add("eyJhbGciOiJSUzI1NiJ9.bnVsbA.x")
	f.Add("....")
	logs := &syncBuffer{}
	h := &handler{log: slog.New(slog.NewTextHandler(logs, nil)), emailClaim: "email"}
	f.Fuzz(func(t *testing.T, token string) {
		want := http.StatusUnauthorized
		if claims, err := h.decode(context.Background(), token); err == nil {
			want = http.StatusInternalServerError
			if _, ok := claims["email"]; ok {
				want = http.StatusOK
			}
		}
		switch {
		case token == "":
			want = http.StatusOK // no token: "not given"
		case len(token) > maxTokenBytes:
			want = http.StatusRequestHeaderFieldsTooLarge
		}
		req := httptest.NewRequest("GET", "/items/1", nil)
		req.Header["X-Forwarded-Access-Token"] = []string{token}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Fatalf("status %d, want %d for token %q", rec.Code, want, token)
		}
		if strings.Contains(logs.String(), "panicked") {
			t.Fatalf("handler panicked on token %q:\n%s", token, logs.String())
		}
	})
}

func FuzzParseJWKS(f *testing.F) {
	priv, _ := keys(f)
	f.Add([]byte(jwksJSON("k", &priv.PublicKey)))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		keys, err := parseJWKS(body)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range keys {
			if k.E < 3 || k.N.Sign() <= 0 {
				t.Fatalf("accepted bad key %v", k)
			}
		}
	})
}

func BenchmarkItem(b *testing.B) {
	priv, _ := keys(b)
	token := sign(b, priv, "k1", keycloakClaims())
	h := &handler{log: slog.New(slog.DiscardHandler), emailClaim: "email"}
	req := httptest.NewRequest("GET", "/items/123", nil)
	req.Header.Set("X-Forwarded-Access-Token", token)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

package provider

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/zitadel/oidc/v3/pkg/oidc"
)

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

const (
	clientID     = "oauth2-demo"
	clientSecret = "s3cret"
	redirectURI  = "http://127.0.0.1:4180/oauth2/callback"
)

type testProvider struct {
	issuer string
	logs   *syncBuffer
	client *http.Client // does not follow redirects
}

func start(t *testing.T, mutate func(*Config)) *testProvider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	logs := &syncBuffer{}
	cfg := Config{
		Issuer:       issuer,
		ClientID:     clientID,
		ClientSecret: clientSecret,
		RedirectURIs: []string{redirectURI, "http://10.96.100.20:*/oauth2/callback"},
		Users:        []User{DefaultUser},
		Logger:       slog.New(slog.NewTextHandler(logs, nil)),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &testProvider{
		issuer: issuer,
		logs:   logs,
		client: &http.Client{
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

func (tp *testProvider) get(t *testing.T, u string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return tp.do(t, req)
}

func (tp *testProvider) post(t *testing.T, u string, form url.Values, user, pass string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	return tp.do(t, req)
}

func (tp *testProvider) do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := tp.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

type discovery struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	UserinfoEndpoint      string   `json:"userinfo_endpoint"`
	JWKSURI               string   `json:"jwks_uri"`
	CodeChallengeMethods  []string `json:"code_challenge_methods_supported"`
	SigningAlgs           []string `json:"id_token_signing_alg_values_supported"`
}

func (tp *testProvider) discover(t *testing.T) discovery {
	t.Helper()
	resp, body := tp.get(t, tp.issuer+"/.well-known/openid-configuration", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("discovery: %d %s", resp.StatusCode, body)
	}
	var d discovery
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func pkce() (verifier, challenge string) {
	verifier = "this-is-a-long-enough-code-verifier-for-pkce-0123456789"
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// authorize starts a login and returns the login form's URL.
func (tp *testProvider) authorize(t *testing.T, d discovery, redirect, challenge string) string {
	t.Helper()
	q := url.Values{
		"client_id":     {clientID},
		"redirect_uri":  {redirect},
		"response_type": {"code"},
		"scope":         {"openid email profile"},
		"state":         {"st4te"},
		"nonce":         {"n0nce"},
	}
	if challenge != "" {
		q.Set("code_challenge", challenge)
		q.Set("code_challenge_method", "S256")
	}
	resp, body := tp.get(t, d.AuthorizationEndpoint+"?"+q.Encode(), nil)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, tp.issuer+"/login?authRequestID=") {
		t.Fatalf("authorize redirected to %q, want the login form", loc)
	}
	return loc
}

// login submits the form and returns the code delivered to the redirect URI.
func (tp *testProvider) login(t *testing.T, loginURL, user, password string) (code string) {
	t.Helper()
	resp, body := tp.get(t, loginURL, nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="kc-form-login"`) {
		t.Fatalf("login page: %d %s", resp.StatusCode, body)
	}
	u, _ := url.Parse(loginURL)
	id := u.Query().Get("authRequestID")
	resp, body = tp.post(t, tp.issuer+"/login", url.Values{"authRequestID": {id}, "username": {user}, "password": {password}}, "", "")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	resp, body = tp.get(t, resp.Header.Get("Location"), nil)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if back.Query().Get("state") != "st4te" || back.Query().Get("code") == "" {
		t.Fatalf("redirect back to %s lacks state or code", back)
	}
	return back.Query().Get("code")
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	IDToken     string `json:"id_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Error       string `json:"error"`
}

func (tp *testProvider) exchange(t *testing.T, d discovery, code, redirect, verifier string) (int, tokenResponse) {
	t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	resp, body := tp.post(t, d.TokenEndpoint, form, clientID, clientSecret)
	var tr tokenResponse
	if err := json.Unmarshal([]byte(body), &tr); err != nil {
		t.Fatalf("token response %q: %v", body, err)
	}
	return resp.StatusCode, tr
}

func (tp *testProvider) verify(t *testing.T, d discovery, token string) jwt.MapClaims {
	t.Helper()
	_, body := tp.get(t, d.JWKSURI, nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(tp.issuer), jwt.WithExpirationRequired()).
		ParseWithClaims(token, claims, func(tok *jwt.Token) (any, error) {
			kid, _ := tok.Header["kid"].(string)
			keys := set.Key(kid)
			if len(keys) != 1 {
				return nil, errors.New("kid not in JWKS")
			}
			return keys[0].Key, nil
		})
	if err != nil {
		t.Fatalf("verify %s: %v", token, err)
	}
	return claims
}

func TestDiscovery(t *testing.T) {
	tp := start(t, nil)
	d := tp.discover(t)
	if d.Issuer != tp.issuer {
		t.Errorf("issuer %q, want %q", d.Issuer, tp.issuer)
	}
	for _, e := range []string{d.AuthorizationEndpoint, d.TokenEndpoint, d.UserinfoEndpoint, d.JWKSURI} {
		if !strings.HasPrefix(e, tp.issuer+"/") {
			t.Errorf("endpoint %q not under the issuer", e)
		}
	}
	if !strings.Contains(strings.Join(d.CodeChallengeMethods, ","), "S256") {
		t.Errorf("S256 PKCE not advertised: %v", d.CodeChallengeMethods)
	}
	if strings.Join(d.SigningAlgs, ",") != "RS256" {
		t.Errorf("signing algorithms %v, want RS256", d.SigningAlgs)
	}
	if resp, _ := tp.get(t, tp.issuer+"/healthz", nil); resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

func TestCodeFlow(t *testing.T) {
	tests := []struct {
		name     string
		redirect string
		pkce     bool
	}{
		{name: "exact redirect, PKCE", redirect: redirectURI, pkce: true},
		{name: "glob redirect, no PKCE", redirect: "http://10.96.100.20:8080/oauth2/callback"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tp := start(t, nil)
			d := tp.discover(t)
			verifier, challenge := "", ""
			if tc.pkce {
				verifier, challenge = pkce()
			}
			code := tp.login(t, tp.authorize(t, d, tc.redirect, challenge), "john@gefyra.dev", "john@gefyra.dev")
			status, tr := tp.exchange(t, d, code, tc.redirect, verifier)
			if status != 200 || tr.AccessToken == "" || tr.IDToken == "" {
				t.Fatalf("token: %d %+v", status, tr)
			}
			if !strings.EqualFold(tr.TokenType, "bearer") || tr.ExpiresIn <= 0 {
				t.Errorf("token type %q, expires in %d", tr.TokenType, tr.ExpiresIn)
			}
			at := tp.verify(t, d, tr.AccessToken)
			want := map[string]any{"email": "john@gefyra.dev", "email_verified": true, "preferred_username": "john@gefyra.dev", "iss": tp.issuer}
			for k, v := range want {
				if at[k] != v {
					t.Errorf("access token claim %s = %v, want %v (claims %v)", k, at[k], v, at)
				}
			}
			if _, ok := at["Email"]; ok {
				t.Error("access token has a capitalised Email claim; the tutorial's bug needs Keycloak's lowercase one only")
			}
			idt := tp.verify(t, d, tr.IDToken)
			if idt["email"] != "john@gefyra.dev" || idt["nonce"] != "n0nce" || idt["aud"] == nil {
				t.Errorf("ID token claims %v", idt)
			}
			if sub := at["sub"]; sub == nil || sub != idt["sub"] {
				t.Errorf("subjects differ: access %v, ID %v", sub, idt["sub"])
			}
			resp, body := tp.get(t, d.UserinfoEndpoint, http.Header{"Authorization": {"Bearer " + tr.AccessToken}})
			if resp.StatusCode != 200 || !strings.Contains(body, `"email":"john@gefyra.dev"`) {
				t.Errorf("userinfo: %d %s", resp.StatusCode, body)
			}
			// A code is good for one exchange only.
			if status, tr := tp.exchange(t, d, code, tc.redirect, verifier); status == 200 {
				t.Errorf("second exchange of a code succeeded: %+v", tr)
			}
		})
	}
}

func TestWrongPassword(t *testing.T) {
	tp := start(t, nil)
	d := tp.discover(t)
	loginURL := tp.authorize(t, d, redirectURI, "")
	u, _ := url.Parse(loginURL)
	id := u.Query().Get("authRequestID")
	tests := []struct {
		name, user, password string
	}{
		{name: "wrong password", user: "john@gefyra.dev", password: "nope"},
		{name: "unknown user", user: "jane@gefyra.dev", password: "john@gefyra.dev"},
		{name: "empty", user: "", password: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := tp.post(t, tp.issuer+"/login", url.Values{"authRequestID": {id}, "username": {tc.user}, "password": {tc.password}}, "", "")
			if resp.StatusCode != 200 || !strings.Contains(body, "Invalid username or password.") || !strings.Contains(body, `id="kc-form-login"`) {
				t.Fatalf("got %d %s, want the form again with a message", resp.StatusCode, body)
			}
		})
	}
	if !strings.Contains(tp.logs.String(), "login failed") {
		t.Errorf("failed logins not logged:\n%s", tp.logs.String())
	}
	// The request survives failed attempts; the right password still works.
	code := tp.login(t, loginURL, "john@gefyra.dev", "john@gefyra.dev")
	if status, tr := tp.exchange(t, d, code, redirectURI, ""); status != 200 {
		t.Fatalf("exchange after failed attempts: %d %+v", status, tr)
	}
}

func TestRejects(t *testing.T) {
	tp := start(t, nil)
	d := tp.discover(t)
	t.Run("unknown login request", func(t *testing.T) {
		resp, body := tp.post(t, tp.issuer+"/login", url.Values{"authRequestID": {"forged"}, "username": {"john@gefyra.dev"}, "password": {"john@gefyra.dev"}}, "", "")
		if resp.StatusCode != 400 || !strings.Contains(body, "expired") {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
		resp, _ = tp.get(t, tp.issuer+"/login?authRequestID=forged", nil)
		if resp.StatusCode != 400 {
			t.Fatalf("GET login for unknown request: %d", resp.StatusCode)
		}
	})
	t.Run("oversized login form", func(t *testing.T) {
		resp, _ := tp.post(t, tp.issuer+"/login", url.Values{"username": {strings.Repeat("x", 1<<20)}}, "", "")
		if resp.StatusCode != 400 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("login method", func(t *testing.T) {
		req, _ := http.NewRequest("DELETE", tp.issuer+"/login", nil)
		if resp, _ := tp.do(t, req); resp.StatusCode != 405 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("unregistered redirect URI", func(t *testing.T) {
		q := url.Values{"client_id": {clientID}, "redirect_uri": {"http://evil.example/cb"}, "response_type": {"code"}, "scope": {"openid"}, "state": {"x"}}
		resp, _ := tp.get(t, d.AuthorizationEndpoint+"?"+q.Encode(), nil)
		if loc := resp.Header.Get("Location"); strings.HasPrefix(loc, "http://evil.example") {
			t.Fatalf("redirected to an unregistered URI: %s", loc)
		}
		if resp.StatusCode < 400 {
			t.Fatalf("got %d, want an error page", resp.StatusCode)
		}
	})
	t.Run("unknown client", func(t *testing.T) {
		q := url.Values{"client_id": {"other"}, "redirect_uri": {redirectURI}, "response_type": {"code"}, "scope": {"openid"}, "state": {"x"}}
		resp, _ := tp.get(t, d.AuthorizationEndpoint+"?"+q.Encode(), nil)
		if resp.StatusCode < 400 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("wrong client secret", func(t *testing.T) {
		code := tp.login(t, tp.authorize(t, d, redirectURI, ""), "john@gefyra.dev", "john@gefyra.dev")
		resp, body := tp.post(t, d.TokenEndpoint, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}}, clientID, "wrong")
		if resp.StatusCode < 400 || strings.Contains(body, "access_token") {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})
	t.Run("PKCE verifier mismatch", func(t *testing.T) {
		_, challenge := pkce()
		code := tp.login(t, tp.authorize(t, d, redirectURI, challenge), "john@gefyra.dev", "john@gefyra.dev")
		if status, tr := tp.exchange(t, d, code, redirectURI, "a-different-verifier-that-is-also-long-enough-000000"); status == 200 {
			t.Fatalf("exchange with a wrong verifier succeeded: %+v", tr)
		}
	})
	t.Run("garbled bearer token", func(t *testing.T) {
		resp, _ := tp.get(t, d.UserinfoEndpoint, http.Header{"Authorization": {"Bearer not.a.token"}})
		if resp.StatusCode < 400 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("refresh grant", func(t *testing.T) {
		resp, body := tp.post(t, d.TokenEndpoint, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, clientID, clientSecret)
		if resp.StatusCode < 400 {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})
}

func TestNewRejectsBadConfig(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	good := func() Config {
		return Config{Issuer: "http://10.96.100.10:8080", ClientID: "c", ClientSecret: "s", RedirectURIs: []string{redirectURI}, Users: []User{DefaultUser}, Logger: log}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{name: "no logger", mutate: func(c *Config) { c.Logger = nil }},
		{name: "relative issuer", mutate: func(c *Config) { c.Issuer = "/oidc" }},
		{name: "issuer with path", mutate: func(c *Config) { c.Issuer = "http://x/realms/gefyra" }},
		{name: "issuer with query", mutate: func(c *Config) { c.Issuer = "http://x/?a=b" }},
		{name: "no secret", mutate: func(c *Config) { c.ClientSecret = "" }},
		{name: "no redirect", mutate: func(c *Config) { c.RedirectURIs = nil }},
		{name: "bad redirect", mutate: func(c *Config) { c.RedirectURIs = []string{"callback"} }},
		{name: "bad redirect pattern", mutate: func(c *Config) { c.RedirectURIs = []string{"http://x/[*"} }},
		{name: "pattern without scheme", mutate: func(c *Config) { c.RedirectURIs = []string{"*/callback"} }},
		{name: "no users", mutate: func(c *Config) { c.Users = nil }},
		{name: "user without password", mutate: func(c *Config) { c.Users = []User{{Username: "a", Email: "a"}} }},
		{name: "duplicate user", mutate: func(c *Config) { c.Users = []User{DefaultUser, DefaultUser} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mutate(&c)
			if _, err := New(c); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("good config: %v", err)
	}
}

func TestPendingRequestsBounded(t *testing.T) {
	s := &storage{client: &client{id: "c"}, now: time.Now, requests: map[string]*authRequest{}, codes: map[string]string{}, tokens: map[string]*accessToken{}}
	for i := range maxPending {
		s.requests[strconv.Itoa(i)] = &authRequest{created: time.Now()}
	}
	if _, err := s.CreateAuthRequest(context.Background(), &oidc.AuthRequest{ClientID: "c", Scopes: []string{"openid"}}, ""); err == nil {
		t.Fatal("auth request accepted beyond the limit")
	}
	for _, r := range s.requests {
		r.created = time.Now().Add(-2 * authRequestTTL)
	}
	if _, err := s.CreateAuthRequest(context.Background(), &oidc.AuthRequest{ClientID: "c", Scopes: []string{"openid"}}, ""); err != nil {
		t.Fatalf("expired requests not pruned: %v", err)
	}
	if len(s.requests) != 1 {
		t.Fatalf("%d requests left, want 1", len(s.requests))
	}
}

// Package provider is a small OpenID Connect provider for the demo, built on
// zitadel/oidc's op package: discovery, JWKS, authorization code flow (with
// PKCE), token, userinfo, introspection and revocation endpoints, and a
// Keycloak-like login form.
//
// Like a Keycloak realm with an e-mail protocol mapper, it issues RS256 JWT
// access tokens that carry the user's address in the lowercase "email" claim
// (with "email_verified" and "preferred_username"), which is what the demo
// backend reads from the X-Forwarded-Access-Token header its oauth2-proxy
// sidecar passes on.
package provider

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// User is an account that can log in.
type User struct {
	Username string // what the login form asks for
	Password string
	Email    string
	Name     string // optional display name
	Subject  string // stable ID; derived from Username when empty
}

// DefaultUser is the tutorial's test user.
var DefaultUser = User{Username: "john@gefyra.dev", Password: "john@gefyra.dev", Email: "john@gefyra.dev", Name: "John Gefyra"}

// Config configures a Provider.
type Config struct {
	// Issuer is the provider's public URL, e.g. http://10.96.100.10:8080.
	// http is allowed (the demo runs without TLS); it must have no path.
	Issuer string
	// ClientID and ClientSecret identify the one confidential client.
	ClientID, ClientSecret string
	// RedirectURIs the client may use; entries with '*' are glob patterns
	// (e.g. http://127.0.0.1:*/oauth2/callback).
	RedirectURIs []string
	// Users who can log in; at least one.
	Users []User
	// SigningKey signs the tokens; nil generates a fresh 2048-bit key.
	SigningKey *rsa.PrivateKey
	// TokenTTL is the lifetime of access and ID tokens; 0 means one hour.
	TokenTTL time.Duration
	// Logger receives one line per request and per login attempt.
	Logger *slog.Logger
}

// Provider is an OpenID Connect provider serving HTTP.
type Provider struct {
	handler http.Handler
	log     *slog.Logger
}

// New validates cfg and builds the provider.
func New(cfg Config) (*Provider, error) {
	if cfg.Logger == nil {
		return nil, errors.New("provider: a logger is required")
	}
	iss, err := url.Parse(cfg.Issuer)
	if err != nil || (iss.Scheme != "http" && iss.Scheme != "https") || iss.Host == "" {
		return nil, fmt.Errorf("issuer %q: want an absolute http(s) URL", cfg.Issuer)
	}
	if (iss.Path != "" && iss.Path != "/") || iss.RawQuery != "" || iss.Fragment != "" || iss.User != nil {
		return nil, fmt.Errorf("issuer %q: want scheme and host only, no path, query or credentials", cfg.Issuer)
	}
	issuer := strings.TrimSuffix(cfg.Issuer, "/")
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("provider: client id and secret are required")
	}
	if len(cfg.RedirectURIs) == 0 {
		return nil, errors.New("provider: at least one redirect URI is required")
	}
	exact, globs := splitRedirects(cfg.RedirectURIs)
	for _, u := range exact {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("redirect URI %q: want an absolute http(s) URL", u)
		}
	}
	for _, g := range globs {
		if !doublestar.ValidatePattern(g) || (!strings.HasPrefix(g, "http://") && !strings.HasPrefix(g, "https://")) {
			return nil, fmt.Errorf("redirect URI pattern %q: want an http(s) URL with glob wildcards", g)
		}
	}
	if len(cfg.Users) == 0 {
		return nil, errors.New("provider: at least one user is required")
	}
	users := map[string]User{}
	for _, u := range cfg.Users {
		if u.Username == "" || u.Password == "" || u.Email == "" {
			return nil, fmt.Errorf("user %q: username, password and email are required", u.Username)
		}
		if _, dup := users[u.Username]; dup {
			return nil, fmt.Errorf("user %q listed twice", u.Username)
		}
		if u.Subject == "" {
			u.Subject = subjectOf(u.Username)
		}
		users[u.Username] = u
	}
	key := cfg.SigningKey
	if key == nil {
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, err
		}
	}
	ttl := cfg.TokenTTL
	if ttl == 0 {
		ttl = time.Hour
	}
	kid := sha256.Sum256(key.PublicKey.N.Bytes())
	st := &storage{
		client: &client{
			id: cfg.ClientID, secret: cfg.ClientSecret,
			redirects: exact, redirectGlobs: globs,
			loginURL:   func(id string) string { return issuer + loginPath + "?" + url.Values{"authRequestID": {id}}.Encode() },
			idTokenTTL: ttl,
		},
		users:    users,
		key:      signingKey{id: hex.EncodeToString(kid[:8]), key: key},
		tokenTTL: ttl,
		now:      time.Now,
		requests: map[string]*authRequest{},
		codes:    map[string]string{},
		tokens:   map[string]*accessToken{},
	}
	var cryptoKey [32]byte
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return nil, err
	}
	opts := []op.Option{}
	if iss.Scheme == "http" {
		opts = append(opts, op.WithAllowInsecure())
	}
	o, err := op.NewProvider(&op.Config{
		CryptoKey:          cryptoKey,
		CodeMethodS256:     true,
		AuthMethodPost:     true,
		SupportedUILocales: []language.Tag{language.English},
		SupportedScopes:    scopes,
		SupportedClaims:    []string{"sub", "iss", "aud", "exp", "iat", "email", "email_verified", "preferred_username", "name"},
	}, st, op.StaticIssuer(issuer), opts...)
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	l := &login{
		store:    st,
		callback: op.AuthCallbackURL(o),
		log:      cfg.Logger,
	}
	interceptor := op.NewIssuerInterceptor(o.IssuerFromRequest)
	mux := http.NewServeMux()
	mux.Handle(loginPath, interceptor.Handler(l))
	mux.Handle("/", o)
	return &Provider{handler: logRequests(cfg.Logger, mux), log: cfg.Logger}, nil
}

// subjectOf derives a stable, opaque subject from a username.
func subjectOf(username string) string {
	h := sha256.Sum256([]byte("gefyra-demo-user:" + username))
	b := h[:16]
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// ServeHTTP serves the provider's endpoints and its login form.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.handler.ServeHTTP(w, r) }

// Run serves HTTP on ln until ctx is done, then shuts down gracefully.
func (p *Provider) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				log.Error("handler panicked", "panic", v, "method", r.Method, "path", r.URL.Path)
				if rec.status == 0 {
					http.Error(rec, "internal server error", http.StatusInternalServerError)
				}
			}
			log.Info("request", "method", r.Method, "path", r.URL.Path, "status", max(rec.status, http.StatusOK), "duration", time.Since(start))
		}()
		next.ServeHTTP(rec, r)
	})
}

// Package main is command oidc: the demo's identity provider: an OpenID Connect provider
// with a Keycloak-like login form that issues RS256 JWT access tokens
// carrying the user's lowercase "email" claim. See package provider.
package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"gefyra.dev/gefyra/demo/oidc/internal/provider"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "oidc:", err)
		os.Exit(1)
	}
}

func env(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("oidc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", env(getenv, "OIDC_LISTEN", ":8080"), "address to listen on (env OIDC_LISTEN)")
	issuer := fs.String("issuer", env(getenv, "OIDC_ISSUER", "http://127.0.0.1:8080"), "public URL of the provider, the tokens' iss (env OIDC_ISSUER)")
	clientID := fs.String("client-id", env(getenv, "OIDC_CLIENT_ID", "oauth2-demo"), "client id of the oauth2-proxy (env OIDC_CLIENT_ID)")
	clientSecret := fs.String("client-secret", getenv("OIDC_CLIENT_SECRET"), "client secret (env OIDC_CLIENT_SECRET; required)")
	redirects := fs.String("redirect-uris", getenv("OIDC_REDIRECT_URIS"), "comma-separated redirect URIs of the client; '*' makes a glob (env OIDC_REDIRECT_URIS; required)")
	users := fs.String("users", env(getenv, "OIDC_USERS", provider.DefaultUser.Username+":"+provider.DefaultUser.Password),
		"comma-separated username:password pairs; the username is the e-mail address (env OIDC_USERS)")
	keyFile := fs.String("signing-key", getenv("OIDC_SIGNING_KEY_FILE"), "PEM RSA private key to sign with (env OIDC_SIGNING_KEY_FILE); empty: a fresh key per start")
	ttl := fs.Duration("token-ttl", time.Hour, "lifetime of access and ID tokens")
	logFormat := fs.String("log-format", env(getenv, "LOG_FORMAT", "text"), "text or json (env LOG_FORMAT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var log *slog.Logger
	switch *logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(stderr, nil))
	case "json":
		log = slog.New(slog.NewJSONHandler(stderr, nil))
	default:
		return fmt.Errorf("unknown log format %q (want text or json)", *logFormat)
	}
	// The op package logs through the default logger.
	slog.SetDefault(log)
	userList, err := parseUsers(*users)
	if err != nil {
		return err
	}
	var key *rsa.PrivateKey
	if *keyFile != "" {
		if key, err = readKey(*keyFile); err != nil {
			return err
		}
	}
	var uris []string
	for u := range strings.SplitSeq(*redirects, ",") {
		if u = strings.TrimSpace(u); u != "" {
			uris = append(uris, u)
		}
	}
	p, err := provider.New(provider.Config{
		Issuer:       *issuer,
		ClientID:     *clientID,
		ClientSecret: *clientSecret,
		RedirectURIs: uris,
		Users:        userList,
		SigningKey:   key,
		TokenTTL:     *ttl,
		Logger:       log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("OpenID Connect provider listening", "addr", ln.Addr().String(), "issuer", *issuer, "client_id", *clientID, "redirect_uris", uris)
	return p.Run(ctx, ln)
}

// parseUsers parses "user:password,user2:password2".
func parseUsers(s string) ([]provider.User, error) {
	var users []provider.User
	for pair := range strings.SplitSeq(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, password, ok := strings.Cut(pair, ":")
		if !ok || name == "" || password == "" {
			return nil, fmt.Errorf("user %q: want username:password", name)
		}
		users = append(users, provider.User{Username: name, Password: password, Email: name})
	}
	if len(users) == 0 {
		return nil, errors.New("no users given")
	}
	return users, nil
}

func readKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an RSA key", path)
	}
	return rk, nil
}

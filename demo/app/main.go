// Package main is the tutorial's backend: a tiny HTTP API that sits behind an
// oauth2-proxy sidecar and reads the user's e-mail address from the JWT the
// proxy passes in the X-Forwarded-Access-Token header.
//
// It carries the tutorial's bug on purpose: it looks the address up under a
// capitalised claim name, while identity providers such as Keycloak put it in
// the lowercase "email" claim, so GET /items/{item_id} answers 500 for every
// logged-in user. The fix is the one line that names the claim (emailClaim).
//
// Unlike the project's other binaries this package is self-contained (only
// the standard library and github.com/golang-jwt/jwt/v5): the development
// image builds it from a mounted source directory, alone, the way a developer
// edits it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// emailClaim is the access token claim that carries the user's e-mail address.
const emailClaim = "Email"

// maxTokenBytes bounds the access token the handler decodes; real tokens are
// a few kilobytes.
const maxTokenBytes = 16 << 10

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ERROR:", err)
		os.Exit(1)
	}
}

// run parses the command line, starts the server and blocks until ctx is done.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("oauth2-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaultPort := "8155"
	if p := getenv("PORT"); p != "" {
		defaultPort = p
	}
	host := fs.String("host", "", "address to listen on (empty: all interfaces)")
	port := fs.String("port", defaultPort, "port to listen on (env PORT)")
	jwksURL := fs.String("jwks-url", getenv("JWKS_URL"), "verify access tokens against this JWKS (env JWKS_URL); empty: decode without verifying, like the tutorial")
	logFormat := fs.String("log-format", orDefault(getenv("LOG_FORMAT"), "text"), "log format: text or json (env LOG_FORMAT)")
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
	h := &handler{log: log, emailClaim: emailClaim}
	if *jwksURL != "" {
		keys, err := newKeySet(*jwksURL, &http.Client{Timeout: 10 * time.Second})
		if err != nil {
			return err
		}
		h.keys = keys
	}
	portNum, err := strconv.ParseUint(*port, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: want a number from 0 to 65535", *port)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.FormatUint(portNum, 10)))
	if err != nil {
		return err
	}
	return serve(ctx, ln, h, log)
}

// serve answers requests on ln until ctx is done, then shuts down gracefully.
func serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Up to this size the handler sees an oversized token and logs it;
		// beyond it the server answers 431 by itself.
		MaxHeaderBytes: 1 << 20,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info(fmt.Sprintf("Application running on http://%s (Press CTRL+C to quit)", ln.Addr()), "addr", ln.Addr().String(), "pid", os.Getpid())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("Shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// handler is the backend's API.
type handler struct {
	log        *slog.Logger
	emailClaim string  // the claim the e-mail address is read from
	keys       *keySet // nil: decode tokens without verifying them
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			h.log.Error("handler panicked", "panic", v, "stack", string(debug.Stack()))
			if !rec.wrote {
				internalServerError(rec)
			}
		}
		h.log.Info(fmt.Sprintf("%s - %q %d %s", r.RemoteAddr, r.Method+" "+r.URL.RequestURI()+" "+r.Proto, rec.status, http.StatusText(rec.status)),
			"method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start))
	}()
	h.route(rec, r)
}

func (h *handler) route(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/" {
		if !allowGet(w, r) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"Hello": "World"})
		return
	}
	if id, ok := strings.CutPrefix(path, "/items/"); ok && id != "" && !strings.Contains(id, "/") {
		if !allowGet(w, r) {
			return
		}
		h.getItem(w, r, id)
		return
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
}

// item is the answer of GET /items/{item_id}.
type item struct {
	ItemID int64 `json:"item_id"`
	Email  any   `json:"Email"`
}

func (h *handler) getItem(w http.ResponseWriter, r *http.Request, rawID string) {
	itemID, err := parseItemID(rawID)
	if err != nil {
		h.log.Warn("invalid item id", "item_id", rawID, "err", err)
		writeJSON(w, http.StatusUnprocessableEntity, err)
		return
	}
	token := r.Header.Get("X-Forwarded-Access-Token")
	if token == "" {
		writeJSON(w, http.StatusOK, item{ItemID: itemID, Email: "not given"})
		return
	}
	if len(token) > maxTokenBytes {
		h.log.Warn("access token too large", "bytes", len(token), "limit", maxTokenBytes)
		writeJSON(w, http.StatusRequestHeaderFieldsTooLarge, map[string]string{"detail": "access token too large"})
		return
	}
	claims, err := h.decode(r.Context(), token)
	if err != nil {
		h.log.Warn("invalid access token", "err", err)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": "invalid access token"})
		return
	}
	mail, ok := claims[h.emailClaim]
	if !ok {
		h.log.Error("claim missing from access token", "claim", h.emailClaim, "error", fmt.Sprintf("KeyError: '%s'", h.emailClaim), "claims", claimNames(claims))
		internalServerError(w)
		return
	}
	writeJSON(w, http.StatusOK, item{ItemID: itemID, Email: mail})
}

// decode returns the claims of token, verified against the key set when one
// is configured and merely decoded otherwise.
func (h *handler) decode(ctx context.Context, token string) (jwt.MapClaims, error) {
	claims := jwt.MapClaims{}
	if h.keys == nil {
		if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
			return nil, err
		}
		return claims, nil
	}
	p := jwt.NewParser(jwt.WithValidMethods([]string{"RS256", "RS384", "RS512"}), jwt.WithExpirationRequired(), jwt.WithLeeway(30*time.Second))
	if _, err := p.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return h.keys.key(ctx, kid)
	}); err != nil {
		return nil, err
	}
	return claims, nil
}

// validationError is FastAPI's answer to a request that fails validation.
type validationError struct {
	Detail []validationDetail `json:"detail"`
}

type validationDetail struct {
	Type  string   `json:"type"`
	Loc   []string `json:"loc"`
	Msg   string   `json:"msg"`
	Input string   `json:"input"`
}

func (e *validationError) Error() string { return e.Detail[0].Msg }

// parseItemID parses the item_id path parameter as a base-10 integer.
func parseItemID(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, &validationError{Detail: []validationDetail{{
			Type:  "int_parsing",
			Loc:   []string{"path", "item_id"},
			Msg:   "Input should be a valid integer, unable to parse string as an integer",
			Input: s,
		}}}
	}
	return n, nil
}

func claimNames(claims jwt.MapClaims) []string {
	return slices.Sorted(maps.Keys(claims))
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet {
		return true
	}
	w.Header().Set("Allow", http.MethodGet)
	writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"detail": "Method Not Allowed"})
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		internalServerError(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func internalServerError(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = io.WriteString(w, "Internal Server Error")
}

// statusRecorder remembers the status code for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

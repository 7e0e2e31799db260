// Package main is command egress: the workload of the egress tests: one static binary,
// FROM scratch, that is both the cluster's server that says who called it
// and the local container's client that calls cluster Services by name.
// The first argument picks the role:
//
//	egress serve          HTTP on $LISTEN (default :8080): every path answers
//	                      {"name": $NAME, "client": "IP:PORT"}, the caller as
//	                      the server sees it
//	egress get URL...     GET each URL (names resolved as a program in the
//	                      container does: /etc/hosts, then DNS per
//	                      /etc/resolv.conf with its search list) and print
//	                      one JSON line each: {"url", "status", "body"} or
//	                      {"url", "error"}; exit 1 if any failed
//	egress sleep          do nothing until stopped (a container to exec into)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	role := "serve"
	if len(args) > 0 {
		role, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch role {
	case "serve":
		addr := os.Getenv("LISTEN")
		if addr == "" {
			addr = ":8080"
		}
		err = serve(ctx, addr, os.Getenv("NAME"))
	case "get":
		if len(args) == 0 {
			err = errors.New("usage: egress get URL...")
			break
		}
		err = getAll(ctx, os.Stdout, args, 5*time.Second)
	case "sleep":
		<-ctx.Done()
	default:
		err = fmt.Errorf("unknown role %q (want serve, get or sleep)", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "egress:", err)
		os.Exit(1)
	}
}

// Answer is what serve answers.
type Answer struct {
	Name   string `json:"name"`
	Client string `json:"client"`
}

func handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Answer{Name: name, Client: r.RemoteAddr})
	})
}

func serve(ctx context.Context, addr, name string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "egress %q listening on %s\n", name, ln.Addr())
	hs := &http.Server{Handler: handler(name), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Result is one line of get's output.
type Result struct {
	URL    string `json:"url"`
	Status int    `json:"status,omitempty"`
	Body   string `json:"body,omitempty"`
	Error  string `json:"error,omitempty"`
}

func getAll(ctx context.Context, out io.Writer, urls []string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	enc := json.NewEncoder(out)
	failed := 0
	for _, u := range urls {
		r := Result{URL: u}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		var resp *http.Response
		if err == nil {
			resp, err = c.Do(req)
		}
		if err == nil {
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			r.Status, r.Body, err = resp.StatusCode, string(b), rerr
		}
		if err != nil {
			r.Error = err.Error()
			failed++
		}
		enc.Encode(r)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d requests failed", failed, len(urls))
	}
	return nil
}

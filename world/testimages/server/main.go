// Package main is command server: the workload of the test world's own end-to-end tests:
// one static binary, FROM scratch, that is both the server a Pod runs and the
// client its exec probes (and a Docker container on the developer's side)
// run. The first argument picks the role:
//
//	server serve [flags]     HTTP/1.1 and h2c on $LISTEN (default :8080), UDP echo on
//	                         $UDP_LISTEN and TCP echo on $TCP_LISTEN if set; the flags
//	                         -name, -listen, -udp-listen and -tcp-listen override them
//	server probe URL         GET an http:// URL (2xx: exit 0), connect to tcp://HOST:PORT,
//	                         or send a datagram to udp://HOST:PORT and wait for the echo
//	server lookup NAME       resolve NAME as a program in the Pod would (/etc/hosts, then
//	                         DNS per /etc/resolv.conf with its search list) and print the
//	                         addresses; a failure says "not found", "timed out" or "failed"
//
// The HTTP server answers / with a JSON document naming itself ($NAME,
// $VERSION, hostname), /healthz with 200 or 503, and POST
// /readiness?ok=false|true switches /healthz, so a test can watch kubelet's
// readiness probe follow it. POST /echo streams the request body back as
// it arrives (both directions at once, over HTTP/1.1 or h2c), GET /ws echoes
// WebSocket messages, and every response names the server in the header
// X-Served-By (/echo adds the protocol it was served over in X-Proto). The
// TCP echo first sends a line with the name, then every byte it receives,
// and closes its side when the client has closed its own.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	args := os.Args[1:]
	role := "serve"
	if len(args) > 0 {
		role, args = args[0], args[1:]
	}
	var err error
	switch role {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		name := fs.String("name", os.Getenv("NAME"), "the name the server answers with")
		httpAddr := fs.String("listen", envOr("LISTEN", ":8080"), "HTTP address")
		udpAddr := fs.String("udp-listen", os.Getenv("UDP_LISTEN"), "UDP echo address (none if empty)")
		tcpAddr := fs.String("tcp-listen", os.Getenv("TCP_LISTEN"), "TCP echo address (none if empty)")
		if err = fs.Parse(args); err != nil {
			break
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		err = listenAndServe(ctx, *name, *httpAddr, *udpAddr, *tcpAddr)
	case "probe":
		if len(args) != 1 {
			err = errors.New("usage: server probe URL")
			break
		}
		var out string
		out, err = probe(args[0], 3*time.Second)
		if err == nil {
			fmt.Println(out)
		}
	case "lookup":
		if len(args) != 1 {
			err = errors.New("usage: server lookup NAME")
			break
		}
		var addrs []string
		addrs, err = lookup(context.Background(), net.DefaultResolver, args[0], 5*time.Second)
		if err == nil {
			fmt.Println(strings.Join(addrs, " "))
		}
	default:
		err = fmt.Errorf("unknown role %q (want serve, probe or lookup)", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Info is what / answers.
type Info struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Hostname string `json:"hostname"`
}

func listenAndServe(ctx context.Context, name, httpAddr, udpAddr, tcpAddr string) error {
	var l listeners
	var err error
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.http, err = net.Listen("tcp", httpAddr); err != nil {
		return err
	}
	if udpAddr != "" {
		if l.udp, err = net.ListenPacket("udp", udpAddr); err != nil {
			return err
		}
	}
	if tcpAddr != "" {
		if l.tcp, err = net.Listen("tcp", tcpAddr); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "%s %s listening on %s (udp %q, tcp %q)\n", name, os.Getenv("VERSION"), l.http.Addr(), udpAddr, tcpAddr)
	return serve(ctx, name, l)
}

// listeners are what serve serves: HTTP, and the echoes if not nil.
type listeners struct {
	http net.Listener
	udp  net.PacketConn
	tcp  net.Listener
}

func (l *listeners) close() {
	if l.http != nil {
		l.http.Close()
	}
	if l.udp != nil {
		l.udp.Close()
	}
	if l.tcp != nil {
		l.tcp.Close()
	}
}

// serve answers HTTP and echoes on l until ctx is done.
func serve(ctx context.Context, name string, l listeners) error {
	host, _ := os.Hostname()
	info := Info{Name: name, Version: os.Getenv("VERSION"), Hostname: host}
	var unready atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(info)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if unready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("POST /readiness", func(w http.ResponseWriter, r *http.Request) {
		ok, err := strconv.ParseBool(r.URL.Query().Get("ok"))
		if err != nil {
			http.Error(w, "want ?ok=true or ?ok=false", http.StatusBadRequest)
			return
		}
		unready.Store(!ok)
		fmt.Fprintf(w, "ready=%t\n", ok)
	})
	mux.HandleFunc("POST /echo", echoHTTP)
	upgrader := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, http.Header{"X-Served-By": {name}})
		if err != nil {
			return // Upgrade has answered the client
		}
		defer c.Close()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Served-By", name)
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		Protocols:         &protocols,
	}
	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(l.http) }()
	if l.udp != nil {
		defer l.udp.Close()
		go func() { errc <- echo(l.udp, name) }()
	}
	if l.tcp != nil {
		defer l.tcp.Close()
		go func() { errc <- echoTCP(l.tcp, name) }()
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		srv.Close()
		return err
	}
}

// echoHTTP streams the request body back as it arrives: the response
// starts before the request ends, so a client sees each piece echoed
// while it is still sending.
func echoHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	if r.ProtoMajor == 1 {
		if err := rc.EnableFullDuplex(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("X-Proto", r.Proto)
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// echoTCP serves each connection of ln: a line with name, then every byte
// received, then its side closed once the client closed its own.
func echoTCP(ln net.Listener, name string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			if _, err := io.WriteString(c, name+"\n"); err != nil {
				return
			}
			if _, err := io.Copy(c, c); err != nil {
				return
			}
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		}()
	}
}

// echo answers every datagram with "NAME:" and the datagram.
func echo(pc net.PacketConn, name string) error {
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		pc.WriteTo(append([]byte(name+":"), buf[:n]...), addr)
	}
}

func probe(raw string, timeout time.Duration) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "http":
		c := &http.Client{Timeout: timeout}
		resp, err := c.Get(raw)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return "", err
		}
		if resp.StatusCode/100 != 2 {
			return "", fmt.Errorf("%s: %s", raw, resp.Status)
		}
		return string(body), nil
	case "tcp":
		c, err := net.DialTimeout("tcp", u.Host, timeout)
		if err != nil {
			return "", err
		}
		c.Close()
		return "connected to " + u.Host, nil
	case "udp":
		c, err := net.Dial("udp", u.Host)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return "", fmt.Errorf("no echo from %s: %w", u.Host, err)
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("%q: want an http://, tcp:// or udp:// URL", raw)
	}
}

// lookup resolves name with r within timeout and returns its addresses,
// sorted. The error tells a name that does not exist ("not found") from a
// server that does not answer ("timed out") and any other failure ("failed",
// e.g. SERVFAIL).
func lookup(ctx context.Context, r *net.Resolver, name string, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addrs, err := r.LookupHost(ctx, name)
	if err == nil {
		slices.Sort(addrs)
		return addrs, nil
	}
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return nil, fmt.Errorf("%s: not found (%w)", name, err)
	case errors.As(err, &de) && de.IsTimeout, ctx.Err() != nil:
		return nil, fmt.Errorf("%s: timed out (%w)", name, err)
	default:
		return nil, fmt.Errorf("%s: failed (%w)", name, err)
	}
}

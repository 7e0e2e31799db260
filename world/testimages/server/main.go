// Command server is the workload of the test world's own end-to-end tests:
// one static binary, FROM scratch, that is both the server a Pod runs and the
// client its exec probes (and a Docker container on the developer's side)
// run. The first argument picks the role:
//
//	server serve             HTTP on $LISTEN (default :8080), UDP echo on $UDP_LISTEN if set
//	server probe URL         GET an http:// URL (2xx: exit 0), connect to tcp://HOST:PORT,
//	                         or send a datagram to udp://HOST:PORT and wait for the echo
//	server lookup NAME       resolve NAME as a program in the Pod would (/etc/hosts, then
//	                         DNS per /etc/resolv.conf with its search list) and print the
//	                         addresses; a failure says "not found", "timed out" or "failed"
//
// The HTTP server answers / with a JSON document naming itself ($NAME,
// $VERSION, hostname), /healthz with 200 or 503, and POST
// /readiness?ok=false|true switches /healthz, so a test can watch kubelet's
// readiness probe follow it.
package main

import (
	"context"
	"encoding/json"
	"errors"
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
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		err = listenAndServe(ctx, envOr("LISTEN", ":8080"), os.Getenv("UDP_LISTEN"))
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

func listenAndServe(ctx context.Context, httpAddr, udpAddr string) error {
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return err
	}
	var pc net.PacketConn
	if udpAddr != "" {
		if pc, err = net.ListenPacket("udp", udpAddr); err != nil {
			ln.Close()
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "%s %s listening on %s (udp %q)\n", os.Getenv("NAME"), os.Getenv("VERSION"), ln.Addr(), udpAddr)
	return serve(ctx, ln, pc)
}

// serve answers HTTP on ln and echoes datagrams on pc (if not nil) until ctx
// is done.
func serve(ctx context.Context, ln net.Listener, pc net.PacketConn) error {
	host, _ := os.Hostname()
	info := Info{Name: os.Getenv("NAME"), Version: os.Getenv("VERSION"), Hostname: host}
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if pc != nil {
		defer pc.Close()
		go func() { errc <- echo(pc, info.Name) }()
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		return err
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

// Package refs runs the reference servers the benchmark compares carrier
// with: nginx (as the shared backend, and as an HTTP and a stream proxy)
// and haproxy (mode http and mode tcp), installed from Debian's packages
// when missing and started as child processes with configuration files
// written into a private directory. The system's own nginx and haproxy
// services are never touched.
package refs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Packages are the Debian packages the benchmark needs.
// (nginx-light builds its stream module as a separate package.)
var Packages = []string{"nginx-light", "libnginx-mod-stream", "haproxy", "wrk", "nghttp2-client"}

// StreamModule is where Debian's libnginx-mod-stream puts the module.
const StreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// Install installs whichever of pkgs dpkg does not report installed.
func Install(ctx context.Context, log *slog.Logger, pkgs []string) error {
	var missing []string
	for _, p := range pkgs {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Status}", p).Output()
		if err != nil || !strings.Contains(string(out), "install ok installed") {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	log.Info("installing", "packages", missing)
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %w\n%s", strings.Join(missing, " "), err, tail(out))
	}
	return nil
}

// Proc is a started server.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan struct{}
}

// PID is the process ID of the server (for nginx, the master whose
// workers are its children).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Start runs argv as a child and waits until addr accepts connections.
func Start(ctx context.Context, name, addr string, env []string, argv ...string) (*Proc, error) {
	p := &Proc{Name: name, cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited before listening on %s: %s", name, addr, tail(p.out.Bytes()))
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("%s: nothing listening on %s after 10s: %s", name, addr, tail(p.out.Bytes()))
		}
	}
}

// Stop sends SIGTERM (nginx's fast shutdown, haproxy's hard stop) to the
// process and SIGKILL if it has not exited within 5s.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// FreePort returns a loopback address whose port was free a moment ago.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// nginxMain is the part of every nginx configuration: foreground, no
// access log, logs and temp files in dir.
func nginxMain(dir string, workers int) string {
	return fmt.Sprintf(`# written by the gefyra benchmark harness
daemon off;
worker_processes %d;
pid %s/nginx.pid;
error_log %s/error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 8192; multi_accept on; }
`, workers, dir, dir)
}

func nginxHTTP(dir string) string {
	return fmt.Sprintf(`    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
`, dir)
}

// nginx starts nginx with modules (load_module lines) and conf (the
// blocks after the main context) in its own directory under dir.
func nginx(ctx context.Context, name, dir, addr string, workers int, modules, conf string) (*Proc, error) {
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	file := filepath.Join(d, "nginx.conf")
	if err := os.WriteFile(file, []byte(modules+nginxMain(d, workers)+conf), 0o644); err != nil {
		return nil, err
	}
	return Start(ctx, name, addr, nil, "nginx", "-p", d, "-c", file, "-e", filepath.Join(d, "error.log"))
}

// Backend starts the shared backend: nginx answering every request with
// 200 and a 2-byte body from the configuration alone, the cheapest
// server per request available here.
func Backend(ctx context.Context, dir, addr string, workers int) (*Proc, error) {
	return nginx(ctx, "backend", dir, addr, workers, "", fmt.Sprintf(`http {
%s    server {
        listen %s reuseport backlog=4096;
        location / { return 200 "ok"; }
    }
}
`, nginxHTTP(filepath.Join(dir, "backend")), addr))
}

// NginxProxy starts nginx with proxy_pass from httpAddr to backend over
// an upstream block with keepalive 32, and a stream block from tcpAddr
// to backend.
func NginxProxy(ctx context.Context, dir, httpAddr, tcpAddr, backend string, workers int) (*Proc, error) {
	p, err := nginx(ctx, "nginx", dir, httpAddr, workers, "load_module "+StreamModule+";\n", fmt.Sprintf(`http {
%s    upstream backend {
        server %s;
        keepalive 32;
    }
    server {
        listen %s backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }
    }
}
stream {
    server {
        listen %s backlog=4096;
        proxy_pass %s;
    }
}
`, nginxHTTP(filepath.Join(dir, "nginx")), backend, httpAddr, tcpAddr, backend))
	if err != nil {
		return nil, err
	}
	return p, waitListen(ctx, p, tcpAddr)
}

// Haproxy starts haproxy with a mode http frontend on httpAddr and a mode
// tcp frontend on tcpAddr, both to backend.
func Haproxy(ctx context.Context, dir, httpAddr, tcpAddr, backend string, threads int) (*Proc, error) {
	d := filepath.Join(dir, "haproxy")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`global
    nbthread %d
    maxconn 4000
defaults
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    maxconn 4000
frontend http_in
    mode http
    bind %s
    option http-keep-alive
    default_backend http_backend
backend http_backend
    mode http
    http-reuse always
    server b1 %s
frontend tcp_in
    mode tcp
    bind %s
    default_backend tcp_backend
backend tcp_backend
    mode tcp
    server b1 %s
`, threads, httpAddr, backend, tcpAddr, backend)
	file := filepath.Join(d, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, err := Start(ctx, "haproxy", httpAddr, nil, "haproxy", "-db", "-f", file)
	if err != nil {
		return nil, err
	}
	return p, waitListen(ctx, p, tcpAddr)
}

func waitListen(ctx context.Context, p *Proc, addr string) error {
	for i := 0; i < 500; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Stop()
	return errors.Join(fmt.Errorf("%s: nothing listening on %s", p.Name, addr), ctx.Err())
}

// Version runs argv and returns its first output line (nginx -v prints
// to stderr).
func Version(argv ...string) string {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unknown: " + err.Error()
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// Package admin serves a component's operational endpoints on a port of
// their own, apart from the traffic it carries: Prometheus metrics from the
// component's own registry at /metrics, liveness at /healthz and readiness
// at /readyz. With GEFYRA_PPROF=1 in the component's environment it also
// serves Go's profiles at /debug/pprof/ (off by default: a profile shows
// the process's inner workings to whoever reaches the port).
package admin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the admin HTTP server.
type Server struct {
	Addr     string
	Registry *prometheus.Registry
	Log      *slog.Logger

	ready atomic.Bool
	ln    atomic.Pointer[net.Listener]
}

// NewRegistry returns a registry with the Go runtime and process collectors,
// the base every component adds its own metrics to.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// SetReady sets what /readyz answers.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// ListenAddr is the address actually listened on, once Run has started
// (useful with port 0); "" before that.
func (s *Server) ListenAddr() string {
	if l := s.ln.Load(); l != nil {
		return (*l).Addr().String()
	}
	return ""
}

// Handler returns the admin endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	if ProfilingRequested() {
		MountProfiling(mux)
	}
	return mux
}

// ProfilingEnv is the environment variable that turns the profiling
// endpoints on when it is "1".
const ProfilingEnv = "GEFYRA_PPROF"

// ProfilingRequested reports whether ProfilingEnv asks for the profiling
// endpoints.
func ProfilingRequested() bool { return os.Getenv(ProfilingEnv) == "1" }

// MountProfiling serves net/http/pprof's endpoints under /debug/pprof/ on
// mux (a CPU profile: /debug/pprof/profile?seconds=N).
func MountProfiling(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// Run serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return err
	}
	s.ln.Store(&ln)
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if s.Log != nil {
		s.Log.Info("admin endpoints listening", "addr", ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

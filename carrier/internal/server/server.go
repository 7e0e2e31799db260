// Package server runs carrier: it applies configuration updates
// atomically, opens and closes listeners as the configuration says, and
// hands each client connection to the HTTP or TCP data path.
//
// A configuration is compiled in full before anything changes; an invalid
// one (or one naming a port that cannot be bound) is rejected with the
// reason and the last good one stays in force. A connection reads the
// configuration current when it was accepted (TCP) or when each request
// arrived (HTTP), so in-flight requests finish on the one they started
// with.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/carrier/internal/config"
	"gefyra.dev/gefyra/carrier/internal/httpproxy"
	"gefyra.dev/gefyra/carrier/internal/metrics"
	"gefyra.dev/gefyra/carrier/internal/tcpproxy"
	"gefyra.dev/gefyra/carrier/internal/upstream"
)

// Server is carrier's data plane.
type Server struct {
	log     *slog.Logger
	metrics *metrics.Metrics
	pools   *upstream.Pools
	http    *httpproxy.Proxy
	tcp     *tcpproxy.Proxy

	// ShutdownTimeout bounds waiting for connections when Run ends; 0
	// means 10s.
	ShutdownTimeout time.Duration

	cfg     atomic.Pointer[config.Config]
	applyCh chan applyReq
	running chan struct{} // closed when Run has started
	done    chan struct{} // closed when Run has returned

	mu        sync.Mutex // guards listeners
	listeners map[string]*listener
}

type applyReq struct {
	res   map[string][]proto.Message
	reply chan error
}

type listener struct {
	name, addr string
	ln         net.Listener
	active     interface {
		Inc()
		Dec()
	}
}

// New returns a server; m may be nil.
func New(log *slog.Logger, m *metrics.Metrics) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pools := &upstream.Pools{}
	return &Server{
		log:       log,
		metrics:   m,
		pools:     pools,
		http:      &httpproxy.Proxy{Pools: pools, Metrics: m, Log: log},
		tcp:       &tcpproxy.Proxy{Metrics: m, Log: log},
		applyCh:   make(chan applyReq),
		running:   make(chan struct{}),
		done:      make(chan struct{}),
		listeners: map[string]*listener{},
	}
}

// Config is the configuration in force, nil before the first.
func (s *Server) Config() *config.Config { return s.cfg.Load() }

// Ready reports whether a configuration has been applied.
func (s *Server) Ready() bool { return s.cfg.Load() != nil }

// Addr is the address listener name actually listens on ("" if none);
// useful with port 0.
func (s *Server) Addr(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listeners[name]; l != nil {
		return l.ln.Addr().String()
	}
	return ""
}

// Apply compiles resources (keyed by type URL) and puts them in force. An
// error means nothing changed; its text is the reason for a NACK. It waits
// for Run to start.
func (s *Server) Apply(ctx context.Context, res map[string][]proto.Message) error {
	r := applyReq{res: res, reply: make(chan error, 1)}
	select {
	case s.applyCh <- r:
	case <-s.done:
		return errors.New("carrier is shutting down")
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-r.reply
}

// Run serves until ctx is done, then closes the listeners and waits for
// the connections to end (they are closed by ctx too).
func (s *Server) Run(ctx context.Context) error {
	defer close(s.done)
	var wg sync.WaitGroup
	poolCtx, stopPools := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.pools.Run(poolCtx)
	}()
	close(s.running)
	for {
		select {
		case r := <-s.applyCh:
			err := s.apply(ctx, r.res, &wg)
			s.metrics.ConfigUpdate(err == nil)
			if err != nil {
				s.log.Warn("configuration rejected", "err", err)
			}
			r.reply <- err
		case <-ctx.Done():
			s.mu.Lock()
			for name, l := range s.listeners {
				l.ln.Close()
				delete(s.listeners, name)
			}
			s.mu.Unlock()
			stopPools()
			waited := make(chan struct{})
			go func() {
				// Connections end with ctx; upstream HTTP/2 connections are
				// shared, so they close once nothing uses them.
				wg.Wait()
				s.http.Close()
				close(waited)
			}()
			timeout := s.ShutdownTimeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			select {
			case <-waited:
				return nil
			case <-time.After(timeout):
				return errors.New("connections did not end in time")
			}
		}
	}
}

func (s *Server) apply(ctx context.Context, res map[string][]proto.Message, wg *sync.WaitGroup) error {
	cfg, err := config.Compile(res, s.metrics)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	opened := map[string]*listener{}
	for _, l := range cfg.Listeners {
		if old := s.listeners[l.Name]; old != nil && old.addr == l.Address {
			continue
		}
		var old *listener
		for _, o := range s.listeners {
			if o.addr == l.Address {
				old = o
			}
		}
		if old != nil {
			// The address moves to another listener name: reuse the socket.
			opened[l.Name] = &listener{name: l.Name, addr: l.Address, ln: old.ln}
			continue
		}
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			for _, o := range opened {
				if s.listeners[o.name] == nil || s.listeners[o.name].ln != o.ln {
					o.ln.Close()
				}
			}
			return fmt.Errorf("listener %q: %w", l.Name, err)
		}
		opened[l.Name] = &listener{name: l.Name, addr: l.Address, ln: ln}
	}
	s.cfg.Store(cfg)
	// Close what the new config no longer has.
	for name, l := range s.listeners {
		nl := cfg.Listener(name)
		if nl != nil && nl.Address == l.addr {
			continue
		}
		delete(s.listeners, name)
		moved := false
		for _, o := range opened {
			if o.ln == l.ln {
				moved = true
			}
		}
		if !moved {
			l.ln.Close()
			s.log.Info("listener closed", "listener", name, "addr", l.addr)
		}
	}
	for name, l := range opened {
		l.active = s.metrics.Active(name)
		s.listeners[name] = l
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.accept(ctx, l, wg)
		}()
		s.log.Info("listener open", "listener", name, "addr", l.ln.Addr().String())
	}
	s.pools.Prune(cfg)
	s.http.Prune(cfg)
	s.log.Info("configuration applied", "listeners", len(cfg.Listeners), "clusters", len(cfg.Clusters))
	return nil
}

func (s *Server) accept(ctx context.Context, l *listener, wg *sync.WaitGroup) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept failed", "listener", l.name, "err", err)
			select {
			case <-time.After(50 * time.Millisecond):
				continue
			case <-ctx.Done():
				return
			}
		}
		s.mu.Lock()
		current := s.listeners[l.name] == l
		s.mu.Unlock()
		if !current {
			// The socket moved to another listener name: serve it as that.
			if nl := s.byListener(l.ln); nl != nil {
				l = nl
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serve(ctx, l, c)
		}()
	}
}

func (s *Server) byListener(ln net.Listener) *listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.listeners {
		if l.ln == ln {
			return l
		}
	}
	return nil
}

func (s *Server) serve(ctx context.Context, l *listener, c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	lc := s.cfg.Load().Listener(l.name)
	if lc == nil {
		c.Close()
		return
	}
	l.active.Inc()
	defer l.active.Dec()
	if lc.TCP != nil {
		s.tcp.ServeConn(ctx, c, lc)
		return
	}
	name := l.name
	s.http.ServeConn(ctx, c, func() *config.Listener { return s.cfg.Load().Listener(name) })
}

package reload

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// UvicornHandler is a slog.Handler that writes lines the way uvicorn does
// ("INFO:     message"), so the development loop reads like the tutorial's
// `uvicorn --reload`. Attributes follow the message as key=value.
type UvicornHandler struct {
	mu    *sync.Mutex // guards w
	w     io.Writer
	level slog.Leveler
	attrs []slog.Attr
}

// NewUvicornHandler writes records at or above level to w.
func NewUvicornHandler(w io.Writer, level slog.Leveler) *UvicornHandler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &UvicornHandler{mu: &sync.Mutex{}, w: w, level: level}
}

// Enabled implements slog.Handler.
func (h *UvicornHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Handle implements slog.Handler.
func (h *UvicornHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	level := r.Level.String()
	if r.Level == slog.LevelWarn {
		level = "WARNING"
	}
	fmt.Fprintf(&b, "%-10s%s", level+":", r.Message)
	write := func(a slog.Attr) bool {
		if a.Equal(slog.Attr{}) {
			return true
		}
		v := a.Value.Resolve().String()
		if strings.ContainsAny(v, " \t\n\"=") || v == "" {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, v)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

// WithAttrs implements slog.Handler.
func (h *UvicornHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &h2
}

// WithGroup implements slog.Handler; groups are flattened.
func (h *UvicornHandler) WithGroup(string) slog.Handler { return h }

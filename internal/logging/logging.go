// Package logging sets up log/slog the same way for every gefyra binary:
// JSON when the output is not a terminal (in the cluster), text on a
// terminal, and a level chosen by flag or environment.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Options say how to log.
type Options struct {
	Level  string // debug, info, warn, error; "" means info
	Format string // json, text, or "" to choose by whether Out is a terminal
	Out    io.Writer
}

// New returns a logger for opts, or an error naming the bad option.
func New(opts Options) (*slog.Logger, error) {
	out := opts.Out
	if out == nil {
		out = os.Stderr
	}
	var level slog.Level
	switch strings.ToLower(opts.Level) {
	case "", "info":
		level = slog.LevelInfo
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", opts.Level)
	}
	hopts := &slog.HandlerOptions{Level: level}
	format := strings.ToLower(opts.Format)
	if format == "" {
		format = "json"
		if isTerminal(out) {
			format = "text"
		}
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(out, hopts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(out, hopts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want json or text", opts.Format)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

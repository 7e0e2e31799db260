package command

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// ui writes the `[INFO] ...` lines of the CLI to stderr.
type ui struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (u *ui) line(level, format string, args ...any) {
	u.mu.Lock()
	defer u.mu.Unlock()
	fmt.Fprintf(u.w, "[%s] %s\n", level, fmt.Sprintf(format, args...))
}

// Info reports progress.
func (u *ui) Info(format string, args ...any) { u.line("INFO", format, args...) }

// Warn reports something that did not stop the command.
func (u *ui) Warn(format string, args ...any) { u.line("WARN", format, args...) }

// waiter prints what a long wait is waiting for: nothing during the first
// quiet period (a quick success prints no noise), then each new state, and
// the same state again every repeat.
type waiter struct {
	ui      *ui
	start   time.Time
	quiet   time.Duration
	repeat  time.Duration
	last    string
	printed time.Time
}

func newWaiter(u *ui, quiet time.Duration) *waiter {
	return &waiter{ui: u, start: time.Now(), quiet: quiet, repeat: 15 * time.Second}
}

// Update reports the current state msg.
func (w *waiter) Update(msg string) {
	now := time.Now()
	if now.Sub(w.start) < w.quiet || msg == "" {
		w.last = ""
		return
	}
	if msg == w.last && now.Sub(w.printed) < w.repeat {
		return
	}
	w.ui.Info("%s (%s)", msg, now.Sub(w.start).Round(time.Second))
	w.last, w.printed = msg, now
}

// printResult writes v to w as json or yaml.
func printResult(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		b, err = yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

package story

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gefyra.dev/gefyra/internal/testworld"
)

// Step is one step of the story: a line that says what happens, and the
// code that does it. A step without Run only says something.
type Step struct {
	Title string
	Run   func(t testworld.T)
}

// ErrInterrupted is the failure of a story whose context ended.
var ErrInterrupted = errors.New("interrupted")

// Runner runs steps outside `go test` and narrates them: each step's title
// as a line "==> Title", what the step logs indented below it. Its steps
// get a testworld.T that behaves like a test's: Fatalf ends the step (and
// the story: later steps are skipped), Errorf marks the story failed and
// goes on, and Cleanup functions run last in, first out, when Close is
// called, whether the story failed or not.
type Runner struct {
	ctx context.Context
	out io.Writer

	grace time.Duration // how long an interrupted step may take to stop

	mu       sync.Mutex // guards the fields below and the writes to out
	errs     []error    // the failures, first first
	cleanups []func()
}

// NewRunner returns a runner that writes to out. When ctx ends, the running
// step is stopped (at its next Logf, Errorf or Fatalf, if that comes soon)
// and the story counts as interrupted (ErrInterrupted); cleanups still run.
func NewRunner(ctx context.Context, out io.Writer) *Runner {
	return &Runner{ctx: ctx, out: out, grace: 15 * time.Second}
}

// Run runs steps in order until one fails or the context ends, then runs
// the cleanups (see Close). It returns the failures, joined.
func (r *Runner) Run(steps []Step) error {
	for _, s := range steps {
		if r.Err() != nil {
			break
		}
		r.Step(s.Title, s.Run)
	}
	return r.Close()
}

// Step says title and runs fn in a goroutine of its own (Fatalf ends it,
// as in a test) until it returns or the runner's context ends. It reports
// whether the story may go on.
func (r *Runner) Step(title string, fn func(t testworld.T)) bool {
	if r.Err() != nil {
		return false
	}
	if err := r.ctx.Err(); err != nil {
		r.fail(ErrInterrupted)
		return false
	}
	r.write("==> " + title + "\n")
	if fn == nil {
		return true
	}
	t := &stepT{r: r}
	done := t.run(fn)
	select {
	case <-done:
	case <-r.ctx.Done():
		r.fail(ErrInterrupted)
		r.write("    (interrupted)\n")
		// The step ends at its next word (waits report progress often);
		// one that stays silent longer is left behind.
		t.stopping.Store(true)
		select {
		case <-done:
		case <-time.After(r.grace):
		}
		t.stopping.Store(false) // its cleanups must run and speak
	}
	return r.Err() == nil
}

// Close runs the registered cleanups, last registered first (each in its
// own goroutine, waited for even after the context ended), and returns the
// story's failures (those of the cleanups too), joined.
func (r *Runner) Close() error {
	said := false
	for {
		r.mu.Lock()
		n := len(r.cleanups)
		if n == 0 {
			r.mu.Unlock()
			break
		}
		f := r.cleanups[n-1]
		r.cleanups = r.cleanups[:n-1]
		r.mu.Unlock()
		if !said {
			r.write("==> Cleaning up\n")
			said = true
		}
		<-(&stepT{r: r}).run(func(testworld.T) { f() })
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.errs...)
}

// Err is the story's first failure, or nil.
func (r *Runner) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) == 0 {
		return nil
	}
	return r.errs[0]
}

func (r *Runner) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *Runner) write(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	io.WriteString(r.out, s)
}

// stepT is the testworld.T of one step (or cleanup) of a Runner.
type stepT struct {
	r        *Runner
	stopping atomic.Bool // interrupted: the step's next word ends it
}

// stopIfInterrupted ends the step's goroutine when the story was
// interrupted while it ran.
func (t *stepT) stopIfInterrupted() {
	if t.stopping.Load() {
		runtime.Goexit()
	}
}

// run runs fn with t in a new goroutine; the channel closes when fn
// returns, calls Fatalf or panics (the panic fails the story).
func (t *stepT) run(fn func(t testworld.T)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if v := recover(); v != nil {
				t.Errorf("panic: %v\n%s", v, debug.Stack())
			}
		}()
		fn(t)
	}()
	return done
}

// say writes msg indented, every line of it, behind prefix.
func (t *stepT) say(prefix, msg string) {
	var sb strings.Builder
	for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		sb.WriteString(strings.TrimRight("    "+prefix+line, " ") + "\n")
	}
	t.r.write(sb.String())
}

// Helper does nothing: the runner prints no source positions.
func (t *stepT) Helper() {}

// Logf says what the step does, indented below the step's title.
func (t *stepT) Logf(format string, args ...any) {
	t.stopIfInterrupted()
	t.say("", fmt.Sprintf(format, args...))
}

// Errorf says what went wrong and fails the story; the step goes on.
func (t *stepT) Errorf(format string, args ...any) {
	t.stopIfInterrupted()
	msg := fmt.Sprintf(format, args...)
	t.say("error: ", msg)
	t.r.fail(errors.New(msg))
}

// Fatalf is Errorf, and ends the step. Like testing.T's, it must be called
// from the step's own goroutine.
func (t *stepT) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	runtime.Goexit()
}

// Failed reports whether a step of the story failed so far (an interrupt
// is no failure of a step).
func (t *stepT) Failed() bool {
	err := t.r.Err()
	return err != nil && !errors.Is(err, ErrInterrupted)
}

// Cleanup registers f to run when the story ends (see Runner.Close).
func (t *stepT) Cleanup(f func()) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	t.r.cleanups = append(t.r.cleanups, f)
}

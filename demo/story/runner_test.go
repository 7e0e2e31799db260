package story

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"gefyra.dev/gefyra/internal/testworld"
)

// syncBuffer is a strings.Builder safe for the runner's goroutines.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRunner(t *testing.T) {
	tests := []struct {
		name    string
		steps   func(record func(string)) []Step
		wantOut string
		wantErr string
		wantRan []string // what record saw, in order
	}{
		{
			name: "every step runs, cleanups last in first out",
			steps: func(record func(string)) []Step {
				return []Step{
					{Title: "one", Run: func(t testworld.T) {
						t.Cleanup(func() { record("cleanup one") })
						t.Logf("did %s", "one")
					}},
					{Title: "two", Run: func(t testworld.T) {
						t.Cleanup(func() { record("cleanup two"); t.Logf("removed two") })
						t.Logf("line 1\nline 2")
					}},
					{Title: "a note"},
				}
			},
			wantOut: "==> one\n    did one\n==> two\n    line 1\n    line 2\n==> a note\n==> Cleaning up\n    removed two\n",
			wantRan: []string{"cleanup two", "cleanup one"},
		},
		{
			name: "Fatalf ends the step and the story, cleanups still run",
			steps: func(record func(string)) []Step {
				return []Step{
					{Title: "deploy", Run: func(t testworld.T) {
						t.Cleanup(func() { record("cleanup deploy") })
						t.Fatalf("the Pod did not start: %s", "ImagePullBackOff")
						record("after Fatalf")
					}},
					{Title: "login", Run: func(t testworld.T) { record("login ran") }},
				}
			},
			wantOut: "==> deploy\n    error: the Pod did not start: ImagePullBackOff\n==> Cleaning up\n",
			wantErr: "the Pod did not start: ImagePullBackOff",
			wantRan: []string{"cleanup deploy"},
		},
		{
			name: "Errorf lets the step finish but stops the story",
			steps: func(record func(string)) []Step {
				return []Step{
					{Title: "check", Run: func(t testworld.T) {
						t.Errorf("first")
						t.Errorf("second")
						record("step finished")
					}},
					{Title: "next", Run: func(t testworld.T) { record("next ran") }},
				}
			},
			wantOut: "==> check\n    error: first\n    error: second\n",
			wantErr: "first\nsecond",
			wantRan: []string{"step finished"},
		},
		{
			name: "a cleanup registered by a cleanup runs too",
			steps: func(record func(string)) []Step {
				return []Step{{Title: "nest", Run: func(t testworld.T) {
					t.Cleanup(func() { t.Cleanup(func() { record("inner") }); record("outer") })
				}}}
			},
			wantOut: "==> nest\n==> Cleaning up\n",
			wantRan: []string{"outer", "inner"},
		},
		{
			name: "a Fatalf in a cleanup fails the story, the other cleanups run",
			steps: func(record func(string)) []Step {
				return []Step{{Title: "s", Run: func(t testworld.T) {
					t.Cleanup(func() { record("first registered") })
					t.Cleanup(func() { t.Fatalf("cannot delete") })
				}}}
			},
			wantOut: "==> s\n==> Cleaning up\n    error: cannot delete\n",
			wantErr: "cannot delete",
			wantRan: []string{"first registered"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var records []string
			record := func(s string) { mu.Lock(); records = append(records, s); mu.Unlock() }
			var out syncBuffer
			r := NewRunner(context.Background(), &out)
			err := r.Run(tt.steps(record))
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Errorf("Run() = %v, want error %q", err, tt.wantErr)
			}
			if got := out.String(); got != tt.wantOut {
				t.Errorf("output:\n%s\nwant:\n%s", got, tt.wantOut)
			}
			mu.Lock()
			defer mu.Unlock()
			if strings.Join(records, "|") != strings.Join(tt.wantRan, "|") {
				t.Errorf("ran %q, want %q", records, tt.wantRan)
			}
		})
	}
}

func TestRunnerPanic(t *testing.T) {
	var out syncBuffer
	r := NewRunner(context.Background(), &out)
	err := r.Run([]Step{{Title: "boom", Run: func(testworld.T) { panic("nil map") }}})
	if err == nil || !strings.HasPrefix(err.Error(), "panic: nil map") {
		t.Fatalf("Run() = %v, want the panic as the failure", err)
	}
}

func TestRunnerInterrupted(t *testing.T) {
	tests := []struct {
		name string
		// wait is how the step waits after the interrupt: saying how it
		// goes now and then, or silent.
		wait      func(t testworld.T, release <-chan struct{})
		wantOut   string
		wantEnded bool // the step's goroutine is gone when Run returns
	}{
		{
			name: "a step that reports progress stops at its next word",
			wait: func(t testworld.T, _ <-chan struct{}) {
				for {
					time.Sleep(time.Millisecond)
					t.Logf("waiting")
				}
			},
			wantOut:   "==> hangs\n    (interrupted)\n==> Cleaning up\n    removed\n",
			wantEnded: true,
		},
		{
			name:    "a silent step is left behind after the grace period",
			wait:    func(t testworld.T, release <-chan struct{}) { <-release },
			wantOut: "==> hangs\n    (interrupted)\n==> Cleaning up\n    removed\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out syncBuffer
			r := NewRunner(ctx, &out)
			r.grace = 100 * time.Millisecond
			release := make(chan struct{})
			defer close(release)
			ran := false
			var failedInCleanup bool
			ended := make(chan struct{})
			err := r.Run([]Step{
				{Title: "hangs", Run: func(t testworld.T) {
					defer close(ended)
					t.Cleanup(func() {
						failedInCleanup = testworld.Failed(t)
						t.Logf("removed")
					})
					cancel()
					tt.wait(t, release)
				}},
				{Title: "never", Run: func(testworld.T) { ran = true }},
			})
			if !errors.Is(err, ErrInterrupted) {
				t.Fatalf("Run() = %v, want ErrInterrupted", err)
			}
			if ran {
				t.Error("a step after the interrupt ran")
			}
			select {
			case <-ended:
				if !tt.wantEnded {
					t.Error("the silent step ended")
				}
			default:
				if tt.wantEnded {
					t.Error("the step did not stop at its next word")
				}
			}
			if failedInCleanup {
				t.Error("testworld.Failed() = true in a cleanup after an interrupt, want false (no step failed)")
			}
			// Progress said before the runner saw the interrupt may stand
			// between the title and "(interrupted)".
			got := strings.ReplaceAll(out.String(), "    waiting\n", "")
			if got != tt.wantOut {
				t.Errorf("output %q, want %q", got, tt.wantOut)
			}
		})
	}
}

func TestRunnerFailed(t *testing.T) {
	var out syncBuffer
	r := NewRunner(context.Background(), &out)
	var before, after bool
	r.Step("x", func(t testworld.T) {
		before = testworld.Failed(t)
		t.Errorf("bad")
		after = testworld.Failed(t)
	})
	if before || !after {
		t.Fatalf("testworld.Failed(step) = %t before Errorf and %t after, want false and true", before, after)
	}
}

// Package testproc runs the demo's binaries in tests: it starts a process,
// captures its output, waits until it logs that it listens, and stops it
// (by its own PID) when the test ends.
package testproc

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proc is a running process.
type Proc struct {
	Name string
	cmd  *exec.Cmd

	mu  sync.Mutex // guards out
	out bytes.Buffer

	done chan struct{}
}

// Output returns what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitOutput waits up to d for the process's output to contain s: its
// output reaches the test through a pipe, a moment after the process wrote
// it (a log line written as a response went out may still be on its way).
func (p *Proc) WaitOutput(s string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !strings.Contains(p.Output(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Stop kills the process and waits for it.
func (p *Proc) Stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Start runs cmd and waits until a line of its output matches ready (nil:
// does not wait); the first submatch of ready (if any) is returned, e.g. the
// listen address.
// The process is stopped when the test ends, and its output is logged if
// the test failed.
func Start(t testing.TB, name string, cmd *exec.Cmd, ready *regexp.Regexp) (*Proc, string) {
	t.Helper()
	p := &Proc{Name: name, cmd: cmd, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		pw.Close()
	}()
	found := make(chan string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line + "\n")
			p.mu.Unlock()
			if !sent && ready != nil {
				if m := ready.FindStringSubmatch(line); m != nil {
					sent = true
					if len(m) > 1 {
						found <- m[1]
					} else {
						found <- ""
					}
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.Output())
		}
	})
	if ready == nil {
		return p, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	select {
	case m := <-found:
		return p, m
	case <-p.done:
		t.Fatalf("%s exited before it was ready:\n%s", name, p.Output())
	case <-ctx.Done():
		t.Fatalf("%s not ready after 60s:\n%s", name, p.Output())
	}
	return nil, ""
}

// WaitHTTP polls url until it answers 200, failing the test after a minute
// or as soon as p exits.
func WaitHTTP(t testing.TB, p *Proc, url string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s answered:\n%s", p.Name, url, p.Output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not answer 200 within a minute (last error %v):\n%s", p.Name, url, err, p.Output())
		}
	}
}

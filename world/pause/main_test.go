package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary be the pause program itself when asked to,
// so the tests below watch a real process.
func TestMain(m *testing.M) {
	if os.Getenv("PAUSE_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSignals(t *testing.T) {
	tests := []struct {
		name   string
		ignore []syscall.Signal // sent first; pause must keep running
		stop   syscall.Signal
	}{
		{name: "SIGTERM ends it", stop: syscall.SIGTERM},
		{name: "SIGINT ends it", stop: syscall.SIGINT},
		{name: "SIGCHLD does not", ignore: []syscall.Signal{syscall.SIGCHLD, syscall.SIGCHLD}, stop: syscall.SIGTERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "PAUSE_TEST_RUN_MAIN=1")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			// Give the runtime time to install its handlers: a signal that
			// arrives before signal.Notify would kill it by default.
			time.Sleep(300 * time.Millisecond)
			for _, s := range tt.ignore {
				cmd.Process.Signal(s)
			}
			select {
			case err := <-done:
				t.Fatalf("pause exited on %v: %v", tt.ignore, err)
			case <-time.After(300 * time.Millisecond):
			}
			cmd.Process.Signal(tt.stop)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("pause exited with %v after %v, want status 0", err, tt.stop)
				}
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("pause still runs 10s after %v", tt.stop)
			}
		})
	}
}

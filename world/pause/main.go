// Package main is command pause: the sandbox container of every Pod in the test world: it
// holds the Pod's namespaces open, reaps the orphans that end up as its
// children (it is PID 1 when the Pod shares its process namespace), and
// exits on SIGTERM or SIGINT. It stands in for registry.k8s.io/pause, which
// cannot be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		reap()
	}
}

// reap collects every child that has exited; one SIGCHLD may stand for
// several.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

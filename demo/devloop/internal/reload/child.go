package reload

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// child is a started program (or Delve with the program under it).
type child struct {
	cmd    *exec.Cmd
	pid    int
	exited chan struct{} // closed when the process has exited
	err    error         // set before exited is closed
}

func startChild(cmd *exec.Cmd) (*child, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		if c.err == nil {
			c.err = fmt.Errorf("exit status 0")
		}
		close(c.exited)
	}()
	return c, nil
}

// stop sends SIGTERM, waits up to grace and then kills the process and every
// process it started (Delve runs the program in a process group of its own,
// so the group of the child is not enough).
func (c *child) stop(grace time.Duration, log *slog.Logger) {
	desc := descendants(c.pid)
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(grace):
		log.Warn(fmt.Sprintf("Process [%d] did not stop within %v; killing it", c.pid, grace))
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	for _, pid := range desc {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range desc {
		for alive(pid) && time.Now().Before(deadline) {
			reap(pid)
			time.Sleep(10 * time.Millisecond)
		}
		reap(pid)
	}
}

// reap collects the exit status of the child's descendants that were
// re-parented to this process (it is PID 1 in a container or a subreaper).
func (c *child) reap() {
	for _, pid := range descendants(c.pid) {
		reap(pid)
	}
}

func reap(pid int) {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
}

// alive reports whether pid is a process that has not exited; zombies count
// as gone.
func alive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	state, _, ok := parseStat(stat)
	return ok && state != 'Z' && state != 'X'
}

// descendants lists the processes below pid, found through /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if _, ppid, ok := parseStat(stat); ok {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// parseStat returns the state and parent PID from /proc/<pid>/stat, whose
// second field (the command name, in parentheses) may itself contain spaces
// and parentheses.
func parseStat(stat []byte) (state byte, ppid int, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return 0, 0, false
	}
	fields := bytes.Fields(stat[i+2:])
	if len(fields) < 2 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	ppid, err := strconv.Atoi(string(fields[1]))
	if err != nil {
		return 0, 0, false
	}
	return fields[0][0], ppid, true
}

// BecomeSubreaper makes orphaned descendants re-parent to this process, so
// a program Delve leaves behind can still be found and stopped.
func BecomeSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return errno
	}
	return nil
}

// Package command is the gefyra CLI: the cobra command tree (up, run,
// bridge, unbridge, list, status, down, version, completion and the hidden
// agent), each command's flags parsed into an options value, and the flows
// that drive the cluster (cli/internal/cluster), Docker
// (cli/internal/local) and the local agent (cli/internal/localagent).
//
// Every invocation stands on its own: what one command leaves for the next
// is in the state directory (cli/internal/state; GEFYRA_HOME relocates it),
// in the cluster, and in Docker's labels. Progress goes to stderr as
// `[INFO] ...` lines, failures as one `[ERROR] ...` line that says what to
// do; `-o json|yaml` writes results to stdout for machines.
package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/cli/internal/localagent"
)

// Env is what the commands take from the world around them.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Network and AgentName are the Docker network and the agent
	// container's name (local.DefaultNetwork and localagent.DefaultName
	// if empty).
	Network   string
	AgentName string
	// AgentBinary is the static Linux gefyra executable the agent image
	// is built from (default: $GEFYRA_AGENT_BINARY, else this executable).
	AgentBinary string
	// Labels are put on every container the CLI starts (tests mark theirs
	// with dev.gefyra.test=true).
	Labels map[string]string
	// Traffic reports per-bridge traffic for `gefyra status`; nil until
	// the data plane's metrics are wired in.
	Traffic TrafficSource
}

// DefaultEnv is the process's environment.
func DefaultEnv() Env {
	return Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

func (e *Env) fill() {
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.Getenv == nil {
		e.Getenv = func(string) string { return "" }
	}
	if e.Network == "" {
		e.Network = local.DefaultNetwork
	}
	if e.AgentName == "" {
		e.AgentName = localagent.DefaultName
	}
}

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// Main runs the CLI with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, args []string, env Env) int {
	env.fill()
	root, _ := newRoot(env)
	root.SetArgs(args)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	msg := strings.TrimSpace(err.Error())
	if errors.Is(err, context.Canceled) {
		msg = "interrupted"
	}
	var ue usageError
	usage := errors.As(err, &ue)
	if strings.HasPrefix(msg, "unknown command") {
		// cobra's own, with suggestions on lines of their own.
		usage = true
		first, rest, _ := strings.Cut(msg, "\n")
		if s := strings.Fields(strings.TrimPrefix(strings.TrimSpace(rest), "Did you mean this?")); len(s) > 0 {
			first += " (did you mean " + strings.Join(s, " or ") + "?)"
		}
		msg = first + " (see `gefyra --help`)"
	}
	fmt.Fprintf(env.Stderr, "[ERROR] %s\n", strings.ReplaceAll(msg, "\n", "; "))
	if usage {
		return ExitUsage
	}
	return ExitError
}

// usageError is bad input on the command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// app holds what the commands share.
type app struct {
	env Env
	ui  *ui
	// Global flags.
	kubeconfig, kubeContext, namespace string
	// capture, when set, receives each command's parsed options instead
	// of running it (flag parsing tests).
	capture func(any)
}

// runner is a command's parsed options.
type runner interface {
	run(ctx context.Context, a *app) error
}

func (a *app) exec(ctx context.Context, r runner) error {
	if a.capture != nil {
		a.capture(r)
		return nil
	}
	return r.run(ctx, a)
}

func newRoot(env Env) (*cobra.Command, *app) {
	a := &app{env: env, ui: &ui{w: env.Stderr}}
	root := &cobra.Command{
		Use:   "gefyra",
		Short: "Bridge a Kubernetes workload's traffic to a container on your machine",
		Long: `gefyra runs your code in a local Docker container as if it ran in the cluster:
traffic for one container of a Pod (sidecars included) is carried through a
WireGuard tunnel to your local container, where you debug and change it live.

  gefyra up                                   connect this machine to the cluster
  gefyra run -i IMAGE -N NAME -n NAMESPACE    start a local container
  gefyra bridge -N NAME -n NAMESPACE --deployment DEPLOY --port 8155:8155 \
      --container-name CONTAINER -I BRIDGE    send the workload's traffic to it
  gefyra down                                 remove everything again`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.HiddenDefaultCmd = false
	pf := root.PersistentFlags()
	pf.StringVar(&a.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(&a.kubeContext, "context", "", "the kubeconfig context to use (default: the current one)")
	pf.StringVarP(&a.namespace, "namespace", "n", "", "the Kubernetes namespace (default: the context's)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%v (see `%s --help`)", err, c.CommandPath())}
	})
	root.AddCommand(
		newUpCmd(a),
		newRunCmd(a),
		newBridgeCmd(a),
		newUnbridgeCmd(a),
		newListCmd(a),
		newStatusCmd(a),
		newDownCmd(a),
		newVersionCmd(a),
		newAgentCmd(a),
		newSandboxCmd(a),
	)
	for _, c := range root.Commands() {
		if c.Args == nil {
			c.Args = noArgs
		}
	}
	return root, a
}

// noArgs rejects positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q (see `%s --help`)", cmd.CommandPath(), args, cmd.CommandPath())
	}
	return nil
}

// outputFlag adds -o/--output.
func outputFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVarP(p, "output", "o", "", "print the result to stdout as json or yaml")
}

func checkOutput(o string) error {
	switch o {
	case "", "json", "yaml":
		return nil
	}
	return usagef("--output %q: want json or yaml", o)
}

package command

import (
	"context"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"gefyra.dev/gefyra/cli/internal/agentrun"
	"gefyra.dev/gefyra/internal/logging"
	"gefyra.dev/gefyra/internal/version"
)

type versionOptions struct {
	output string
}

type versionInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func newVersionCmd(a *app) *cobra.Command {
	o := versionOptions{}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print gefyra's version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output); err != nil {
				return err
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	outputFlag(cmd.Flags(), &o.output)
	return cmd
}

func (o *versionOptions) run(_ context.Context, a *app) error {
	v := versionInfo{Version: version.Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if o.output != "" {
		return printResult(a.env.Stdout, o.output, v)
	}
	_, err := fmt.Fprintf(a.env.Stdout, "gefyra %s (%s, %s)\n", v.Version, v.GoVersion, v.Platform)
	return err
}

type agentOptions struct {
	agentrun.Options
	logLevel, logFormat string
}

type agentStatusOptions struct {
	addr string
}

// newAgentCmd is the hidden `gefyra agent`: the process inside the agent
// container (see cli/internal/localagent), the same agent the standalone
// gefyra-agent command runs.
func newAgentCmd(a *app) *cobra.Command {
	o := agentOptions{}
	cmd := &cobra.Command{
		Use:    "agent --config FILE",
		Short:  "Run the local agent (inside the agent container)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.ConfigFile == "" {
				return usagef("--config is required")
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ConfigFile, "config", "", "the agent's config file (JSON)")
	f.StringVar(&o.StatusAddr, "status-addr", "127.0.0.1:0", "loopback address of the status endpoint")
	f.StringVar(&o.StatusAddrFile, "status-addr-file", "", "write the status endpoint's address here once it listens")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "", "json or text (default: text on a terminal, else json)")

	so := agentStatusOptions{}
	status := &cobra.Command{
		Use:   "status --addr HOST:PORT",
		Short: "Print the running agent's status as JSON",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.exec(cmd.Context(), &so)
		},
		Args: noArgs,
	}
	status.Flags().StringVar(&so.addr, "addr", "127.0.0.1:8099", "the agent's status endpoint")
	cmd.AddCommand(status, newAgentNetnsCmd(a))
	return cmd
}

func (o *agentOptions) run(ctx context.Context, a *app) error {
	log, err := logging.New(logging.Options{Level: o.logLevel, Format: o.logFormat, Out: a.env.Stderr})
	if err != nil {
		return usageError{err}
	}
	opts := o.Options
	opts.Log = log
	return agentrun.Run(ctx, opts)
}

func (o *agentStatusOptions) run(ctx context.Context, a *app) error {
	s, err := agentrun.FetchStatus(ctx, o.addr)
	if err != nil {
		return err
	}
	return printResult(a.env.Stdout, "json", s)
}

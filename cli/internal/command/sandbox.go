package command

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"gefyra.dev/gefyra/cli/internal/state"
	"gefyra.dev/gefyra/demo/appsrc"
	"gefyra.dev/gefyra/demo/sandbox"
)

func newSandboxCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sandbox up|down|status",
		Short: "The tutorial's whole environment on this machine: a cluster with gefyra and the oauth2-demo workload",
		Long: `sandbox starts, on this machine, everything the tutorial needs and leaves it
running, so that you type the tutorial's commands (gefyra up, run, bridge,
down) yourself: Docker Engine, a real single-node Kubernetes built from the
repository's source (world/world.sh), gefyra's add-on from deploy/, and the
oauth2-demo workload (the backend with its bug behind an oauth2-proxy
sidecar) with its OIDC provider and the user john@gefyra.dev.

It needs root and the gefyra repository (found from the working directory,
or --root). ` + "`gefyra sandbox down`" + ` removes it all again, and stops Docker
Engine and the cluster only if ` + "`up`" + ` started them.`,
		Example: "  gefyra sandbox up\n  gefyra sandbox status\n  gefyra sandbox down",
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("`gefyra sandbox %s`: no such command; want up, down or status", args[0])
			}
			return usagef("`gefyra sandbox` needs a command: up, down or status")
		},
	}
	cmd.AddCommand(newSandboxUpCmd(a), newSandboxDownCmd(a), newSandboxStatusCmd(a))
	for _, c := range cmd.Commands() {
		c.Args = noArgs
	}
	return cmd
}

type sandboxUpOptions struct {
	root   string
	output string
}

func newSandboxUpCmd(a *app) *cobra.Command {
	o := sandboxUpOptions{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the tutorial's environment and leave it running",
		Long: `up starts what is not running yet (Docker Engine, the cluster), builds and
loads the images (cached in /var/cache/gefyra), deploys gefyra's add-on and
the oauth2-demo workload, logs in as john@gefyra.dev to check it, and prints
the KUBECONFIG to export, the demo's URL, the login and the tutorial's next
commands. A second up says that it runs already.

Before it starts anything it checks, and says in one line what is wrong:
root, the repository, Docker Engine (started if it is installed but not
running), and that what the sandbox pins is free: on a cluster that runs
already the demo's ClusterIPs, stowaway's NodePort and the namespaces, on
this machine the address ranges of a cluster it starts. A failure later
removes what it had started.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output); err != nil {
				return err
			}
			return a.exec(cmd.Context(), &o)
		},
	}
	cmd.Flags().StringVar(&o.root, "root", "", "the gefyra repository (default: the one of the working directory)")
	outputFlag(cmd.Flags(), &o.output)
	return cmd
}

func (o *sandboxUpOptions) run(ctx context.Context, a *app) error {
	if err := sandbox.NeedRoot("up"); err != nil {
		return err
	}
	ensureGoOnPath()
	root := o.root
	if root == "" {
		r, err := appsrc.RepoRoot(ctx)
		if err != nil {
			return fmt.Errorf("gefyra sandbox up needs the gefyra repository, which it builds the cluster and the images from (%v): "+
				"run it inside a clone of the repository, or pass --root DIR", err)
		}
		root = r
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	s := a.sandbox(root)
	start := time.Now()
	info, err := s.Up(ctx)
	if err != nil {
		return err
	}
	if info.Already {
		a.ui.Info("The sandbox is running already: nothing to start")
	} else {
		a.ui.Info("The sandbox is up after %s", time.Since(start).Round(time.Second))
	}
	if o.output != "" {
		return printResult(a.env.Stdout, o.output, info)
	}
	var exports []string
	if p := gefyraPathHint(); p != "" {
		exports = append(exports, p)
	}
	info.WriteText(a.env.Stdout, exports...)
	return nil
}

type sandboxDownOptions struct{}

func newSandboxDownCmd(a *app) *cobra.Command {
	o := sandboxDownOptions{}
	return &cobra.Command{
		Use:   "down",
		Short: "Remove the sandbox and every trace of it",
		Long: `down removes what the sandbox and the tutorial's commands made: it runs
` + "`gefyra down`" + ` for the sandbox's cluster (bridges, client, local containers,
agent), removes gefyra's add-on, the oauth2-demo workload and the images it
put into Docker, and stops the cluster and Docker Engine if ` + "`sandbox up`" + `
started them (then checks that the machine is as before). The binaries and
images built for it stay cached for the next up. Running it twice is
harmless.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.exec(cmd.Context(), &o) },
	}
}

func (o *sandboxDownOptions) run(ctx context.Context, a *app) error {
	ensureGoOnPath()
	if err := a.sandbox("").Down(ctx); err != nil {
		return err
	}
	a.ui.Info("The sandbox is down")
	return nil
}

type sandboxStatusOptions struct {
	output string
}

func newSandboxStatusCmd(a *app) *cobra.Command {
	o := sandboxStatusOptions{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Say what of the sandbox runs",
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

func (o *sandboxStatusOptions) run(ctx context.Context, a *app) error {
	st, err := a.sandbox("").Status(ctx)
	if err != nil {
		return err
	}
	if o.output != "" {
		return printResult(a.env.Stdout, o.output, st)
	}
	writeSandboxStatus(a.env.Stdout, st)
	return nil
}

func writeSandboxStatus(w io.Writer, st *sandbox.Status) {
	var b strings.Builder
	switch {
	case !st.Running:
		b.WriteString("No sandbox is running (`gefyra sandbox up` starts one).\n")
	case !st.Ready:
		b.WriteString("A sandbox is starting, or its start failed half-way (`gefyra sandbox down` removes it):\n")
	default:
		fmt.Fprintf(&b, "The sandbox is up since %s:\n", st.Info.Started.Local().Format(time.DateTime))
	}
	for _, p := range st.Parts {
		mark := "ok"
		if !p.OK {
			mark = "!!"
		}
		fmt.Fprintf(&b, "  %s %-17s %s\n", mark, p.Name, p.State)
	}
	if st.Info != nil {
		fmt.Fprintf(&b, "\n  export KUBECONFIG=%s\n  export LOCAL_DIR=%s\n  URL:    %s\n  Login:  %s, password %s\n",
			st.Info.Kubeconfig, st.Info.LocalDir, st.Info.URL, st.Info.User, st.Info.Password)
	}
	io.WriteString(w, b.String())
}

// sandbox is the sandbox of this machine, with `gefyra down` for its
// cluster as the first step of its removal.
func (a *app) sandbox(root string) *sandbox.Sandbox {
	// Without a home directory gefyra keeps no state, and the sandbox has
	// none to clean up.
	home, _ := state.Home(a.env.Getenv)
	return &sandbox.Sandbox{
		Root: root,
		Out:  a.env.Stderr,
		Home: home,
		GefyraDown: func(ctx context.Context, kubeconfig string, progress io.Writer) error {
			b := &app{env: a.env, ui: &ui{w: progress}, kubeconfig: kubeconfig}
			b.env.Stderr = progress
			return (&downOptions{timeout: 2 * time.Minute}).run(ctx, b)
		},
	}
}

// goDir is where Go's installer puts the toolchain.
const goDir = "/usr/local/go/bin"

// ensureGoOnPath: the world's scripts build from source, with the Go
// toolchain that sudo's reduced PATH often lacks.
func ensureGoOnPath() {
	if _, err := exec.LookPath("go"); err == nil {
		return
	}
	if _, err := os.Stat(filepath.Join(goDir, "go")); err == nil {
		os.Setenv("PATH", os.Getenv("PATH")+string(os.PathListSeparator)+goDir)
	}
}

// gefyraPathHint is an `export PATH=...` line when `gefyra` on PATH is not
// this executable (e.g. the repository's bin/gefyra).
func gefyraPathHint() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(self); err == nil {
		self = r
	}
	if onPath, err := exec.LookPath("gefyra"); err == nil {
		if r, err := filepath.EvalSymlinks(onPath); err == nil && r == self {
			return ""
		}
	}
	return "export PATH=" + filepath.Dir(self) + ":$PATH"
}

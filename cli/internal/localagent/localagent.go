// Package localagent runs the developer's end of the tunnel (the agent of
// cli/internal/agent) as a Docker container on the gefyra network, so it
// reaches the local containers by name through Docker's DNS. Its image is
// built on the fly FROM scratch out of the gefyra executable itself (which
// runs the agent as `gefyra agent`) and loaded into Docker: no registry is
// involved. The agent reads its config from the CLI's state directory,
// bind-mounted read-only; the CLI changes the targets by rewriting the file
// and sending SIGHUP, and reads the agent's status with `docker exec`.
package localagent

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/cli/internal/local"
	"gefyra.dev/gefyra/cli/internal/state"
	"gefyra.dev/gefyra/internal/ociimage"
	"gefyra.dev/gefyra/internal/version"
)

// DefaultName is the agent container's name.
const DefaultName = "gefyra-agent"

// Inside the agent container.
const (
	// Executable is where the gefyra executable lives in the image.
	Executable = "/gefyra"
	// ConfigDir is where the state's agent directory is mounted.
	ConfigDir = "/etc/gefyra"
	// StatusAddr is the agent's status endpoint, on the container's own
	// loopback.
	StatusAddr = "127.0.0.1:8099"
	// ImageRepository is the agent image's name; the tag is the version
	// and a hash of the executable.
	ImageRepository = "gefyra.dev/gefyra-agent"
)

// EnvBinary names a Linux executable of gefyra to build the agent image
// from, instead of the running one (for a CLI that is not a static Linux
// executable, e.g. on macOS).
const EnvBinary = "GEFYRA_AGENT_BINARY"

// Agent manages the agent container.
type Agent struct {
	Engine *local.Engine
	// Name of the container (DefaultName if empty).
	Name string
	// Binary is the static Linux gefyra executable for the image.
	Binary string
	// State is the state directory whose agent directory is mounted.
	State state.Dir
	// Context is the kubeconfig context the agent serves (a label).
	Context string
	// Labels are extra labels for the container.
	Labels map[string]string
	// NoEgress leaves the agent without the way into the cluster for the
	// local containers (see netns.go), and so without privileges.
	NoEgress bool
}

func (a *Agent) name() string {
	if a.Name == "" {
		return DefaultName
	}
	return a.Name
}

// ContainerName is the agent container's name.
func (a *Agent) ContainerName() string { return a.name() }

// ImageTag returns the agent image's tag for the executable at binary.
func ImageTag(binary string) (string, error) {
	f, err := os.Open(binary)
	if err != nil {
		return "", fmt.Errorf("agent image: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("agent image: %w", err)
	}
	v := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, version.Version)
	if len(v) > 40 {
		v = v[:40]
	}
	return ImageRepository + ":" + v + "-" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// CheckBinary makes sure binary can run in a FROM scratch image on this
// Docker host: a static amd64 Linux ELF executable.
func CheckBinary(binary string) error {
	advice := "set " + EnvBinary + " to a static Linux build of gefyra (CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build ./cli/cmd/gefyra)"
	f, err := elf.Open(binary)
	if err != nil {
		return fmt.Errorf("%s is not a Linux executable (%v): %s", binary, err, advice)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s is built for %s, the agent image for amd64: %s", binary, f.Machine, advice)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked and cannot run in a FROM scratch image: %s", binary, advice)
		}
	}
	return nil
}

// EnsureImage builds and loads the agent image unless Docker has it; built
// says whether it did.
func (a *Agent) EnsureImage(ctx context.Context) (tag string, built bool, err error) {
	tag, err = ImageTag(a.Binary)
	if err != nil {
		return "", false, err
	}
	if ok, err := a.Engine.ImageExists(ctx, tag); err != nil {
		return "", false, err
	} else if ok {
		return tag, false, nil
	}
	if err := CheckBinary(a.Binary); err != nil {
		return "", false, err
	}
	dir, err := os.MkdirTemp("", "gefyra-agent-image-")
	if err != nil {
		return "", false, err
	}
	defer os.RemoveAll(dir)
	tarball := filepath.Join(dir, "agent.tar")
	_, err = ociimage.Build(ociimage.Spec{
		Tag:        tag,
		Files:      []ociimage.File{{Src: a.Binary, Dst: Executable}},
		Dirs:       []ociimage.Dir{{Path: ConfigDir}},
		Entrypoint: []string{Executable},
		Cmd:        Command(),
		Labels:     map[string]string{local.LabelManaged: "true", local.LabelRole: local.RoleAgent},
	}, tarball)
	if err != nil {
		return "", false, fmt.Errorf("building the agent image: %w", err)
	}
	if err := a.Engine.LoadImage(ctx, tarball); err != nil {
		return "", false, err
	}
	return tag, true, nil
}

// Command is the agent's command line inside the container.
func Command() []string {
	return []string{"agent", "--config", ConfigDir + "/" + state.AgentConfigFile, "--status-addr", StatusAddr}
}

// configHash identifies cfg beyond its targets (which the agent applies
// without a restart) plus the image.
func configHash(cfg agent.Config, image string) string {
	cfg.Targets = nil
	b, _ := json.Marshal(cfg)
	h := sha256.Sum256(append(b, image...))
	return hex.EncodeToString(h[:])[:16]
}

// Start writes cfg and makes sure the agent container runs it: a running
// agent with the same config (targets aside) is kept, one with another is
// replaced. started says whether a container was (re)started.
func (a *Agent) Start(ctx context.Context, cfg agent.Config) (started bool, err error) {
	if cfg.EgressDevice == "" && !a.NoEgress {
		cfg.EgressDevice = EgressDevice
	}
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	image, _, err := a.EnsureImage(ctx)
	if err != nil {
		return false, err
	}
	if err := a.State.WriteAgentConfig(cfg); err != nil {
		return false, err
	}
	hash := configHash(cfg, image)
	c, ok, err := a.Engine.Inspect(ctx, a.name())
	if err != nil {
		return false, err
	}
	if ok {
		if c.Running() && c.Labels[local.LabelConfig] == hash && c.Labels[local.LabelManaged] == "true" {
			return false, a.Reload(ctx)
		}
		if c.Labels[local.LabelManaged] != "true" {
			return false, fmt.Errorf("a container named %s exists that gefyra did not make: remove it (docker rm -f %s)", a.name(), a.name())
		}
		if err := a.Engine.Remove(ctx, c.ID); err != nil {
			return false, err
		}
	}
	labels := map[string]string{}
	maps.Copy(labels, a.Labels)
	labels[local.LabelContext], labels[local.LabelConfig] = a.Context, hash
	spec := local.RunSpec{
		Name:                 a.name(),
		Image:                image,
		Role:                 local.RoleAgent,
		Labels:               labels,
		Mounts:               []local.Mount{{Source: a.State.AgentDir(), Target: ConfigDir, ReadOnly: true}},
		Hardened:             true,
		RestartUnlessStopped: true,
	}
	if cfg.EgressDevice != "" {
		// The egress device and its routes need CAP_NET_ADMIN in effect,
		// which only root has; the kernel forwards the local containers'
		// packets into the device. Root without CAP_DAC_OVERRIDE reads
		// the developer's 0600 config only with CAP_DAC_READ_SEARCH; all
		// the container sees is that directory and the executable.
		spec.CapAdd = []string{"NET_ADMIN"}
		if os.Getuid() > 0 {
			spec.CapAdd = append(spec.CapAdd, "DAC_READ_SEARCH")
		}
		spec.Devices = []string{"/dev/net/tun"}
		spec.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"}
	} else if uid := os.Getuid(); uid > 0 {
		// The agent needs no privileges; as the developer's own user it
		// can read the 0600 config file and nothing else.
		spec.User = strconv.Itoa(uid) + ":" + strconv.Itoa(os.Getgid())
	}
	_, err = a.Engine.Run(ctx, spec)
	if err != nil && cfg.EgressDevice != "" && strings.Contains(err.Error(), "/dev/net/tun") {
		// A Docker host without TUN devices: bridges still work, and
		// `gefyra run` says that the cluster's names do not.
		a.NoEgress = true
		cfg.EgressDevice = ""
		return a.Start(ctx, cfg)
	}
	if err != nil {
		return false, fmt.Errorf("starting the agent: %w", err)
	}
	return true, nil
}

// Reload makes the running agent read its config file again at once (it
// also notices the change by itself within a second).
func (a *Agent) Reload(ctx context.Context) error {
	return a.Engine.Signal(ctx, a.name(), "HUP")
}

// SetTargets writes targets into the agent's config and has the agent
// apply them, then waits until it reports them.
func (a *Agent) SetTargets(ctx context.Context, targets map[uint16]string) error {
	cfg, err := a.State.ReadAgentConfig()
	if err != nil {
		return fmt.Errorf("the agent's config: %w (run `gefyra up`)", err)
	}
	cfg.Targets = targets
	if err := a.State.WriteAgentConfig(cfg); err != nil {
		return err
	}
	// A stopped agent reads the file when it starts again.
	if c, ok, err := a.Engine.Inspect(ctx, a.name()); err != nil {
		return err
	} else if !ok || !c.Running() {
		return fmt.Errorf("%w: run `gefyra up`", ErrNotRunning)
	}
	if err := a.Reload(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := a.Status(ctx)
		if err == nil && maps.Equal(s.Targets, targets) {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("it reports targets %v", s.Targets)
			}
			return fmt.Errorf("the agent did not apply its new targets: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ErrNotRunning says the agent container is not running.
var ErrNotRunning = errors.New("the local agent is not running")

// Container returns the agent container; ok is false if there is none.
func (a *Agent) Container(ctx context.Context) (local.Container, bool, error) {
	return a.Engine.Inspect(ctx, a.name())
}

// Status asks the running agent for its status.
func (a *Agent) Status(ctx context.Context) (agent.Status, error) {
	c, ok, err := a.Engine.Inspect(ctx, a.name())
	if err != nil {
		return agent.Status{}, err
	}
	if !ok || !c.Running() {
		return agent.Status{}, fmt.Errorf("%w: run `gefyra up`", ErrNotRunning)
	}
	out, err := a.Engine.Exec(ctx, a.name(), []string{Executable, "agent", "status", "--addr", StatusAddr})
	if err != nil {
		return agent.Status{}, err
	}
	var s agent.Status
	if err := json.Unmarshal(out, &s); err != nil {
		return agent.Status{}, fmt.Errorf("the agent's status: %w", err)
	}
	return s, nil
}

// WaitUp waits until the agent reports a handshake with stowaway (the
// tunnel is up), calling progress with each status it reads.
func (a *Agent) WaitUp(ctx context.Context, progress func(agent.Status, error)) (agent.Status, error) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var last agent.Status
	var lastErr error
	for {
		s, err := a.Status(ctx)
		if err == nil && s.Up {
			return s, nil
		}
		if errors.Is(err, ErrNotRunning) {
			logs, _ := a.Engine.Logs(context.WithoutCancel(ctx), a.name(), 5)
			return s, fmt.Errorf("the local agent stopped; its last output: %s", strings.Join(strings.Fields(logs), " "))
		}
		if progress != nil {
			progress(s, err)
		}
		last, lastErr = s, err
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
			}
			return last, ctx.Err()
		case <-t.C:
		}
	}
}

// Remove removes the agent container.
func (a *Agent) Remove(ctx context.Context) error {
	return a.Engine.Remove(ctx, a.name())
}

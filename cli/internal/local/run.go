package local

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"

	"gefyra.dev/gefyra/cli/internal/errmark"
)

// RunSpec describes a container to start on the gefyra network.
type RunSpec struct {
	Name  string
	Image string
	// Entrypoint and Cmd replace the image's when not nil.
	Entrypoint []string
	Cmd        []string
	Env        []string // K=V
	Mounts     []Mount
	Ports      []PortBinding
	// AutoRemove removes the container when it exits (docker run --rm).
	AutoRemove bool
	// Role is RoleContainer or RoleAgent; Namespace is the Kubernetes
	// namespace a local container belongs to.
	Role      string
	Namespace string
	// Labels are extra labels (the managed labels are always set).
	Labels     map[string]string
	WorkingDir string
	User       string
	CapAdd     []string
	ExtraHosts []string
	Tmpfs      map[string]string
	// Hardened drops every capability, mounts the root file system read
	// only and forbids new privileges (for the agent).
	Hardened bool
	// RestartUnlessStopped brings the container back after Docker
	// restarts (for the agent).
	RestartUnlessStopped bool
	// Devices are host devices made available (e.g. /dev/net/tun).
	Devices []string
	// Sysctls are the container's (network namespace's) kernel settings.
	Sysctls map[string]string

	// The container's network: on the gefyra network (with Hostname,
	// network Aliases, and DNS servers, search list and options for its
	// resolver), or, with NetworkOf, in the network namespace of that
	// container (docker run --network container:NAME), whose address,
	// host name, published ports, /etc/hosts and resolver it shares: the
	// fields of the network are then refused. PIDOf shares that
	// container's PID namespace too.
	Hostname   string
	Aliases    []string
	DNS        []string
	DNSSearch  []string
	DNSOptions []string
	NetworkOf  string
	PIDOf      string
}

// Mount is a bind mount.
type Mount struct {
	Source, Target string
	ReadOnly       bool
}

// PortBinding publishes ContainerPort on HostIP:HostPort.
type PortBinding struct {
	HostIP        string
	HostPort      uint16
	ContainerPort uint16
	Protocol      string // tcp or udp
}

var missingExecutable = regexp.MustCompile(`exec: "([^"]*)": (?:executable file not found|stat [^:]*: no such file)`)

// StartupGrace is how long Run watches a new container for exiting at once.
const StartupGrace = 500 * time.Millisecond

// ErrNameTaken and ErrImageMissing are wrapped by Run's errors for those
// cases.
var (
	ErrNameTaken    = errors.New("container name taken")
	ErrImageMissing = errors.New("image not found locally")
)

// Run creates and starts the container and returns it as running. It
// checks first that the name is free and the image is present, and removes
// the container again if it does not start, so a failure leaves nothing
// behind.
func (e *Engine) Run(ctx context.Context, spec RunSpec) (Container, error) {
	if spec.Name == "" || spec.Image == "" {
		return Container{}, errors.New("a container needs a name and an image")
	}
	if c, ok, err := e.Inspect(ctx, spec.Name); err != nil {
		return Container{}, err
	} else if ok {
		return Container{}, errmark.New(ErrNameTaken, "a container named %s already exists (%s): remove it (docker rm -f %s) or choose another name",
			spec.Name, c.State, spec.Name)
	}
	if ok, err := e.ImageExists(ctx, spec.Image); err != nil {
		return Container{}, err
	} else if !ok {
		return Container{}, errmark.New(ErrImageMissing, "image %s not found locally: build or load it first (docker build, docker pull or docker load)",
			spec.Image)
	}
	cfg, host, netcfg, err := e.containerConfig(spec)
	if err != nil {
		return Container{}, err
	}
	created, err := e.api.ContainerCreate(ctx, cfg, host, netcfg, nil, spec.Name)
	if err != nil {
		if cerrdefs.IsConflict(err) {
			return Container{}, errmark.New(ErrNameTaken, "a container named %s already exists: remove it (docker rm -f %s) or choose another name",
				spec.Name, spec.Name)
		}
		return Container{}, fmt.Errorf("creating container %s: %w", spec.Name, err)
	}
	if err := e.api.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		e.Remove(context.WithoutCancel(ctx), created.ID)
		if m := missingExecutable.FindStringSubmatch(err.Error()); m != nil {
			return Container{}, fmt.Errorf("container %s cannot start: image %s has no %q (an image FROM scratch has no shell: run the program itself)",
				spec.Name, spec.Image, m[1])
		}
		return Container{}, fmt.Errorf("starting container %s: %w", spec.Name, err)
	}
	// A development container runs until stopped; one that ends at once
	// failed (a wrong command or argument): give it a moment to show it.
	wctx, cancel := context.WithTimeout(ctx, StartupGrace)
	waitC, errC := e.api.ContainerWait(wctx, created.ID, container.WaitConditionNotRunning)
	select {
	case <-waitC:
	case <-errC:
	}
	cancel()
	c, ok, err := e.Inspect(ctx, created.ID)
	switch {
	case err != nil:
		return Container{}, err
	case !ok:
		return Container{}, fmt.Errorf("container %s exited at once and was removed (--rm): run it without --rm and read `docker logs %s`", spec.Name, spec.Name)
	case !c.Running():
		logs, _ := e.Logs(ctx, created.ID, 5)
		e.Remove(context.WithoutCancel(ctx), created.ID)
		return Container{}, fmt.Errorf("container %s exited at once (%s); its last output: %s", spec.Name, c.State, oneLine(logs))
	}
	return c, nil
}

func (e *Engine) containerConfig(spec RunSpec) (*container.Config, *container.HostConfig, *network.NetworkingConfig, error) {
	if spec.NetworkOf != "" {
		var own []string
		for what, set := range map[string]bool{"published ports": len(spec.Ports) > 0, "extra hosts": len(spec.ExtraHosts) > 0,
			"a host name": spec.Hostname != "", "network aliases": len(spec.Aliases) > 0,
			"DNS settings": len(spec.DNS)+len(spec.DNSSearch)+len(spec.DNSOptions) > 0} {
			if set {
				own = append(own, what)
			}
		}
		if len(own) > 0 {
			slices.Sort(own)
			return nil, nil, nil, fmt.Errorf("container %s shares the network of %s and cannot have %s of its own", spec.Name, spec.NetworkOf, strings.Join(own, ", "))
		}
	}
	role := spec.Role
	if role == "" {
		role = RoleContainer
	}
	extra := map[string]string{}
	for k, v := range spec.Labels {
		extra[k] = v
	}
	if spec.Namespace != "" {
		extra[LabelNamespace] = spec.Namespace
	}
	cfg := &container.Config{
		Image:      spec.Image,
		Env:        spec.Env,
		Labels:     e.managedLabels(role, extra),
		WorkingDir: spec.WorkingDir,
		User:       spec.User,
		Hostname:   spec.Hostname,
	}
	if spec.Entrypoint != nil {
		cfg.Entrypoint = spec.Entrypoint
	}
	if spec.Cmd != nil {
		cfg.Cmd = spec.Cmd
	}
	host := &container.HostConfig{
		NetworkMode: container.NetworkMode(e.network),
		AutoRemove:  spec.AutoRemove,
		CapAdd:      spec.CapAdd,
		ExtraHosts:  spec.ExtraHosts,
		Tmpfs:       spec.Tmpfs,
		DNS:         spec.DNS,
		DNSSearch:   spec.DNSSearch,
		DNSOptions:  spec.DNSOptions,
		Sysctls:     spec.Sysctls,
	}
	for _, d := range spec.Devices {
		host.Devices = append(host.Devices, container.DeviceMapping{PathOnHost: d, PathInContainer: d, CgroupPermissions: "rwm"})
	}
	if spec.PIDOf != "" {
		host.PidMode = container.PidMode("container:" + spec.PIDOf)
	}
	for _, m := range spec.Mounts {
		b := m.Source + ":" + m.Target
		if m.ReadOnly {
			b += ":ro"
		}
		host.Binds = append(host.Binds, b)
	}
	if len(spec.Ports) > 0 {
		cfg.ExposedPorts = nat.PortSet{}
		host.PortBindings = nat.PortMap{}
		for _, p := range spec.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = "tcp"
			}
			port, err := nat.NewPort(proto, strconv.Itoa(int(p.ContainerPort)))
			if err != nil {
				return nil, nil, nil, err
			}
			cfg.ExposedPorts[port] = struct{}{}
			hp := ""
			if p.HostPort != 0 {
				hp = strconv.Itoa(int(p.HostPort))
			}
			host.PortBindings[port] = append(host.PortBindings[port], nat.PortBinding{HostIP: p.HostIP, HostPort: hp})
		}
	}
	if spec.Hardened {
		host.CapDrop = []string{"ALL"}
		host.ReadonlyRootfs = true
		host.SecurityOpt = []string{"no-new-privileges"}
	}
	if spec.RestartUnlessStopped {
		host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyUnlessStopped}
	}
	netcfg := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{e.network: {Aliases: spec.Aliases}}}
	if spec.NetworkOf != "" {
		host.NetworkMode = container.NetworkMode("container:" + spec.NetworkOf)
		netcfg = &network.NetworkingConfig{}
	}
	return cfg, host, netcfg, nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "(none)"
	}
	if len(s) > 300 {
		s = s[len(s)-300:]
	}
	return s
}

// WaitLog waits until the output of the container name holds s. It fails
// at once, with the container's last output, if the container stops.
func (e *Engine) WaitLog(ctx context.Context, name, s string) error {
	for {
		logs, err := e.Logs(ctx, name, 200)
		if err == nil && strings.Contains(logs, s) {
			return nil
		}
		c, ok, ierr := e.Inspect(ctx, name)
		switch {
		case ierr != nil:
			return ierr
		case !ok:
			return fmt.Errorf("container %s is gone", name)
		case !c.Running():
			return fmt.Errorf("container %s stopped (%s); its last output: %s", name, c.State, oneLine(logs))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for container %s: %w; its last output: %s", name, ctx.Err(), oneLine(logs))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Package local is the developer's side in Docker: the Docker network the
// local containers and the agent share, the containers `gefyra run` starts,
// and the agent container `gefyra up` starts. Every container and network
// it makes carries the label dev.gefyra.managed=true (plus the network's
// name, the role and the Kubernetes namespace), so `gefyra down` finds them
// from Docker alone, even after a crash lost the CLI's state.
//
// It speaks the Docker Engine API (github.com/docker/docker/client) and
// negotiates the API version, so old engines (API 1.41, Docker 20.10) work.
package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"gefyra.dev/gefyra/cli/internal/errmark"
)

// Labels on everything this package makes.
const (
	LabelManaged   = "dev.gefyra.managed"   // "true"
	LabelNetwork   = "dev.gefyra.network"   // the gefyra network's name
	LabelRole      = "dev.gefyra.role"      // RoleContainer, RoleAgent or RoleNetns
	LabelNamespace = "dev.gefyra.namespace" // the Kubernetes namespace of a local container
	LabelContext   = "dev.gefyra.context"   // the kubeconfig context the agent serves
	LabelConfig    = "dev.gefyra.config"    // a hash of the agent's config, beyond its targets
	LabelNetnsOf   = "dev.gefyra.netns-of"  // on a network namespace holder: the local container it holds it for
)

// Roles of managed containers.
const (
	RoleContainer = "container"
	RoleAgent     = "agent"
	// RoleNetns is a small container that holds the network namespace a
	// local container joins (see cli/internal/agent/netns).
	RoleNetns = "netns"
)

// DefaultNetwork is the Docker network of the CLI.
const DefaultNetwork = "gefyra"

// ErrDockerUnavailable is wrapped by every error that means the Docker
// Engine cannot be reached.
var ErrDockerUnavailable = errors.New("Docker is not reachable")

// Engine is a connection to the Docker Engine, scoped to one gefyra
// network.
type Engine struct {
	api     *client.Client
	network string
}

// Connect connects to the Docker Engine named by the environment
// (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH; the local socket by
// default) and checks that it answers. network is the gefyra network
// (DefaultNetwork if empty).
func Connect(ctx context.Context, network string) (*Engine, error) {
	if network == "" {
		network = DefaultNetwork
	}
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, errmark.New(ErrDockerUnavailable, "Docker is not reachable (%v): check DOCKER_HOST", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := api.Ping(pctx); err != nil {
		api.Close()
		return nil, errmark.New(ErrDockerUnavailable, "Docker is not reachable at %s (%v): start Docker (e.g. `sudo systemctl start docker`) or point DOCKER_HOST at it, then try again",
			api.DaemonHost(), shortErr(err))
	}
	api.NegotiateAPIVersion(ctx)
	return &Engine{api: api, network: network}, nil
}

// shortErr drops the Docker client's own advice, which Connect replaces.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, ". Is the docker daemon running"); i > 0 {
		s = s[:i]
	}
	return s
}

// Close releases the connection.
func (e *Engine) Close() error { return e.api.Close() }

// Network is the gefyra network's name.
func (e *Engine) Network() string { return e.network }

// Host is the Docker Engine's address.
func (e *Engine) Host() string { return e.api.DaemonHost() }

// APIVersion is the negotiated API version.
func (e *Engine) APIVersion() string { return e.api.ClientVersion() }

// EnsureNetwork creates the gefyra network (a bridge, labelled as ours) if
// it is missing; created says whether it did.
func (e *Engine) EnsureNetwork(ctx context.Context) (created bool, err error) {
	if _, err := e.api.NetworkInspect(ctx, e.network, network.InspectOptions{}); err == nil {
		return false, nil
	} else if !cerrdefs.IsNotFound(err) {
		return false, fmt.Errorf("docker network %s: %w", e.network, err)
	}
	_, err = e.api.NetworkCreate(ctx, e.network, network.CreateOptions{
		Driver: "bridge",
		Labels: map[string]string{LabelManaged: "true", LabelNetwork: e.network},
	})
	if err != nil {
		if cerrdefs.IsConflict(err) || strings.Contains(err.Error(), "already exists") {
			return false, nil // made by a gefyra running at the same time
		}
		return false, fmt.Errorf("creating docker network %s: %w", e.network, err)
	}
	return true, nil
}

// NetworkInfo describes the gefyra network.
type NetworkInfo struct {
	Name    string
	Exists  bool
	Managed bool // made by gefyra (labelled)
	Subnet  string
	Gateway string
}

// NetworkInfo inspects the gefyra network.
func (e *Engine) NetworkInfo(ctx context.Context) (NetworkInfo, error) {
	n, err := e.api.NetworkInspect(ctx, e.network, network.InspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return NetworkInfo{Name: e.network}, nil
	}
	if err != nil {
		return NetworkInfo{}, fmt.Errorf("docker network %s: %w", e.network, err)
	}
	info := NetworkInfo{Name: e.network, Exists: true, Managed: n.Labels[LabelManaged] == "true"}
	if len(n.IPAM.Config) > 0 {
		info.Subnet, info.Gateway = n.IPAM.Config[0].Subnet, n.IPAM.Config[0].Gateway
	}
	return info, nil
}

// RemoveNetwork removes the gefyra network if gefyra made it and no
// container uses it any more; removed says whether it did.
func (e *Engine) RemoveNetwork(ctx context.Context) (removed bool, err error) {
	n, err := e.api.NetworkInspect(ctx, e.network, network.InspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("docker network %s: %w", e.network, err)
	}
	if n.Labels[LabelManaged] != "true" || len(n.Containers) > 0 {
		return false, nil
	}
	if err := e.api.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
		return false, fmt.Errorf("removing docker network %s: %w", e.network, err)
	}
	return true, nil
}

// Container is a managed container as Docker reports it.
type Container struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Image     string `json:"image"`
	State     string `json:"state"` // running, exited, created, ...
	IP        string `json:"ip,omitempty"`
	Role      string `json:"role"`
	Namespace string `json:"namespace,omitempty"`
	// NetworkOf is the container whose network namespace this one shares
	// (docker run --network container:NAME); IP is that one's.
	NetworkOf string            `json:"networkOf,omitempty"`
	Labels    map[string]string `json:"-"`
}

// Running says whether the container runs.
func (c Container) Running() bool { return c.State == "running" }

// Inspect returns the container named name (managed or not); ok is false
// if there is none.
func (e *Engine) Inspect(ctx context.Context, name string) (c Container, ok bool, err error) {
	r, err := e.api.ContainerInspect(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return Container{}, false, nil
	}
	if err != nil {
		return Container{}, false, fmt.Errorf("inspecting container %s: %w", name, err)
	}
	c = Container{ID: r.ID, Name: strings.TrimPrefix(r.Name, "/")}
	if r.Config != nil {
		c.Image, c.Labels = r.Config.Image, r.Config.Labels
		c.Role, c.Namespace = r.Config.Labels[LabelRole], r.Config.Labels[LabelNamespace]
	}
	if r.State != nil {
		c.State = r.State.Status
	}
	if r.NetworkSettings != nil {
		if ep := r.NetworkSettings.Networks[e.network]; ep != nil {
			c.IP = ep.IPAddress
		}
	}
	if r.HostConfig != nil && r.HostConfig.NetworkMode.IsContainer() {
		// Its address is the namespace holder's.
		h, ok, err := e.Inspect(ctx, r.HostConfig.NetworkMode.ConnectedContainer())
		if err != nil {
			return Container{}, false, err
		}
		if ok {
			c.NetworkOf, c.IP = h.Name, h.IP
		}
	}
	return c, true, nil
}

// List returns the managed containers on the gefyra network (running or
// not), sorted by name.
func (e *Engine) List(ctx context.Context) ([]Container, error) {
	list, err := e.api.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelNetwork+"="+e.network),
	)})
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	out := make([]Container, 0, len(list))
	byID := map[string]int{}
	for _, s := range list {
		c := Container{ID: s.ID, Image: s.Image, State: s.State, Labels: s.Labels,
			Role: s.Labels[LabelRole], Namespace: s.Labels[LabelNamespace]}
		if len(s.Names) > 0 {
			c.Name = strings.TrimPrefix(s.Names[0], "/")
		}
		if s.NetworkSettings != nil {
			if ep := s.NetworkSettings.Networks[e.network]; ep != nil {
				c.IP = ep.IPAddress
			}
		}
		c.NetworkOf = string(container.NetworkMode(s.HostConfig.NetworkMode).ConnectedContainer())
		byID[c.ID] = len(out)
		out = append(out, c)
	}
	// A container in a holder's network namespace has the holder's
	// address (holders are managed containers on the network too).
	for i, c := range out {
		if c.NetworkOf == "" {
			continue
		}
		if j, ok := byID[c.NetworkOf]; ok {
			out[i].NetworkOf, out[i].IP = out[j].Name, out[j].IP
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove stops and removes the container named name; a missing one is
// not an error.
func (e *Engine) Remove(ctx context.Context, name string) error {
	err := e.api.ContainerRemove(ctx, name, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) && !isRemovalInProgress(err) {
		return fmt.Errorf("removing container %s: %w", name, err)
	}
	return nil
}

func isRemovalInProgress(err error) bool {
	return cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress")
}

// RemoveManaged removes every managed container on the gefyra network
// (role "" means any role) and returns their names.
func (e *Engine) RemoveManaged(ctx context.Context, role string) ([]string, error) {
	list, err := e.List(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, c := range list {
		if role != "" && c.Role != role {
			continue
		}
		if err := e.Remove(ctx, c.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, c.Name)
	}
	return removed, errors.Join(errs...)
}

// Signal sends sig (e.g. "HUP") to the container's main process.
func (e *Engine) Signal(ctx context.Context, name, sig string) error {
	if err := e.api.ContainerKill(ctx, name, sig); err != nil {
		return fmt.Errorf("signalling container %s: %w", name, err)
	}
	return nil
}

// Exec runs argv in the running container and returns its standard output;
// a non-zero exit is an error carrying its standard error.
func (e *Engine) Exec(ctx context.Context, name string, argv []string) ([]byte, error) {
	created, err := e.api.ContainerExecCreate(ctx, name, container.ExecOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", name, err)
	}
	att, err := e.api.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", name, err)
	}
	defer att.Close()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader)
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		att.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", name, err)
	}
	res, err := e.api.ContainerExecInspect(ctx, created.ID)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", name, err)
	}
	if res.ExitCode != 0 {
		return stdout.Bytes(), fmt.Errorf("exec %s in %s: exit code %d: %s", strings.Join(argv, " "), name, res.ExitCode,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Logs returns the last lines of the container's output.
func (e *Engine) Logs(ctx context.Context, name string, lines int) (string, error) {
	rc, err := e.api.ContainerLogs(ctx, name, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: fmt.Sprint(lines)})
	if err != nil {
		return "", err
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 1<<20)); err != nil {
		return out.String(), err
	}
	return out.String(), nil
}

// ImageExists says whether the image ref is present locally.
func (e *Engine) ImageExists(ctx context.Context, ref string) (bool, error) {
	_, err := e.api.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	return true, nil
}

// LoadImage loads a docker-archive tarball (as `docker load`).
func (e *Engine) LoadImage(ctx context.Context, tarball string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	resp, err := e.api.ImageLoad(ctx, f)
	if err != nil {
		return fmt.Errorf("docker load %s: %w", tarball, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("docker load %s: %w", tarball, err)
	}
	// Errors of a load arrive in the JSON stream, not as a status code.
	if i := bytes.Index(body, []byte(`"error"`)); i >= 0 {
		return fmt.Errorf("docker load %s: %s", tarball, strings.TrimSpace(string(body[i:])))
	}
	return nil
}

// managedLabels are the labels of a managed container with role.
func (e *Engine) managedLabels(role string, extra map[string]string) map[string]string {
	l := map[string]string{}
	for k, v := range extra {
		l[k] = v
	}
	l[LabelManaged] = "true"
	l[LabelNetwork] = e.network
	l[LabelRole] = role
	return l
}

// PruneImages removes the images labelled as gefyra's with role (the
// agent's, built anew for every gefyra executable) except keep, unless a
// container still uses them, and returns their tags.
func (e *Engine) PruneImages(ctx context.Context, role, keep string) ([]string, error) {
	list, err := e.api.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelRole+"="+role),
	)})
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	var removed []string
	var errs []error
	for _, img := range list {
		if slices.Contains(img.RepoTags, keep) {
			continue
		}
		_, err := e.api.ImageRemove(ctx, img.ID, image.RemoveOptions{PruneChildren: true})
		switch {
		case err == nil:
			removed = append(removed, img.RepoTags...)
		case cerrdefs.IsConflict(err), cerrdefs.IsNotFound(err):
			// In use by a container, or gone already.
		default:
			errs = append(errs, fmt.Errorf("removing image %s: %w", img.ID, err))
		}
	}
	return removed, errors.Join(errs...)
}

// Package state keeps what the gefyra CLI knows between invocations, per
// cluster context, in a directory of its own ($GEFYRA_HOME/<context>, by
// default ~/.gefyra/<context>): the developer's WireGuard private key (mode
// 0600, it never leaves this machine), the local agent's config (which the
// agent container reads through a bind mount), and the bridges this client
// made with the tunnel ports their local containers are reached on.
//
// The state is a cache of the truth, not the truth: the cluster holds the
// client and its bridges, Docker's labels mark the local containers, so
// `gefyra down` still cleans up after the directory is lost.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/internal/bridge"
	"gefyra.dev/gefyra/internal/wgnet"
)

// EnvHome relocates the state's root directory.
const EnvHome = "GEFYRA_HOME"

// Home returns the root of the CLI's state: $GEFYRA_HOME, else ~/.gefyra.
func Home(getenv func(string) string) (string, error) {
	if h := getenv(EnvHome); h != "" {
		return filepath.Abs(h)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cannot find the home directory for gefyra's state (%v): set %s", err, EnvHome)
	}
	return filepath.Join(home, ".gefyra"), nil
}

// Dir is the state directory of one cluster context.
type Dir struct {
	path string
}

// Open returns the state directory of context under home; nothing is
// created until something is saved.
func Open(home, context string) Dir {
	return Dir{path: filepath.Join(home, DirName(context))}
}

// DirName turns a context name (which may hold '/', ':' and '@', e.g. an EKS
// ARN) into a directory name. Names that had to change get a hash of the
// original, so two contexts never share a directory.
func DirName(context string) string {
	var b strings.Builder
	changed := context == "" || context == "." || context == ".."
	for _, r := range context {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			b.WriteRune(r)
			continue
		}
		b.WriteByte('_')
		changed = true
	}
	name := b.String()
	if len(name) > 64 {
		name, changed = name[:64], true
	}
	if changed {
		h := fnv.New32a()
		h.Write([]byte(context))
		name += "-" + strconv.FormatUint(uint64(h.Sum32()), 16)
	}
	return name
}

// Path is the directory.
func (d Dir) Path() string { return d.path }

// AgentDir is the directory bind-mounted into the agent container.
func (d Dir) AgentDir() string { return filepath.Join(d.path, "agent") }

// AgentConfigFile is the name of the agent's config inside AgentDir.
const AgentConfigFile = "agent.json"

func (d Dir) stateFile() string { return filepath.Join(d.path, "state.json") }
func (d Dir) keyFile() string   { return filepath.Join(d.path, "wireguard.key") }

// State is what the CLI remembers about one context.
type State struct {
	// Context and Server identify the cluster.
	Context string `json:"context"`
	Server  string `json:"server,omitempty"`
	// User is the Kubernetes user, Client the GefyraClient's name.
	User   string `json:"user,omitempty"`
	Client string `json:"client,omitempty"`
	// Address is the client's tunnel address, Endpoint stowaway's UDP
	// endpoint as the agent reaches it.
	Address  string `json:"address,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	// Bridges are the bridges this client made.
	Bridges []Bridge `json:"bridges,omitempty"`
}

// Bridge is a bridge this client made.
type Bridge struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Container is the local container the traffic goes to.
	Container string `json:"container"`
	// Kind, Workload and WorkloadContainer name the cluster's end.
	Kind              string    `json:"kind"`
	Workload          string    `json:"workload"`
	WorkloadContainer string    `json:"workloadContainer"`
	Ports             []Port    `json:"ports"`
	Created           time.Time `json:"created"`
}

// Port is one port mapping of a bridge: the workload container's port
// Remote is carried to port Local of the local container, through port
// Tunnel of the agent's tunnel address (the bridge's spec names Tunnel as
// its local port; usually Tunnel == Local).
type Port struct {
	Remote uint16 `json:"remote"`
	Local  uint16 `json:"local"`
	Tunnel uint16 `json:"tunnel"`
	// Protocol is how the port is carried: bridge.ProtocolTCP for whole
	// connections, empty (or HTTP) for routed requests.
	Protocol bridge.Protocol `json:"protocol,omitempty"`
}

// Load reads the state; a missing file is an empty state.
func (d Dir) Load() (*State, error) {
	b, err := os.ReadFile(d.stateFile())
	if errors.Is(err, fs.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading gefyra's state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("gefyra's state file %s is damaged (%v): remove it and run `gefyra up` again", d.stateFile(), err)
	}
	return &s, nil
}

// Save writes the state.
func (d Dir) Save(s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(d.path, d.stateFile(), append(b, '\n'))
}

// PrivateKey returns the developer's WireGuard private key, generating and
// storing one (mode 0600) the first time.
func (d Dir) PrivateKey() (wgnet.Key, error) {
	b, err := os.ReadFile(d.keyFile())
	if err == nil {
		k, err := wgnet.ParseKey(string(b))
		if err != nil {
			return wgnet.Key{}, fmt.Errorf("the private key in %s is damaged (%v): remove it and run `gefyra up` again", d.keyFile(), err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return wgnet.Key{}, err
	}
	k, err := wgnet.GeneratePrivateKey()
	if err != nil {
		return wgnet.Key{}, err
	}
	if err := writeFile(d.path, d.keyFile(), []byte(k.String()+"\n")); err != nil {
		return wgnet.Key{}, err
	}
	return k, nil
}

// WriteAgentConfig writes the agent's config (it holds the private key:
// mode 0600) atomically, so the running agent never reads half a file.
func (d Dir) WriteAgentConfig(c agent.Config) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(d.AgentDir(), filepath.Join(d.AgentDir(), AgentConfigFile), append(b, '\n'))
}

// ReadAgentConfig reads the agent's config back.
func (d Dir) ReadAgentConfig() (agent.Config, error) {
	return agent.ReadConfig(filepath.Join(d.AgentDir(), AgentConfigFile))
}

// Remove deletes the directory and everything in it.
func (d Dir) Remove() error {
	return os.RemoveAll(d.path)
}

// writeFile writes data to path through a temporary file and a rename, with
// mode 0600 in a directory of mode 0700.
func writeFile(dir, path string, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(f.Name(), 0o600)
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
	}
	return werr
}

// Targets is the agent's table: tunnel port → "container:port".
func (s *State) Targets() map[uint16]string {
	t := map[uint16]string{}
	for _, b := range s.Bridges {
		for _, p := range b.Ports {
			t[p.Tunnel] = b.Container + ":" + strconv.Itoa(int(p.Local))
		}
	}
	return t
}

// Find returns the bridges named name (in namespace, if it is not empty).
func (s *State) Find(namespace, name string) []Bridge {
	var out []Bridge
	for _, b := range s.Bridges {
		if b.Name == name && (namespace == "" || b.Namespace == namespace) {
			out = append(out, b)
		}
	}
	return out
}

// Remove forgets the bridge namespace/name; it reports whether it knew it.
func (s *State) Remove(namespace, name string) bool {
	n := len(s.Bridges)
	s.Bridges = slices.DeleteFunc(s.Bridges, func(b Bridge) bool { return b.Namespace == namespace && b.Name == name })
	if len(s.Bridges) == 0 {
		s.Bridges = nil
	}
	return len(s.Bridges) != n
}

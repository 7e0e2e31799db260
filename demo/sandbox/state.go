package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// stateVersion is the version of the state file's format.
const stateVersion = 1

// State is what Up started and changed, as Down needs it to undo exactly
// that. Up saves it before each change, so a killed Up is undone too.
type State struct {
	Version int       `json:"version"`
	Root    string    `json:"root"`
	Started time.Time `json:"started"`
	// Ready is set once Up finished.
	Ready bool `json:"ready"`

	StartedDocker bool `json:"startedDocker,omitempty"`
	StartedWorld  bool `json:"startedWorld,omitempty"`
	// Demo and Addon: the demo's namespace and gefyra's add-on were
	// applied (or about to be).
	Demo  bool `json:"demo,omitempty"`
	Addon bool `json:"addon,omitempty"`
	// Docker is what Up found in Docker before it loaded the development
	// image; nil until then.
	Docker *DockerState `json:"docker,omitempty"`

	// Home is the gefyra CLI's state root and whether it existed.
	Home        string `json:"home,omitempty"`
	HomeExisted bool   `json:"homeExisted,omitempty"`

	Kubeconfig string `json:"kubeconfig,omitempty"`
	URL        string `json:"url,omitempty"`
	LocalDir   string `json:"localDir,omitempty"`
}

// DockerState is the part of Docker's images the sandbox may change.
type DockerState struct {
	// DevImageBefore is the ID DevImage had before Up loaded it ("" if
	// it was missing); DevImageLoaded the ID it loaded.
	DevImageBefore string `json:"devImageBefore,omitempty"`
	DevImageLoaded string `json:"devImageLoaded,omitempty"`
	// GefyraImages are the IDs of gefyra's own images (the local agent's)
	// before Up: the ones `gefyra up` builds later go with the sandbox.
	GefyraImages []string `json:"gefyraImages,omitempty"`
}

// pending says whether anything Down must undo is still recorded.
func (st *State) pending() bool {
	return st.StartedDocker || st.StartedWorld || st.Demo || st.Addon || st.Docker != nil
}

// parseState reads a state file's content.
func parseState(b []byte) (*State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	if st.Root == "" || !filepath.IsAbs(st.Root) {
		return nil, fmt.Errorf("root %q is not an absolute path", st.Root)
	}
	return &st, nil
}

func (s *Sandbox) statePath() string { return filepath.Join(s.dir(), "state.json") }

// load reads the state; nil without an error when there is none.
func (s *Sandbox) load() (*State, error) {
	b, err := os.ReadFile(s.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st, err := parseState(b)
	if err != nil {
		return nil, fmt.Errorf("the sandbox's state %s is unreadable (%v): remove %s by hand, after checking what runs",
			s.statePath(), err, s.dir())
	}
	return st, nil
}

// save writes the state atomically.
func (s *Sandbox) save(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.statePath() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving the sandbox's state: %w", err)
	}
	if err := os.Rename(tmp, s.statePath()); err != nil {
		return fmt.Errorf("saving the sandbox's state: %w", err)
	}
	return nil
}

// lock takes an exclusive lock on the state directory, so one Up or Down
// runs at a time; the lock is the directory itself, so no lock file is
// left behind. With create the directory is made if missing; without,
// a missing directory gives ok false.
func (s *Sandbox) lock(create bool) (unlock func(), ok bool, err error) {
	dir := s.dir()
	for {
		if create {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, false, err
			}
		}
		f, err := os.Open(dir)
		if errors.Is(err, fs.ErrNotExist) && !create {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			fmt.Fprintf(s.out(), "==> Waiting for another `gefyra sandbox up` or `down` to finish\n")
			if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
				f.Close()
				return nil, false, fmt.Errorf("locking %s: %w", dir, err)
			}
		}
		// The holder may have removed the directory meanwhile.
		held, err1 := f.Stat()
		now, err2 := os.Stat(dir)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return func() { f.Close() }, true, nil
		}
		f.Close()
		if !create && errors.Is(err2, fs.ErrNotExist) {
			return nil, false, nil
		}
	}
}

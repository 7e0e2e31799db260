// Package sandbox keeps the tutorial's whole environment running on this
// machine, so that a person (or another program) types the tutorial's
// commands against it: Docker Engine (world/docker.sh), the test world
// (world/world.sh: a real single-node Kubernetes built from source),
// gefyra's add-on from deploy/ (control plane, stowaway), and the
// oauth2-demo workload of demo/deploy/local (the backend with its bug
// behind its oauth2-proxy sidecar, and the OIDC provider with the user
// john@gefyra.dev).
//
// Up starts what is missing with the same steps `make demo` narrates
// (demo/story), checks the login and the bug as a browser would, and
// leaves everything running; it records in its state directory
// (/run/gefyra-sandbox) each thing before it starts or changes it. Down
// undoes exactly what is recorded: what `gefyra up`, `run` and `bridge`
// made (through a `gefyra down`), the add-on, the workload, the images it
// loaded into Docker, then the world and Docker Engine, but only if Up
// started them; when it stopped the world it checks with world/snapshot.sh
// that the machine is as it was before. The binaries and images the world
// built stay cached in /var/cache/gefyra.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"gefyra.dev/gefyra/demo/appsrc"
	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/testworld"
)

// DefaultDir is the sandbox's state directory: what Up started, the
// kubeconfig, the backend's source (LOCAL_DIR) and the world's snapshot.
const DefaultDir = "/run/gefyra-sandbox"

// Context is the name of the kubeconfig context the sandbox writes (the
// gefyra CLI keeps its state per context).
const Context = "gefyra-sandbox"

// DevImage is the development image of the backend (Go toolchain, Delve
// and devloop), which Up loads into Docker for `gefyra run`.
const DevImage = "gefyra.dev/oauth2-demo-dev:0.1.0"

// Sandbox is the tutorial's environment on this machine.
type Sandbox struct {
	// Root is the repository's root directory (Up needs it; Down and
	// Status take it from the state).
	Root string
	// Dir is the state directory (DefaultDir if empty).
	Dir string
	// Out gets the narrated progress (nothing if nil).
	Out io.Writer
	// Home is the gefyra CLI's state root ($GEFYRA_HOME, ~/.gefyra): Down
	// removes it if it is empty and Up did not find it.
	Home string
	// GefyraDown runs `gefyra down` with the sandbox's kubeconfig, as the
	// tutorial's last command: it removes the bridges, the client, the
	// local containers, the agent and gefyra's Docker network. Down calls
	// it first; nil skips it.
	GefyraDown func(ctx context.Context, kubeconfig string, progress io.Writer) error

	geteuid func() int // os.Geteuid if nil
}

// Info is what a person needs to use a running sandbox.
type Info struct {
	// Already says that Up found the sandbox running.
	Already bool      `json:"already"`
	Started time.Time `json:"started"`
	// Kubeconfig is the sandbox's kubeconfig (context Context).
	Kubeconfig string `json:"kubeconfig"`
	// URL is the demo as a browser on this machine reaches it: the
	// oauth2-demo Service, through the oauth2-proxy sidecar.
	URL      string `json:"url"`
	User     string `json:"user"`
	Password string `json:"password"`
	// LocalDir is a copy of the backend's source (demo/app), for
	// `gefyra run -v $LOCAL_DIR:/app`.
	LocalDir string `json:"localDir"`
	DevImage string `json:"devImage"`
	// StartedDocker and StartedWorld: Down stops them (else they were
	// running before and stay).
	StartedDocker bool `json:"startedDocker"`
	StartedWorld  bool `json:"startedWorld"`
	// Next are the tutorial's commands, to type in a shell with
	// KUBECONFIG and LOCAL_DIR exported.
	Next []string `json:"next"`
}

func (s *Sandbox) dir() string {
	if s.Dir == "" {
		return DefaultDir
	}
	return s.Dir
}

func (s *Sandbox) out() io.Writer {
	if s.Out == nil {
		return io.Discard
	}
	return s.Out
}

func (s *Sandbox) say(format string, args ...any) {
	fmt.Fprintf(s.out(), "==> "+format+"\n", args...)
}

// Up starts the sandbox, or finds it running (Info.Already). A failure
// leaves nothing behind: before anything starts, one line says why; after,
// what was started is removed again.
func (s *Sandbox) Up(ctx context.Context) (*Info, error) {
	if err := s.checkRoot("up"); err != nil {
		return nil, err
	}
	if err := CheckRoot(s.Root); err != nil {
		return nil, err
	}
	if err := checkTools(); err != nil {
		return nil, err
	}
	unlock, _, err := s.lock(true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	if st != nil {
		return s.again(ctx, st)
	}

	// Nothing is started yet: a failed check leaves nothing behind.
	dockerUp := dockerRunning(ctx)
	worldUp := worldRunning(ctx, s.Root)
	if err := s.preflight(ctx, dockerUp, worldUp); err != nil {
		os.RemoveAll(s.dir())
		return nil, err
	}

	st = &State{Version: stateVersion, Root: s.Root, Started: time.Now().UTC().Truncate(time.Second), Home: s.Home}
	st.HomeExisted = s.Home != "" && exists(s.Home)
	if err := s.save(st); err != nil {
		os.RemoveAll(s.dir())
		return nil, err
	}
	if err := s.up(ctx, st, dockerUp, worldUp); err != nil {
		s.say("`gefyra sandbox up` failed: removing what it started")
		if derr := s.down(context.WithoutCancel(ctx), st); derr != nil {
			err = errors.Join(err, fmt.Errorf("removing what it started: %w", derr))
		}
		return nil, err
	}
	return st.info(), nil
}

// joinProblems makes one error of the problems found, nil if none.
func joinProblems(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "; "))
}

// preflight checks what Up needs of this machine and, on a world that
// runs already, of the cluster.
func (s *Sandbox) preflight(ctx context.Context, dockerUp, worldUp bool) error {
	if !dockerUp {
		if err := checkDocker(); err != nil {
			return err
		}
	}
	if !worldUp {
		// The world, when Up starts it, must find its address ranges
		// free on this machine.
		n, err := s.readWorldNet(ctx, s.Root)
		if err != nil {
			return err
		}
		have, err := hostAddrs(ctx)
		if err != nil {
			return err
		}
		return joinProblems(addressConflicts(n, have))
	}
	w, err := testworld.Open(ctx)
	if err != nil {
		return fmt.Errorf("the test world runs, but: %w", err)
	}
	problems, err := clusterConflicts(ctx, w, s.Root)
	if err != nil {
		return err
	}
	return joinProblems(problems)
}

// again answers an Up that finds a sandbox recorded.
func (s *Sandbox) again(ctx context.Context, st *State) (*Info, error) {
	since := st.Started.Local().Format(time.DateTime)
	if !st.Ready {
		return nil, fmt.Errorf("an earlier `gefyra sandbox up` (of %s) did not finish: `gefyra sandbox down` removes what it started", since)
	}
	parts := s.inspect(ctx, st)
	for _, p := range parts {
		if !p.OK {
			return nil, fmt.Errorf("the sandbox (up since %s) is broken: %s: %s; `gefyra sandbox down` removes it, then `gefyra sandbox up` starts it afresh",
				since, p.Name, p.State)
		}
	}
	info := st.info()
	info.Already = true
	return info, nil
}

// up runs Up's steps, narrated, recording each change in st first.
func (s *Sandbox) up(ctx context.Context, st *State, dockerUp, worldUp bool) error {
	r := story.NewRunner(ctx, s.out())
	defer func() {
		// What the steps made stays: Down removes it.
		r.Keep()
		r.Close()
	}()
	save := func(t testworld.T) {
		t.Helper()
		if err := s.save(st); err != nil {
			t.Fatalf("%v", err)
		}
	}
	root := s.Root

	if dockerUp {
		r.Step("Docker Engine is running already (it stays running)", nil)
	} else {
		r.Step("Starting Docker Engine (world/docker.sh up)", func(t testworld.T) {
			st.StartedDocker = true
			save(t)
			runScript(t, root, "docker.sh", "up")
		})
	}
	if worldUp {
		r.Step("The test world is running already (it stays running)", nil)
	} else {
		r.Step("Starting the test world: a real single-node Kubernetes, built from source, cached in /var/cache/gefyra (world/world.sh up)", func(t testworld.T) {
			t.Logf("taking a snapshot of this machine first (world/snapshot.sh), for `gefyra sandbox down` to compare")
			b, err := snapshot(context.Background(), root)
			if err != nil {
				t.Fatalf("%v", err)
			}
			if err := os.WriteFile(s.snapshotPath(), b, 0o600); err != nil {
				t.Fatalf("%v", err)
			}
			st.StartedWorld = true
			save(t)
			runScript(t, root, "world.sh", "up")
		})
	}

	var (
		w     *testworld.World
		d     *story.Demo
		addon *story.Addon
	)
	r.Step("Building the images FROM scratch (world/images.sh; cached)", func(t testworld.T) {
		var err error
		if w, err = testworld.Open(context.Background()); err != nil {
			t.Fatalf("the test world: %v", err)
		}
		d = story.New(w, root)
		d.BuildAllImages(t)
	})
	r.Step("Loading them into the cluster's containerd", func(t testworld.T) {
		d.LoadImages(t)
		var err error
		if addon, err = story.NewAddon(w, root, d.Images); err != nil {
			t.Fatalf("%v", err)
		}
		addon.LoadImages(t)
	})
	r.Step("Deploying the tutorial's workload: kubectl apply -k demo/deploy/local (the OIDC provider, and the oauth2-demo Pod: oauth2-proxy sidecar + the backend with its bug)", func(t testworld.T) {
		st.Demo = true
		save(t)
		d.Deploy(t)
	})
	r.Step("Installing gefyra's add-on: kubectl apply -k deploy/ (CRDs, control plane, stowaway)", func(t testworld.T) {
		st.Addon = true
		save(t)
		addon.Install(t)
	})
	r.Step("Waiting for the OIDC provider, the oauth2-demo Pod, gefyra's control plane and stowaway", func(t testworld.T) {
		d.WaitReady(t)
		addon.WaitReady(t)
		d.Show(t)
	})
	r.Step("Logging in as "+story.User+" like a browser, through oauth2-proxy and the OIDC provider", func(t testworld.T) {
		d.Login(t)
		d.ExpectHello(t)
		d.ExpectBug(t)
	})
	r.Step("Preparing this machine's side: the development image in Docker, the backend's source for LOCAL_DIR, the kubeconfig", func(t testworld.T) {
		s.prepareLocal(t, st, w, d)
		save(t)
	})
	if err := r.Err(); err != nil {
		return err
	}
	st.Ready = true
	return s.save(st)
}

// prepareLocal loads the development image into Docker, copies the
// backend's source and writes the sandbox's kubeconfig.
func (s *Sandbox) prepareLocal(t testworld.T, st *State, w *testworld.World, d *story.Demo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before, err := imageID(ctx, DevImage)
	if err != nil {
		t.Fatalf("%v", err)
	}
	images, err := gefyraImages(ctx)
	if err != nil {
		t.Fatalf("%v", err)
	}
	st.Docker = &DockerState{DevImageBefore: before, GefyraImages: images}
	if err := s.save(st); err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("docker load -i %s", d.Image(story.DevImage))
	out, err := docker(ctx, "load", "-i", d.Image(story.DevImage))
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("%s", strings.TrimSpace(out))
	if st.Docker.DevImageLoaded, err = imageID(ctx, DevImage); err != nil || st.Docker.DevImageLoaded == "" {
		t.Fatalf("%s is not in Docker after loading %s (%v)", DevImage, d.Image(story.DevImage), err)
	}

	st.LocalDir = filepath.Join(s.dir(), "oauth2-demo-app")
	if err := appsrc.Copy(filepath.Join(s.Root, "demo", "app"), st.LocalDir); err != nil {
		t.Fatalf("copying the backend's source: %v", err)
	}
	// The development image runs as a user of its own, which reads and
	// watches the mounted directory.
	if err := os.Chmod(st.LocalDir, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("the backend's source (demo/app, with its bug): %s", st.LocalDir)

	st.Kubeconfig = filepath.Join(s.dir(), "kubeconfig")
	if err := writeKubeconfig(w.Kubeconfig, st.Kubeconfig); err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("kubeconfig: %s (context %s, the cluster's admin)", st.Kubeconfig, Context)
	st.URL = d.AppURL() + "/"
}

// writeKubeconfig copies the world's kubeconfig with its current context
// renamed to Context.
func writeKubeconfig(src, dst string) error {
	cfg, err := clientcmd.LoadFromFile(src)
	if err != nil {
		return err
	}
	c, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return fmt.Errorf("%s: no current context", src)
	}
	delete(cfg.Contexts, cfg.CurrentContext)
	cfg.Contexts[Context] = c
	cfg.CurrentContext = Context
	return clientcmd.WriteToFile(*cfg, dst)
}

func (s *Sandbox) snapshotPath() string { return filepath.Join(s.dir(), "snapshot.before") }

// info is the Info of a finished Up.
func (st *State) info() *Info {
	return &Info{
		Started:       st.Started,
		Kubeconfig:    st.Kubeconfig,
		URL:           st.URL,
		User:          story.User,
		Password:      story.Password,
		LocalDir:      st.LocalDir,
		DevImage:      DevImage,
		StartedDocker: st.StartedDocker,
		StartedWorld:  st.StartedWorld,
		Next:          NextCommands(),
	}
}

// NextCommands are the tutorial's commands on the sandbox, to type in a
// shell with KUBECONFIG and LOCAL_DIR exported.
func NextCommands() []string {
	return []string{
		"kubectl --namespace " + story.Namespace + " get pod,service,ingress",
		"gefyra up",
		`gefyra run -i ` + DevImage + ` -N myfastapi-demo -n ` + story.Namespace + ` -v $LOCAL_DIR:/app -c "devloop -listen 0.0.0.0:5678"`,
		"gefyra bridge -N myfastapi-demo -n " + story.Namespace + " --deployment " + story.Deployment +
			" --port 8155:8155 --container-name " + story.AppContainer + " -I myfastapi",
		`sed -i '` + appsrc.FixSed + `' $LOCAL_DIR/main.go`,
		"gefyra down",
	}
}

// WriteText writes what a person needs, as Up prints it at the end;
// exports are extra shell lines to run first (e.g. PATH for gefyra).
func (i *Info) WriteText(w io.Writer, exports ...string) {
	var b strings.Builder
	if i.Already {
		fmt.Fprintf(&b, "The sandbox is running already (up since %s). In another shell:\n\n", i.Started.Local().Format(time.DateTime))
	} else {
		b.WriteString("The sandbox is up. In another shell:\n\n")
	}
	fmt.Fprintf(&b, "  export KUBECONFIG=%s\n", i.Kubeconfig)
	fmt.Fprintf(&b, "  export LOCAL_DIR=%s\n", i.LocalDir)
	for _, e := range exports {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	fmt.Fprintf(&b, "\n  URL:    %s  (the oauth2-demo Service through its oauth2-proxy sidecar, as a browser reaches the tutorial's Ingress)\n", i.URL)
	fmt.Fprintf(&b, "  Login:  %s, password %s\n", i.User, i.Password)
	fmt.Fprintf(&b, "  Bug:    %s answers 500 Internal Server Error\n", strings.TrimSuffix(i.URL, "/")+story.ItemPath)
	b.WriteString("\nThe tutorial's next commands:\n\n")
	comments := map[int]string{
		2: "# the backend from $LOCAL_DIR, rebuilt on every change, Delve on :5678",
		3: "# cluster traffic for the backend goes to your container",
		4: "# the fix: " + story.ItemPath + ` answers {"item_id":123,"Email":"john@gefyra.dev"}`,
		5: "# the workload as before, with its bug",
	}
	for n, c := range i.Next {
		fmt.Fprintf(&b, "  %s\n", c)
		if comment, ok := comments[n]; ok {
			fmt.Fprintf(&b, "      %s\n", comment)
		}
	}
	b.WriteString("\n`gefyra sandbox status` says what runs; `gefyra sandbox down` (make sandbox-down) removes it all.\n")
	io.WriteString(w, b.String())
}

// Down removes the sandbox (see the package doc); without one it says so
// and succeeds. What it could not undo stays recorded, for another Down.
func (s *Sandbox) Down(ctx context.Context) error {
	if err := s.checkRoot("down"); err != nil {
		return err
	}
	unlock, ok, err := s.lock(false)
	if err != nil {
		return err
	}
	if !ok {
		s.say("No sandbox is running: nothing to remove")
		return nil
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	if st == nil {
		// An Up that stopped before it recorded anything.
		return os.RemoveAll(s.dir())
	}
	return s.down(ctx, st)
}

// down undoes what st records, step by step, going on after a failure.
func (s *Sandbox) down(ctx context.Context, st *State) error {
	var errs []error
	// step runs fn as one narrated step on a runner of its own, so a
	// failed step does not stop the next; ok says whether it passed.
	step := func(title string, fn func(t testworld.T)) bool {
		r := story.NewRunner(ctx, s.out())
		r.Step(title, fn)
		err := r.Close()
		if err != nil {
			errs = append(errs, err)
		}
		return err == nil
	}
	save := func() {
		if err := s.save(st); err != nil {
			errs = append(errs, err)
		}
	}

	worldUp := worldRunning(ctx, st.Root)
	dockerUp := dockerRunning(ctx)
	hasKubeconfig := st.Kubeconfig != "" && exists(st.Kubeconfig)
	// reach: the world runs and answers, for the steps in the cluster.
	var w *testworld.World
	reach := false
	if worldUp && (st.Addon || st.Demo || hasKubeconfig) {
		var err error
		if w, err = testworld.Open(ctx); err != nil {
			errs = append(errs, fmt.Errorf("the test world runs, but: %w", err))
		}
		reach = err == nil
	}
	if s.GefyraDown != nil && reach && dockerUp && hasKubeconfig {
		step("Removing your bridges, client, local containers and agent (gefyra down)", func(t testworld.T) {
			lw := &lineWriter{logf: t.Logf}
			err := s.GefyraDown(ctx, st.Kubeconfig, lw)
			lw.Flush()
			if err != nil {
				t.Fatalf("gefyra down: %v", err)
			}
		})
	}
	if (st.Addon || st.Demo) && !worldUp {
		s.say("The test world is not running: nothing of the sandbox is left in it")
		st.Addon, st.Demo = false, false
		save()
	}
	if st.Addon && reach {
		addon, err := story.NewAddon(w, st.Root, "")
		if err != nil {
			errs = append(errs, err)
		} else if step("Removing gefyra's add-on: its bridges, clients and mounts, then kubectl delete -k deploy/", addon.Uninstall) {
			st.Addon = false
			save()
		}
	}
	if st.Demo && reach {
		if step("Removing the tutorial's workload (namespace "+story.Namespace+")", story.New(w, st.Root).Remove) {
			st.Demo = false
			save()
		}
	}
	if st.Docker != nil {
		if !dockerUp {
			s.say("Docker Engine is not running: leaving its images as they are")
		} else if step("Removing the images the sandbox and gefyra put into Docker", func(t testworld.T) { restoreImages(t, st.Docker) }) {
			st.Docker = nil
			save()
		}
	}
	if st.StartedWorld {
		if step("Stopping the test world (world/world.sh down)", func(t testworld.T) { runScript(t, st.Root, "world.sh", "down") }) {
			st.StartedWorld = false
			save()
			step("Checking that the machine is as before the world started (world/snapshot.sh)", func(t testworld.T) {
				s.compareSnapshot(t, st.Root)
			})
		}
	}
	if st.StartedDocker {
		if step("Stopping Docker Engine (world/docker.sh down)", func(t testworld.T) { runScript(t, st.Root, "docker.sh", "down") }) {
			st.StartedDocker = false
			save()
		}
	}
	if st.pending() {
		errs = append(errs, fmt.Errorf("not everything was removed: `gefyra sandbox down` tries again (state in %s)", s.dir()))
		return errors.Join(errs...)
	}
	if st.Home != "" && !st.HomeExisted {
		os.Remove(st.Home) // only if empty: the gefyra CLI's state, which gefyra down emptied
	}
	if err := os.RemoveAll(s.dir()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// restoreImages removes the images that came into Docker with the
// sandbox: the development image (an earlier one gets its tag back) and
// gefyra's own images built since (the local agent's).
func restoreImages(t testworld.T, ds *DockerState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if ds.DevImageLoaded != "" && ds.DevImageLoaded != ds.DevImageBefore {
		if ds.DevImageBefore != "" {
			t.Logf("docker tag %s %s (the image it had before)", ds.DevImageBefore, DevImage)
			if _, err := docker(ctx, "tag", ds.DevImageBefore, DevImage); err != nil {
				t.Errorf("%v", err)
			}
		}
		t.Logf("docker image rm %s", ds.DevImageLoaded)
		if err := removeImage(ctx, ds.DevImageLoaded); err != nil {
			t.Errorf("%v", err)
		}
	}
	now, err := gefyraImages(ctx)
	if err != nil {
		t.Fatalf("%v", err)
	}
	for _, id := range now {
		if slices.Contains(ds.GefyraImages, id) {
			continue
		}
		t.Logf("docker image rm %s (gefyra's, built while the sandbox ran)", id)
		if err := removeImage(ctx, id); err != nil {
			t.Errorf("%v", err)
		}
	}
}

// compareSnapshot compares the machine with the snapshot Up took before it
// started the world.
func (s *Sandbox) compareSnapshot(t testworld.T, root string) {
	t.Helper()
	if !exists(s.snapshotPath()) {
		t.Fatalf("no snapshot %s to compare with", s.snapshotPath())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := snapshot(ctx, root)
	if err != nil {
		t.Fatalf("%v", err)
	}
	after := s.snapshotPath() + ".after"
	if err := os.WriteFile(after, b, 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	diff, err := diffFiles(ctx, s.snapshotPath(), after)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if diff != "" {
		t.Fatalf("the world left traces on this machine (- before up, + after down):\n%s", diff)
	}
	t.Logf("the machine is as it was")
}

// Part is one part of a running sandbox and its state.
type Part struct {
	Name  string `json:"name"`
	State string `json:"state"`
	OK    bool   `json:"ok"`
}

// Status is what Status found.
type Status struct {
	// Running says that a sandbox is recorded (Info is set once its Up
	// finished).
	Running bool   `json:"running"`
	Ready   bool   `json:"ready"`
	Info    *Info  `json:"info,omitempty"`
	Parts   []Part `json:"parts,omitempty"`
}

// Status says what of the sandbox runs.
func (s *Sandbox) Status(ctx context.Context) (*Status, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	if st == nil {
		return &Status{}, nil
	}
	out := &Status{Running: true, Ready: st.Ready, Parts: s.inspect(ctx, st)}
	if st.Ready {
		out.Info = st.info()
	}
	return out, nil
}

// inspect looks at each part of the sandbox.
func (s *Sandbox) inspect(ctx context.Context, st *State) []Part {
	who := func(started bool) string {
		if started {
			return "started by the sandbox"
		}
		return "it was running before the sandbox, and stays"
	}
	var parts []Part
	dockerUp := dockerRunning(ctx)
	parts = append(parts, part("Docker Engine", dockerUp, "running ("+who(st.StartedDocker)+")", "not running"))
	worldUp := worldRunning(ctx, st.Root)
	parts = append(parts, part("test world", worldUp, "running ("+who(st.StartedWorld)+")", "not running"))
	if worldUp && st.Kubeconfig != "" {
		parts = append(parts, inspectCluster(ctx, st.Kubeconfig)...)
	}
	if dockerUp {
		cs, err := gefyraContainers(ctx)
		switch {
		case err != nil:
			parts = append(parts, Part{Name: "local containers", State: err.Error()})
		case len(cs) == 0:
			parts = append(parts, Part{Name: "local containers", State: "none (gefyra up and gefyra run start them)", OK: true})
		default:
			parts = append(parts, Part{Name: "local containers", State: strings.Join(cs, ", "), OK: true})
		}
	}
	return parts
}

func part(name string, ok bool, yes, no string) Part {
	if ok {
		return Part{Name: name, State: yes, OK: true}
	}
	return Part{Name: name, State: no}
}

// inspectCluster looks at the workload and the add-on.
func inspectCluster(ctx context.Context, kubeconfig string) []Part {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return []Part{{Name: "cluster", State: err.Error()}}
	}
	cfg.Timeout = 10 * time.Second
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return []Part{{Name: "cluster", State: err.Error()}}
	}
	parts := []Part{
		deploymentPart(ctx, c, "OIDC provider", story.Namespace, story.OIDCDeployment),
		podPart(ctx, c),
		deploymentPart(ctx, c, "control plane", story.AddonNamespace, story.ControlPlaneDeployment),
		deploymentPart(ctx, c, "stowaway", story.AddonNamespace, story.StowawayDeployment),
	}
	return parts
}

func deploymentPart(ctx context.Context, c kubernetes.Interface, name, ns, deploy string) Part {
	d, err := c.AppsV1().Deployments(ns).Get(ctx, deploy, metav1.GetOptions{})
	if err != nil {
		return Part{Name: name, State: err.Error()}
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return Part{Name: name, State: fmt.Sprintf("deployment %s/%s: %d/%d available", ns, deploy, d.Status.AvailableReplicas, want),
		OK: available(d) && d.Status.AvailableReplicas >= want}
}

func available(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podPart: the backend's Pod, 2/2 Running when all is well (the carrier
// in place of the backend's container while a bridge is up).
func podPart(ctx context.Context, c kubernetes.Interface) Part {
	name := "oauth2-demo"
	pods, err := c.CoreV1().Pods(story.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + story.Deployment})
	if err != nil {
		return Part{Name: name, State: err.Error()}
	}
	var states []string
	ok := false
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		ready := 0
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Ready {
				ready++
			}
		}
		states = append(states, fmt.Sprintf("Pod %s: %d/%d %s", p.Name, ready, len(p.Spec.Containers), p.Status.Phase))
		ok = ok || (p.Status.Phase == corev1.PodRunning && ready == len(p.Spec.Containers))
	}
	if len(states) == 0 {
		return Part{Name: name, State: "no Pod"}
	}
	return Part{Name: name, State: strings.Join(states, ", "), OK: ok}
}

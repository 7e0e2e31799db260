// Package story is the tutorial's story as steps on the test world (the
// real single-node Kubernetes of world/world.sh): build the demo's images,
// load them into the cluster, deploy the workload of demo/deploy/local, wait
// until it runs, log in as john@gefyra.dev through oauth2-proxy and the OIDC
// provider, and see the backend's bug.
//
// The same steps go on with gefyra itself (Addon): its cluster add-on from
// deploy/, a developer's GefyraClient with a key made on this machine, the
// agent (gefyra-agent) and a local backend as processes here, and
// GefyraBridges of the backend's container, as the CLI would make them.
//
// Every step takes a testworld.T. The end-to-end tests pass their
// *testing.T; `make demo` passes a Runner, which prints each step as a
// readable line and its details indented below it. Either way it is the
// same code that builds, deploys, logs in and checks.
package story

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gefyra.dev/gefyra/demo/browser"
	"gefyra.dev/gefyra/internal/testworld"
)

// The demo's names, as in demo/deploy.
const (
	Namespace      = "oauth2-demo"
	Deployment     = "oauth2-demo"     // the backend with its oauth2-proxy sidecar
	AppContainer   = "oauth2-demo-app" // the backend
	ProxyContainer = "oauth2-proxy"
	Service        = "oauth2-demo"
	ServicePort    = 8080
	OIDCDeployment = "oidc"
	OIDCService    = "oidc" // the issuer, port 8080

	// The user of the demo's identity provider; the password is the same.
	User     = "john@gefyra.dev"
	Password = "john@gefyra.dev"

	// ItemPath is the request that shows the bug.
	ItemPath = "/items/123"
)

// The images of the demo (demo/images.sh): the tarball names it writes.
const (
	AppImage      = "oauth2-demo-0.1.0.tar"
	DevImage      = "oauth2-demo-dev-0.1.0.tar"
	OIDCImage     = "oidc-0.1.0.tar"
	ProxyImage    = "oauth2-proxy-v7.15.6.tar"
	imagesTimeout = 30 * time.Minute
)

// clusterImages are the images the demo's Pods run; the development image
// is for the developer's Docker, not for the cluster.
var clusterImages = []string{AppImage, OIDCImage, ProxyImage}

// Timeouts of the waits; generous, for a busy 2-core machine.
const (
	readyTimeout   = 3 * time.Minute
	requestTimeout = 30 * time.Second
	logTimeout     = 30 * time.Second
)

// Demo is the tutorial's workload on a running test world.
type Demo struct {
	World *testworld.World
	// Root is the repository's root directory.
	Root string
	// Images is the directory with the image tarballs, once BuildImages ran.
	Images string

	browser *browser.Browser
	rec     *recorder // the browser's transport
	pod     string    // the backend's Pod, once WaitReady found it
	appURL  string    // the Service, as a browser reaches it: http://ClusterIP:8080
}

// New returns the demo on w; root is the repository's root directory.
func New(w *testworld.World, root string) *Demo {
	return &Demo{World: w, Root: root}
}

// Image is the path of one of the tarballs (AppImage, DevImage, ...).
func (d *Demo) Image(name string) string { return filepath.Join(d.Images, name) }

// BuildImages builds the demo's images with demo/images.sh (each is rebuilt
// only when its content changed) and sets d.Images.
func (d *Demo) BuildImages(t testworld.T) {
	t.Helper()
	// Two runs must not build into the same directories at once; the lock
	// is on the script itself, so it leaves no file behind.
	script := filepath.Join(d.Root, "demo", "images.sh")
	unlock, err := lockFile(script)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer unlock()
	d.runImages(t, script)
}

// BuildAllImages builds the demo's images and gefyra's own (carrier,
// stowaway, controlplane) with world/images.sh and sets d.Images; the
// add-on (see Addon) takes its images from there. The script takes its
// own locks (the demo's among them).
func (d *Demo) BuildAllImages(t testworld.T) {
	t.Helper()
	d.runImages(t, filepath.Join(d.Root, "world", "images.sh"))
	for _, name := range ComponentImages {
		if _, err := os.Stat(d.Image(name)); err != nil {
			t.Fatalf("world/images.sh did not write %s: %v", name, err)
		}
	}
}

// runImages runs an images script, logging what it says, and sets d.Images
// to the directory named on the last line of its output.
func (d *Demo) runImages(t testworld.T, script string) {
	t.Helper()
	name, err := filepath.Rel(d.Root, script)
	if err != nil {
		name = script
	}
	ctx, cancel := context.WithTimeout(context.Background(), imagesTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, script)
	cmd.Dir = d.Root
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	sc := bufio.NewScanner(stderr)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		t.Logf("%s", sc.Text())
	}
	io.Copy(io.Discard, stderr) // what a too long line left, so the script can end
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	d.Images = lines[len(lines)-1]
	for _, image := range []string{AppImage, DevImage, OIDCImage, ProxyImage} {
		if _, err := os.Stat(d.Image(image)); err != nil {
			t.Fatalf("%s did not write %s: %v", name, image, err)
		}
	}
}

// LoadImages imports the images the demo's Pods run into the cluster.
func (d *Demo) LoadImages(t testworld.T) {
	t.Helper()
	if d.Images == "" {
		t.Fatalf("no images: BuildImages first")
	}
	tars := make([]string, len(clusterImages))
	for i, name := range clusterImages {
		tars[i] = d.Image(name)
	}
	d.World.LoadImages(t, tars...)
}

// Deploy applies demo/deploy/local and registers the removal of the demo's
// namespace (waiting until it is gone) as a cleanup, so it is removed also
// when a later step fails; if the caller failed, what ran in the namespace
// is logged first. A namespace left by an earlier run that is still being
// deleted is waited for; one that is in use is an error.
func (d *Demo) Deploy(t testworld.T) {
	t.Helper()
	waitNamespaceFree(t, d.World, Namespace)
	t.Cleanup(func() {
		if testworld.Failed(t) {
			d.World.Dump(t, Namespace)
		}
		t.Logf("deleting namespace %s", Namespace)
		d.World.DeleteNamespace(t, Namespace)
	})
	logLines(t, d.World.Kubectl(t, "apply", "-k", filepath.Join(d.Root, "demo", "deploy", "local")))
}

// logLines logs each line of out.
func logLines(t testworld.T, out string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		t.Logf("%s", line)
	}
}

// waitNamespaceFree waits while namespace ns of an earlier run is being
// deleted; one that is in use is an error.
func waitNamespaceFree(t testworld.T, w *testworld.World, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if _, err := w.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return
	}
	testworld.WaitFor(t, "namespace "+ns+" to be free", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		n, err := w.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true, "", nil
		case err != nil:
			return false, err.Error(), nil
		case n.Status.Phase == corev1.NamespaceTerminating:
			return false, "an earlier namespace " + ns + " is being deleted", nil
		}
		return false, "", fmt.Errorf("namespace %s exists already: it is in use elsewhere, or an earlier run was killed "+
			"(`kubectl --kubeconfig %s delete namespace %s` removes it)", ns, w.Kubeconfig, ns)
	})
}

// WaitReady waits until the OIDC provider is available and the backend's
// Pod runs with both containers ready, then until oauth2-proxy answers
// through the Service from this machine.
func (d *Demo) WaitReady(t testworld.T) {
	t.Helper()
	d.World.WaitDeploymentAvailable(t, Namespace, OIDCDeployment, readyTimeout)
	var pod *corev1.Pod
	selector := "app.kubernetes.io/name=" + Deployment
	testworld.WaitFor(t, "the "+Deployment+" Pod 2/2 Running and Ready", readyTimeout, func(ctx context.Context) (bool, string, error) {
		pods, err := d.World.Client.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error(), nil
		}
		var live []corev1.Pod
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				live = append(live, p)
			}
		}
		if len(live) != 1 {
			return false, fmt.Sprintf("%d Pods", len(live)), nil
		}
		pod = &live[0]
		status := pod.Name + ": " + testworld.PodStatus(pod)
		return pod.Status.Phase == corev1.PodRunning && testworld.PodReady(pod) && readyContainers(pod) == 2, status, nil
	})
	d.pod = pod.Name
	t.Logf("Pod %s: %d/2 Running, IP %s", pod.Name, readyContainers(pod), pod.Status.PodIP)

	d.appURL = "http://" + d.World.ServiceAddr(t, Namespace, Service, ServicePort)
	d.WaitServing(t)
}

// WaitServing waits until oauth2-proxy answers through the Service, which
// needs the backend's Pod Ready (both containers) and kube-proxy's rules
// for it.
func (d *Demo) WaitServing(t testworld.T) {
	t.Helper()
	if d.appURL == "" {
		t.Fatalf("the application's address is not known: WaitReady first")
	}
	c := d.World.HTTPClient()
	testworld.WaitFor(t, "oauth2-proxy at "+d.appURL, time.Minute, testworld.Answers(c, d.appURL+"/ping"))
}

// Pod is the name of the backend's Pod (after WaitReady).
func (d *Demo) Pod() string { return d.pod }

// AppURL is the Service's address as a browser on this machine reaches it
// (after WaitReady).
func (d *Demo) AppURL() string { return d.appURL }

func readyContainers(p *corev1.Pod) int {
	n := 0
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Ready && cs.State.Running != nil {
			n++
		}
	}
	return n
}

// Show logs `kubectl --namespace oauth2-demo get pod,service,ingress`, as the
// tutorial shows it, and returns it.
func (d *Demo) Show(t testworld.T) string {
	t.Helper()
	out := d.World.Kubectl(t, "--namespace", Namespace, "get", "pod,service,ingress")
	logLines(t, out)
	return out
}

// Login opens the application in a new browser, walks the OpenID Connect
// login as john@gefyra.dev (oauth2-proxy's sign-in button, the provider's
// login form, the redirects back), checks that it lands on the
// application's home page, and returns the requests the browser sent on
// the way.
func (d *Demo) Login(t testworld.T) []Hop {
	t.Helper()
	if d.appURL == "" {
		t.Fatalf("the application's address is not known: WaitReady first")
	}
	d.rec = &recorder{next: d.World.HTTPClient().Transport}
	d.browser = browser.New(browser.Options{Transport: d.rec, Timeout: requestTimeout})
	ctx, cancel := context.WithTimeout(context.Background(), 2*requestTimeout)
	defer cancel()
	page, err := d.browser.Login(ctx, d.appURL+"/", User, Password)
	hops := d.rec.take()
	for _, h := range hops {
		t.Logf("%s", h)
	}
	if err != nil {
		t.Fatalf("logging in as %s at %s: %v", User, d.appURL, err)
	}
	if page.Status != http.StatusOK || page.URL.Path != "/" {
		t.Fatalf("the login ended on %s with %d %q, want the application's home page", page.URL, page.Status, page.Body)
	}
	var cookies []string
	for _, c := range d.browser.Client().Jar.Cookies(page.URL) {
		cookies = append(cookies, c.Name)
	}
	t.Logf("logged in; the browser holds the cookie %s of %s", strings.Join(cookies, ", "), page.URL.Host)
	return hops
}

// Hop is one request the browser sent and the status it got.
type Hop struct {
	Method string
	URL    *url.URL // without its query
	Status int
}

func (h Hop) String() string {
	return fmt.Sprintf("%-4s %s → %d %s", h.Method, h.URL, h.Status, http.StatusText(h.Status))
}

// recorder is a RoundTripper that notes each request it carries.
type recorder struct {
	next http.RoundTripper

	mu   sync.Mutex // guards hops
	hops []Hop
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	u := *req.URL
	u.RawQuery, u.Fragment = "", ""
	r.mu.Lock()
	r.hops = append(r.hops, Hop{Method: req.Method, URL: &u, Status: resp.StatusCode})
	r.mu.Unlock()
	return resp, nil
}

// take returns the hops so far and forgets them.
func (r *recorder) take() []Hop {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hops
	r.hops = nil
	return h
}

// Answer is the application's answer to one request of the logged-in
// browser.
type Answer struct {
	Path   string
	Status int
	Body   string
}

func (a Answer) String() string {
	return fmt.Sprintf("GET %s → %d %s", a.Path, a.Status, a.Body)
}

// Get sends GET path with the logged-in browser.
func (d *Demo) Get(t testworld.T, path string) Answer {
	t.Helper()
	return d.GetWith(t, path, nil)
}

// GetWith sends GET path with the logged-in browser and extra request
// headers (oauth2-proxy passes them on to the backend).
func (d *Demo) GetWith(t testworld.T, path string, header http.Header) Answer {
	t.Helper()
	if d.browser == nil {
		t.Fatalf("not logged in: Login first")
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.appURL+path, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	page, err := d.browser.Do(req)
	for err != nil && refusedByService(err) && ctx.Err() == nil {
		// A Pod that a mount or bridge just restarted a container of was
		// out of its Services meanwhile; kube-proxy routes to it again a
		// moment after it is ready (its sync period).
		t.Logf("GET %s: %v; the Service does not route to a ready Pod yet, trying again", path, err)
		time.Sleep(250 * time.Millisecond)
		page, err = d.browser.Do(req)
	}
	d.rec.take()
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if page.URL.Path != path {
		t.Fatalf("GET %s ended on %s (%d): the login did not hold", path, page.URL, page.Status)
	}
	return Answer{Path: path, Status: page.Status, Body: strings.TrimSpace(page.Text())}
}

// refusedByService reports a connection that kube-proxy refused: the
// Service has no ready endpoint (it answers "no route to host" or
// "connection refused").
func refusedByService(err error) bool {
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ECONNREFUSED)
}

// ExpectHello checks that / answers 200 {"Hello":"World"}.
func (d *Demo) ExpectHello(t testworld.T) Answer {
	t.Helper()
	a := d.Get(t, "/")
	t.Logf("%s", a)
	if a.Status != http.StatusOK || a.Body != `{"Hello":"World"}` {
		t.Fatalf("%s, want 200 {\"Hello\":\"World\"}", a)
	}
	return a
}

// ExpectBug checks the tutorial's bug: /items/123 answers 500, and the
// backend's log names the claim it missed in the access token, which it
// returns.
func (d *Demo) ExpectBug(t testworld.T) string {
	t.Helper()
	a := d.Get(t, ItemPath)
	if a.Status != http.StatusInternalServerError {
		t.Fatalf("%s, want 500 Internal Server Error", a)
	}
	var claim string
	testworld.WaitFor(t, "the backend's log of the missing claim", logTimeout, func(ctx context.Context) (bool, string, error) {
		logs, err := d.AppLog(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		claim = MissingClaim(logs)
		return claim != "", "not logged yet", nil
	})
	t.Logf("GET %s → %d %s (the backend's log: claim %q missing)", a.Path, a.Status, http.StatusText(a.Status), claim)
	return claim
}

// AppLog is the backend container's log (kubectl logs -c oauth2-demo-app).
func (d *Demo) AppLog(ctx context.Context) (string, error) {
	if d.pod == "" {
		return "", errors.New("the backend's Pod is not known: WaitReady first")
	}
	return d.World.RunKubectl(ctx, "", "--namespace", Namespace, "logs", d.pod, "-c", AppContainer)
}

// logLine is what MissingClaim reads from the backend's JSON log lines.
type logLine struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	Claim string `json:"claim"`
}

// missingClaimText is the backend's "claim missing" line in slog's text
// format (its -log-format text, the default outside the cluster).
var missingClaimText = regexp.MustCompile(`msg="claim missing from access token".* claim=("[^"]*"|[^ ]+)`)

// MissingClaim returns the claim named by the backend's last "claim missing
// from access token" log line, JSON or slog text, or "" if it logged none.
// Other lines are skipped.
func MissingClaim(logs string) string {
	claim := ""
	for line := range strings.Lines(logs) {
		var l logLine
		if json.Unmarshal([]byte(line), &l) == nil {
			if l.Msg == "claim missing from access token" && l.Claim != "" {
				claim = l.Claim
			}
			continue
		}
		if m := missingClaimText.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			if c, err := strconv.Unquote(m[1]); err == nil {
				claim = c
			} else if m[1] != "" && m[1][0] != '"' {
				claim = m[1]
			}
		}
	}
	return claim
}

// lockFile waits for an exclusive lock on an existing file.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

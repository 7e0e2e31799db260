package demo_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"gefyra.dev/gefyra/demo/appsrc"
	"gefyra.dev/gefyra/demo/browser"
	"gefyra.dev/gefyra/demo/internal/testproc"
)

var (
	backendReady = regexp.MustCompile(`Application running on http://(\S+) `)
	oidcReady    = regexp.MustCompile(`OpenID Connect provider listening" addr=(\S+)`)
)

// oauth2Proxy returns the path of the oauth2-proxy binary the world scripts
// build.
func oauth2Proxy(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(root, "world", "build.sh"), "--dir", "oauth2proxy").Output()
	if err != nil {
		t.Fatalf("world/build.sh --dir oauth2proxy: %v", err)
	}
	bin := filepath.Join(strings.TrimSpace(string(out)), "oauth2-proxy")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("oauth2-proxy is not built (%v): run world/build.sh oauth2proxy", err)
	}
	return bin
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestLogin walks the tutorial on loopback with the real parts: the OIDC
// provider, the real oauth2-proxy in front of the backend, and a browser that
// logs in as john@gefyra.dev. The shipped backend answers /items/123 with 500;
// after the one-line fix the same logged-in session gets the e-mail address.
func TestLogin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := appsrc.RepoRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	proxyBin := oauth2Proxy(t, root)
	dir := t.TempDir()
	buggy, fixed, oidcBin := filepath.Join(dir, "buggy"), filepath.Join(dir, "fixed"), filepath.Join(dir, "oidc")
	if err := appsrc.Build(ctx, buggy, false); err != nil {
		t.Fatal(err)
	}
	if err := appsrc.Build(ctx, fixed, true); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", oidcBin, "./oidc").CombinedOutput(); err != nil {
		t.Fatalf("build oidc: %v\n%s", err, out)
	}

	// The proxy runs with the settings of demo/deploy/local (ConfigMap,
	// Secret, arguments); only the addresses change to loopback.
	env, args := manifestProxyConfig(t, root)
	oidcPort, proxyPort := freePort(t), freePort(t)
	issuer := "http://127.0.0.1:" + oidcPort
	proxyURL := "http://127.0.0.1:" + proxyPort
	oidcCmd := exec.Command(oidcBin)
	oidcCmd.Env = []string{
		"OIDC_LISTEN=127.0.0.1:" + oidcPort,
		"OIDC_ISSUER=" + issuer,
		"OIDC_CLIENT_ID=" + env["OAUTH2_PROXY_CLIENT_ID"],
		"OIDC_CLIENT_SECRET=" + env["OAUTH2_PROXY_CLIENT_SECRET"],
		"OIDC_REDIRECT_URIS=" + proxyURL + "/oauth2/callback",
	}
	testproc.Start(t, "oidc", oidcCmd, oidcReady)

	backend, backendAddr := testproc.Start(t, "backend (buggy)", exec.Command(buggy, "-host", "127.0.0.1", "-port", "0"), backendReady)

	overrides := map[string]string{
		"OAUTH2_PROXY_HTTP_ADDRESS":    "127.0.0.1:" + proxyPort,
		"OAUTH2_PROXY_UPSTREAMS":       "http://" + backendAddr,
		"OAUTH2_PROXY_OIDC_ISSUER_URL": issuer,
		"OAUTH2_PROXY_REDIRECT_URL":    proxyURL + "/oauth2/callback",
	}
	for k := range overrides {
		if _, ok := env[k]; !ok {
			t.Fatalf("the manifest does not set %s", k)
		}
	}
	maps.Copy(env, overrides)
	proxyCmd := exec.Command(proxyBin, args...)
	for k, v := range env {
		proxyCmd.Env = append(proxyCmd.Env, k+"="+v)
	}
	proxy, _ := testproc.Start(t, "oauth2-proxy", proxyCmd, nil)
	testproc.WaitHTTP(t, proxy, proxyURL+"/ping")

	t.Run("wrong password", func(t *testing.T) {
		_, err := browser.New(browser.Options{}).Login(ctx, proxyURL+"/", "john@gefyra.dev", "wrong")
		var le *browser.LoginError
		if !errors.As(err, &le) || !strings.Contains(le.Message, "Invalid username or password") {
			t.Fatalf("err = %v, want the login form again with its message", err)
		}
	})

	b := browser.New(browser.Options{})
	page, err := b.Login(ctx, proxyURL+"/", "john@gefyra.dev", "john@gefyra.dev")
	if err != nil {
		t.Fatal(err)
	}
	if page.Status != 200 || page.Text() != `{"Hello":"World"}` {
		t.Fatalf("login ended on %s with %d %q", page.URL, page.Status, page.Body)
	}

	get := func(path string) (int, string) {
		t.Helper()
		p, err := b.Get(ctx, proxyURL+path)
		if err != nil {
			t.Fatal(err)
		}
		return p.Status, p.Text()
	}
	if status, body := get("/items/123"); status != http.StatusInternalServerError || body != "Internal Server Error" {
		t.Fatalf("buggy backend: /items/123 = %d %q, want 500", status, body)
	}
	if !backend.WaitOutput("claim=Email", 5*time.Second) {
		t.Errorf("buggy backend did not log the missing claim:\n%s", backend.Output())
	}

	// Replace the backend with the fixed build on the same address, as the
	// development loop does after the developer saves the fix.
	backend.Stop()
	_, port, _ := net.SplitHostPort(backendAddr)
	testproc.Start(t, "backend (fixed)", exec.Command(fixed, "-host", "127.0.0.1", "-port", port), backendReady)
	if status, body := get("/items/123"); status != 200 || body != `{"item_id":123,"Email":"john@gefyra.dev"}` {
		t.Fatalf("fixed backend: /items/123 = %d %q", status, body)
	}

	// Without a session the proxy lets nothing through to the backend.
	resp, err := http.Get(proxyURL + "/items/123")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Fatalf("anonymous request reached the backend")
	}
}

// renderLocal renders demo/deploy/local with kubectl kustomize.
func renderLocal(t *testing.T, root string) (cm corev1.ConfigMap, sec corev1.Secret, proxy corev1.Container) {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if out, derr := exec.Command(filepath.Join(root, "world", "build.sh"), "--dir", "k8s").Output(); derr == nil {
		if k := filepath.Join(strings.TrimSpace(string(out)), "kubectl"); fileExists(k) {
			kubectl, err = k, nil
		}
	}
	if err != nil {
		t.Fatal("no kubectl to render demo/deploy/local: run world/build.sh k8s")
	}
	out, err := exec.Command(kubectl, "kustomize", filepath.Join(root, "demo", "deploy", "local")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", err)
	}
	for _, doc := range strings.Split(string(out), "\n---\n") {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		var head struct {
			Kind     string
			Metadata struct{ Name string }
		}
		if err := json.Unmarshal(j, &head); err != nil {
			t.Fatal(err)
		}
		switch {
		case head.Kind == "ConfigMap" && head.Metadata.Name == "oauth2-oauth2proxy":
			err = json.Unmarshal(j, &cm)
		case head.Kind == "Secret" && head.Metadata.Name == "oauth2-oauth2proxy":
			err = json.Unmarshal(j, &sec)
		case head.Kind == "Deployment" && head.Metadata.Name == "oauth2-demo":
			var d appsv1.Deployment
			err = json.Unmarshal(j, &d)
			for _, c := range d.Spec.Template.Spec.Containers {
				if c.Name == "oauth2-proxy" {
					proxy = c
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if cm.Data == nil || sec.StringData == nil || proxy.Name == "" {
		t.Fatal("demo/deploy/local lacks the proxy's ConfigMap, Secret or container")
	}
	return cm, sec, proxy
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// manifestProxyConfig returns the proxy's environment and arguments as the
// local manifests give them.
func manifestProxyConfig(t *testing.T, root string) (map[string]string, []string) {
	t.Helper()
	cm, sec, proxy := renderLocal(t, root)
	env := maps.Clone(cm.Data)
	maps.Copy(env, sec.StringData)
	return env, proxy.Args
}

//go:build e2e

package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/demo/appsrc"
	"gefyra.dev/gefyra/demo/browser"
	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/testworld"
)

// repoRoot is the repository's root directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := appsrc.RepoRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestDemo runs the tutorial's workload in the cluster: the backend behind
// its oauth2-proxy sidecar and the OIDC provider, reached from this machine
// as a browser reaches the Ingress, with the tutorial's bug. The steps are
// the ones `make demo` narrates (demo/story).
func TestDemo(t *testing.T) {
	w := testworld.Get(t)
	d := story.New(w, repoRoot(t))
	d.BuildImages(t)
	d.LoadImages(t)
	d.Deploy(t) // the namespace goes away in t.Cleanup, also on failure
	d.WaitReady(t)

	t.Run("kubectl shows the Pod 2/2 Running, the Services and the Ingress", func(t *testing.T) {
		out := d.Show(t)
		rows := map[string][]string{
			"pod/" + d.Pod():                        {"2/2", "Running"},
			"service/oauth2-demo":                   {"ClusterIP", "10.96.100.20", "8080/TCP"},
			"service/oidc":                          {"ClusterIP", "10.96.100.10", "8080/TCP"},
			"ingress.networking.k8s.io/oauth2-demo": {"oauth2-demo.127.0.0.1.nip.io"},
		}
		for name, want := range rows {
			row := findRow(out, name)
			if row == nil {
				t.Errorf("no row for %s in:\n%s", name, out)
				continue
			}
			for _, w := range want {
				if !slices.Contains(row, w) {
					t.Errorf("%s: %q, want a column %q", name, strings.Join(row, " "), w)
				}
			}
		}
	})

	t.Run("without a login oauth2-proxy lets nothing through", func(t *testing.T) {
		resp, err := w.HTTPClient().Get(d.AppURL() + story.ItemPath)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "Sign in with") {
			t.Fatalf("GET %s without cookies: %s, want oauth2-proxy's sign-in page (403)", story.ItemPath, resp.Status)
		}
	})

	t.Run("the provider refuses a wrong password", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		b := browser.New(browser.Options{Transport: w.HTTPClient().Transport})
		_, err := b.Login(ctx, d.AppURL()+"/", story.User, "not-"+story.Password)
		var le *browser.LoginError
		if !errors.As(err, &le) || !strings.Contains(le.Message, "Invalid username or password") {
			t.Fatalf("login with a wrong password: err = %v, want the login form again with its message", err)
		}
	})

	hops := d.Login(t)

	t.Run("the login went through oauth2-proxy and the provider's login form", func(t *testing.T) {
		app, issuer := strings.TrimPrefix(d.AppURL(), "http://"), w.ServiceAddr(t, story.Namespace, story.OIDCService, 8080)
		want := []story.Hop{
			{Method: http.MethodGet, URL: &url.URL{Scheme: "http", Host: app, Path: "/oauth2/start"}, Status: http.StatusFound},
			{Method: http.MethodPost, URL: &url.URL{Scheme: "http", Host: issuer, Path: "/login"}, Status: http.StatusFound},
			{Method: http.MethodGet, URL: &url.URL{Scheme: "http", Host: app, Path: "/oauth2/callback"}, Status: http.StatusFound},
		}
		var got []string
		for _, h := range hops {
			got = append(got, h.String())
		}
		i := 0
		for _, h := range got {
			if i < len(want) && h == want[i].String() {
				i++
			}
		}
		if i < len(want) {
			t.Errorf("the login's requests:\n%s\nlack, in this order, %s", strings.Join(got, "\n"), want[i])
		}
	})

	t.Run("/ answers hello", func(t *testing.T) {
		d.ExpectHello(t)
	})

	t.Run("/items/123 answers 500 and the backend logs the missing claim", func(t *testing.T) {
		if claim := d.ExpectBug(t); claim != "Email" {
			t.Errorf("the backend's log names claim %q, want %q (the tutorial's bug)", claim, "Email")
		}
	})
}

// findRow returns the fields of the line of kubectl's table output whose
// first column is name.
func findRow(table, name string) []string {
	for line := range strings.Lines(table) {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == name {
			return f
		}
	}
	return nil
}

// TestDemoManifests has the real API server accept the tutorial's manifests
// with Keycloak (demo/deploy/base), which do not run here (no Keycloak
// image), with a server-side dry run: every field is checked by the real
// schema and admission, nothing is created. They go into a namespace of the
// test through a kustomization around them.
func TestDemoManifests(t *testing.T) {
	w := testworld.Get(t)
	ns := w.Namespace(t, "demo-base")
	dir := t.TempDir()
	base, err := filepath.Rel(dir, filepath.Join(repoRoot(t), "demo", "deploy", "base"))
	if err != nil {
		t.Fatal(err)
	}
	kustomization := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: " + ns + "\nresources:\n  - " + base + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		args    []string
		stdin   string
		wantOut []string
		wantErr string
	}{
		{
			name: "the tutorial's manifests with Keycloak",
			args: []string{"apply", "--dry-run=server", "-k", dir},
			wantOut: []string{
				"deployment.apps/oauth2-demo created (server dry run)",
				"statefulset.apps/keycloak created (server dry run)",
				"service/oauth2-demo created (server dry run)",
				"service/keycloak-headless created (server dry run)",
				"configmap/keycloak-realm created (server dry run)",
				"ingress.networking.k8s.io/keycloak created (server dry run)",
				"ingress.networking.k8s.io/oauth2-demo created (server dry run)",
			},
		},
		{
			name:    "a ClusterIP outside the Service range is refused",
			args:    []string{"apply", "--dry-run=server", "-f", "-"},
			stdin:   "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: " + ns + "}\nspec: {clusterIP: 10.200.0.1, ports: [{port: 80}]}\n",
			wantErr: "not in the valid range",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := w.RunKubectl(ctx, tt.stdin, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, output %s; want %q", err, out, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in:\n%s", want, out)
				}
			}
		})
	}

	// A dry run leaves nothing behind.
	left := w.Kubectl(t, "--namespace", ns, "get", "deployments,statefulsets,services,configmaps,ingresses", "--ignore-not-found", "-o", "name")
	for line := range strings.Lines(left) {
		if name := strings.TrimSpace(line); name != "" && name != "configmap/kube-root-ca.crt" {
			t.Errorf("the dry run created %s", name)
		}
	}
}

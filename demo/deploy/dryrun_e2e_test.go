//go:build e2e

package deploy

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/demo/internal/testproc"
)

func worldBinary(t *testing.T, component, name string) string {
	t.Helper()
	out, err := exec.Command("../../world/build.sh", "--dir", component).Output()
	if err != nil {
		t.Fatalf("world/build.sh --dir %s: %v", component, err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not built: run world/build.sh %s", name, component)
	}
	return p
}

func port(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}

// TestServerSideDryRun has a private API server (etcd and kube-apiserver on
// loopback, nothing else) accept both kustomizations with a server-side
// dry run, so every field is checked by the real schema and admission.
func TestServerSideDryRun(t *testing.T) {
	etcd := worldBinary(t, "etcd", "etcd")
	apiserver := worldBinary(t, "k8s", "kube-apiserver")
	kubectlBin := worldBinary(t, "k8s", "kubectl")
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	saKey := write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	saPub := write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	tokens := write("tokens.csv", []byte("demo-admin-token,admin,admin,system:masters\n"))

	client, peer, secure := port(t), port(t), port(t)
	testproc.Start(t, "etcd", exec.Command(etcd, "--data-dir", filepath.Join(dir, "etcd"), "--name", "default",
		"--listen-client-urls", "http://127.0.0.1:"+client, "--advertise-client-urls", "http://127.0.0.1:"+client,
		"--listen-peer-urls", "http://127.0.0.1:"+peer, "--initial-advertise-peer-urls", "http://127.0.0.1:"+peer,
		"--initial-cluster", "default=http://127.0.0.1:"+peer, "--listen-metrics-urls", "http://127.0.0.1:"+port(t)),
		nil)
	api, _ := testproc.Start(t, "kube-apiserver", exec.Command(apiserver,
		"--etcd-servers", "http://127.0.0.1:"+client,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", secure,
		"--cert-dir", filepath.Join(dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--token-auth-file", tokens, "--authorization-mode", "RBAC",
		"--service-cluster-ip-range", "10.96.0.0/12", "--endpoint-reconciler-type", "none"), nil)

	kubectl := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(kubectlBin, append([]string{"--server", "https://127.0.0.1:" + secure,
			"--insecure-skip-tls-verify", "--token", "demo-admin-token"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := kubectl("", "get", "--raw", "/readyz")
		if err == nil && strings.TrimSpace(out) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("API server not ready: %v %s\n%s", err, out, api.Output())
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Namespaced objects need their namespace to exist for a dry run.
	if out, err := kubectl("", "create", "namespace", "oauth2-demo", "--save-config"); err != nil {
		t.Fatalf("create namespace: %v %s", err, out)
	}
	tests := []struct {
		name    string
		args    []string
		stdin   string
		wantErr string
	}{
		{name: "base with Keycloak", args: []string{"apply", "--dry-run=server", "-k", "base"}},
		{name: "local variant", args: []string{"apply", "--dry-run=server", "-k", "local"}},
		{name: "a ClusterIP outside the service range is refused", args: []string{"apply", "--dry-run=server", "-f", "-"},
			stdin:   "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: oauth2-demo}\nspec: {clusterIP: 10.200.0.1, ports: [{port: 80}]}\n",
			wantErr: "not in the valid range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := kubectl(tc.stdin, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(out, tc.wantErr) {
					t.Fatalf("err = %v, output %s; want %q", err, out, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "(server dry run)") {
				t.Fatalf("not a server-side dry run:\n%s", out)
			}
			t.Logf("%s", out)
		})
	}
}

package clitest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"gefyra.dev/gefyra/cli/internal/cluster"
)

// APIServer is a real kube-apiserver and etcd (no kubelet, no controllers)
// with gefyra's CRDs and namespace.
type APIServer struct {
	// Admin is an admin's connection.
	Admin  *rest.Config
	Client client.Client
	env    *envtest.Environment
	tmp    string
}

// StartAPIServer starts it, with the test world's binaries (it never
// builds them: world/build.sh k8s etcd does). Call it from TestMain.
func StartAPIServer() (*APIServer, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	dirOf := func(component string) (string, error) {
		out, err := exec.Command("bash", filepath.Join(root, "world", "build.sh"), "--dir", component).Output()
		if err != nil {
			return "", fmt.Errorf("world/build.sh --dir %s: %w", component, err)
		}
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, ".complete")); err != nil {
			return "", fmt.Errorf("the test world's binaries are not built (%s is missing): run world/build.sh k8s etcd", d)
		}
		return d, nil
	}
	k8sDir, err := dirOf("k8s")
	if err != nil {
		return nil, err
	}
	etcdDir, err := dirOf("etcd")
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "gefyra-cli-envtest-")
	if err != nil {
		return nil, err
	}
	for name, target := range map[string]string{
		"kube-apiserver": filepath.Join(k8sDir, "kube-apiserver"),
		"kubectl":        filepath.Join(k8sDir, "kubectl"),
		"etcd":           filepath.Join(etcdDir, "etcd"),
	} {
		if err := os.Symlink(target, filepath.Join(tmp, name)); err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: tmp,
		CRDDirectoryPaths:     []string{filepath.Join(root, "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("starting kube-apiserver and etcd: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: cluster.Scheme()})
	if err != nil {
		env.Stop()
		os.RemoveAll(tmp)
		return nil, err
	}
	s := &APIServer{Admin: cfg, Client: c, env: env, tmp: tmp}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cluster.Namespace}}
	if err := c.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop stops the API server and etcd.
func (s *APIServer) Stop() {
	s.env.Stop()
	os.RemoveAll(s.tmp)
}

// Kubeconfig writes a kubeconfig into dir for a user named user (in
// groups) with a context named context, and returns its path.
func (s *APIServer) Kubeconfig(dir, user, context string, groups ...string) (string, error) {
	u, err := s.env.AddUser(envtest.User{Name: user, Groups: groups}, nil)
	if err != nil {
		return "", err
	}
	cfg := u.Config()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts[context] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: user}
	kc.CurrentContext = context
	path := filepath.Join(dir, "kubeconfig-"+context)
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", err
	}
	return path, nil
}

// Namespace creates a namespace with a random name.
func (s *APIServer) Namespace(ctx context.Context) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := s.Client.Create(ctx, ns); err != nil {
		return "", err
	}
	return ns.Name, nil
}

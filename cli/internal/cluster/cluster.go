// Package cluster is the CLI's view of the Kubernetes cluster: it loads
// the kubeconfig the way kubectl does (--kubeconfig, KUBECONFIG, --context,
// -n), tells who the developer is, checks that gefyra's add-on is there,
// registers the developer's GefyraClient and renews its heartbeat, reads
// the workloads a bridge targets, and creates, watches and deletes
// GefyraBridges.
//
// A developer may read only their own GefyraClient, not bridges at large
// (deploy/rbac/developer.yaml): where reading a bridge is forbidden, its
// state is taken from the client's status, which lists the client's bridges.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gefyra.dev/gefyra/cli/internal/errmark"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

// Errors the commands turn into advice.
var (
	ErrNoKubeconfig = errors.New("no cluster configured")
	ErrUnreachable  = errors.New("cluster unreachable")
	ErrNotInstalled = errors.New("gefyra is not installed in the cluster")
)

// Options select the cluster like kubectl's flags.
type Options struct {
	Kubeconfig string
	Context    string
	Namespace  string
}

// Cluster is a connection to the API server of one kubeconfig context.
type Cluster struct {
	// Context is the kubeconfig context in use; Server its API server.
	Context string
	Server  string
	// Namespace is -n, else the context's namespace, else "default".
	Namespace string
	Rest      *rest.Config
	Client    client.Client
	Kube      kubernetes.Interface
}

// Scheme knows the core types and gefyra's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(gefyrav1.AddToScheme(s))
	return s
}

// Load reads the kubeconfig; it does not contact the cluster.
func Load(o Options) (*Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: o.Context}
	overrides.Context.Namespace = o.Namespace
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, errmark.New(ErrNoKubeconfig, "reading the kubeconfig: %v", err)
	}
	ctxName := o.Context
	if ctxName == "" {
		ctxName = raw.CurrentContext
	}
	if ctxName == "" {
		return nil, errmark.New(ErrNoKubeconfig, "the kubeconfig has no current context: pass --context, or --kubeconfig/KUBECONFIG for another file")
	}
	if _, ok := raw.Contexts[ctxName]; !ok {
		return nil, errmark.New(ErrNoKubeconfig, "context %q is not in the kubeconfig (%s)", ctxName, contextNames(raw.Contexts))
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, errmark.New(ErrNoKubeconfig, "no kubeconfig found: pass --kubeconfig or set KUBECONFIG")
		}
		return nil, errmark.New(ErrNoKubeconfig, "the kubeconfig: %v", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	return New(cfg, ctxName, ns)
}

// New connects to the API server of cfg.
func New(cfg *rest.Config, context, namespace string) (*Cluster, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = rest.NoWarnings{}
	// A CLI makes few requests; client-go's default of 5 per second
	// would slow its polling down.
	cfg.QPS, cfg.Burst = 50, 100
	if cfg.UserAgent == "" {
		cfg.UserAgent = "gefyra"
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, err
	}
	return &Cluster{Context: context, Server: cfg.Host, Namespace: namespace, Rest: cfg, Client: c, Kube: kube}, nil
}

func contextNames(m map[string]*clientcmdapi.Context) string {
	if len(m) == 0 {
		return "it has none"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return "it has " + strings.Join(names, ", ")
}

// Ping checks that the API server answers.
func (c *Cluster) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Kube.Discovery().ServerVersion()
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return errmark.New(ErrUnreachable, "cannot reach the API server of context %s at %s (%v): check that the cluster runs and that --context/--kubeconfig name it",
			c.Context, c.Server, err)
	}
	return nil
}

// WhoAmI returns the Kubernetes user name of the credentials in use.
func (c *Cluster) WhoAmI(ctx context.Context) (string, error) {
	r, err := c.Kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("asking the cluster who you are (SelfSubjectReview): %w", err)
	}
	if r.Status.UserInfo.Username == "" {
		return "", errors.New("the cluster does not say who you are (SelfSubjectReview has no user name)")
	}
	return r.Status.UserInfo.Username, nil
}

// IsForbidden says whether err is the API server refusing access.
func IsForbidden(err error) bool { return apierrors.IsForbidden(err) }

// IsNotFound says whether err is the API server reporting a missing object.
func IsNotFound(err error) bool { return apierrors.IsNotFound(err) }

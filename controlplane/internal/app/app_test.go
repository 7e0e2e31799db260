package app_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/controlplane/internal/app"
	"gefyra.dev/gefyra/controlplane/internal/operator"
	"gefyra.dev/gefyra/controlplane/internal/translate"
	"gefyra.dev/gefyra/internal/credential"
	"gefyra.dev/gefyra/internal/testworld/envtestassets"
	"gefyra.dev/gefyra/internal/xdsclient"
)

// TestBridgeBecomesDataPlaneReady runs the whole control plane against a
// real API server: a bridge of a bare Pod is mounted, the Pod's carrier and
// stowaway connect over xDS with their ServiceAccount tokens, get their
// configuration and acknowledge it, and the bridge turns Ready.
func TestBridgeBecomesDataPlaneReady(t *testing.T) {
	root, err := envtestassets.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	assets, cleanupAssets, err := envtestassets.Link(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanupAssets)
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	scheme, err := operator.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mustCreate := func(objs ...client.Object) {
		t.Helper()
		for _, o := range objs {
			if err := k8s.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustCreate(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gefyra"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: "gefyra-stowaway"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "default"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: "gefyra-stowaway"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "stowaway"},
				Ports: []corev1.ServicePort{{Name: "relay", Port: 8833}, {Name: "admin", Port: 9090}}}},
	)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logOut := slog.DiscardHandler
	if os.Getenv("GEFYRA_TEST_LOG") != "" {
		logOut = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	reg := prometheus.NewRegistry()
	cp, err := app.New(ctx, app.Config{
		Operator: operator.Config{Namespace: "gefyra", CarrierImage: "gefyra.dev/carrier:0.1.0",
			TunnelCIDR: netip.MustParsePrefix("10.122.0.0/24"), StowawayEndpoint: "127.0.0.1:31820"},
		Kube:           cfg,
		LeaderElection: true,
		Holdoff:        20 * time.Millisecond,
		MaxDelay:       200 * time.Millisecond,
		XDS:            &app.XDSConfig{Listener: ln, Audiences: []string{"gefyra-xds"}, Replica: "controlplane-0"},
		Log:            slog.New(logOut),
		Registry:       reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("control plane: %v", err)
		}
	})

	// The developer's client, a bare Pod (kubelet's part played by the
	// test) and a bridge of its container.
	var key [32]byte
	rand.Read(key[:])
	mustCreate(&gefyrav1.GefyraClient{ObjectMeta: metav1.ObjectMeta{Namespace: "gefyra", Name: "dev1"},
		Spec: gefyrav1.GefyraClientSpec{User: "dev1", PublicKey: base64.StdEncoding.EncodeToString(key[:]), LeaseDuration: &metav1.Duration{Duration: time.Hour}}})
	solo := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "solo", Labels: map[string]string{"app": "solo"}},
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "demo/solo:2", Ports: []corev1.ContainerPort{{ContainerPort: 8155}}}}}}
	mustCreate(solo)
	running(t, k8s, solo, "10.244.0.31")
	mustCreate(&gefyrav1.GefyraBridge{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "b1"},
		Spec: gefyrav1.GefyraBridgeSpec{Client: "dev1", Target: gefyrav1.Target{Kind: gefyrav1.KindPod, Name: "solo", Container: "app"},
			Ports: []gefyrav1.PortMapping{{Remote: 8155, Local: 8155}}}})
	clone := &corev1.Pod{}
	eventually(t, 30*time.Second, "the fallback clone", func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "solo-gefyra-fallback-app"}, clone)
	})
	running(t, k8s, clone, "10.244.0.32")
	// kubelet restarts the container with carrier.
	eventually(t, 30*time.Second, "carrier swapped in", func() error {
		p := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(solo), p); err != nil {
			return err
		}
		if got := p.Spec.Containers[0].Image; got != "gefyra.dev/carrier:0.1.0" {
			return fmt.Errorf("container app runs %s", got)
		}
		return nil
	})
	running(t, k8s, solo, "10.244.0.31")

	carrier := &recorder{}
	connect(t, ln.Addr().String(), "shop/solo", podToken(t, cs, solo), translate.Types(translate.KindCarrier), carrier)
	stowaway := &recorder{}
	connect(t, ln.Addr().String(), "gefyra/stowaway", audienceToken(t, cs, "gefyra", "gefyra-stowaway", "gefyra-xds"), translate.Types(translate.KindStowaway), stowaway)

	eventually(t, 30*time.Second, "the bridge is Ready", func() error {
		b := &gefyrav1.GefyraBridge{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "b1"}, b); err != nil {
			return err
		}
		dp := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionDataPlaneReady)
		ready := meta.FindStatusCondition(b.Status.Conditions, gefyrav1.ConditionReady)
		if dp == nil || dp.Status != metav1.ConditionTrue || ready == nil || ready.Status != metav1.ConditionTrue {
			return fmt.Errorf("DataPlaneReady %+v, Ready %+v", dp, ready)
		}
		return nil
	})

	// Carrier dials the relay Service's cluster IP (there may be no DNS)
	// and presents a credential stowaway's key verifies.
	svc := &corev1.Service{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: "gefyra-stowaway"}, svc); err != nil {
		t.Fatal(err)
	}
	var cl *clusterv3.Cluster
	for _, m := range carrier.last()[resource.ClusterType] {
		if c := m.(*clusterv3.Cluster); c.GetName() == translate.BridgeClusterName("shop/b1", 8155) {
			cl = c
		}
	}
	if cl == nil {
		t.Fatal("carrier has no cluster for the bridge")
	}
	sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != svc.Spec.ClusterIP || sa.GetPortValue() != 8833 {
		t.Fatalf("relay endpoint %s:%d, want %s:8833", sa.GetAddress(), sa.GetPortValue(), svc.Spec.ClusterIP)
	}
	secret := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "gefyra", Name: "gefyra-credential-key"}, secret); err != nil {
		t.Fatal(err)
	}
	signer, err := credential.ParsePrivateKey(secret.Data["privateKey"])
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := credential.PublicKeyPEM(signer.Public())
	found := false
	for _, m := range stowaway.last()[resource.RuntimeType] {
		rt := m.(*runtimev3.Runtime)
		for _, k := range rt.GetLayer().GetFields()["credentialKeys"].GetListValue().GetValues() {
			found = found || k.GetStringValue() == pub
		}
	}
	if !found {
		t.Fatal("stowaway does not get the signing key of Secret gefyra-credential-key")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names bytes.Buffer
	for _, mf := range mfs {
		names.WriteString(mf.GetName() + " ")
	}
	for _, want := range []string{"gefyra_controlplane_xds_pushes_total", "gefyra_controlplane_xds_connected_nodes", "gefyra_controlplane_xds_push_latency_seconds"} {
		if !strings.Contains(names.String(), want) {
			t.Errorf("metric %s is not on the control plane's registry", want)
		}
	}
}

// running stands in for kubelet: p runs, ready, with ip, each container
// running the image its spec names now and ready.
func running(t *testing.T, k8s client.Client, p *corev1.Pod, ip string) {
	t.Helper()
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatal(err)
	}
	orig := p.DeepCopy()
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}})
	}
	if err := k8s.Status().Patch(context.Background(), p, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
}

func podToken(t *testing.T, cs *kubernetes.Clientset, p *corev1.Pod) string {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(p.Namespace).CreateToken(context.Background(), "default", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func audienceToken(t *testing.T, cs *kubernetes.Clientset, ns, sa, aud string) string {
	t.Helper()
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{aud}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

type recorder struct {
	mu  sync.Mutex // guards got
	got map[string][]proto.Message
}

func (r *recorder) last() map[string][]proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

func connect(t *testing.T, addr, node, token string, types []string, r *recorder) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := xdsclient.New(xdsclient.Config{Server: addr, NodeID: node, Types: types, TokenFile: f,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
		func(res map[string][]proto.Message) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.got = map[string][]proto.Message{}
			for k, v := range res {
				r.got[k] = append([]proto.Message(nil), v...)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

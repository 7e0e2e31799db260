package app

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"gefyra.dev/gefyra/controlplane/internal/auth"
	"gefyra.dev/gefyra/controlplane/internal/translate"
	"gefyra.dev/gefyra/controlplane/internal/xds"
	"gefyra.dev/gefyra/internal/credential"
)

// setupXDS builds the xDS server and registers the sharing of node status
// (every replica) and the bridges' readiness (leader) with mgr.
func setupXDS(ctx context.Context, mgr manager.Manager, cfg Config) (*xds.Server, error) {
	x := cfg.XDS
	ns := cfg.Operator.Namespace
	if x.Addr == "" && x.Listener == nil {
		return nil, errors.New("xds: no listen address")
	}
	if x.Replica == "" {
		return nil, errors.New("xds: the replica's name is not set")
	}
	if x.RelayService == "" {
		x.RelayService = "gefyra-stowaway"
	}
	if x.KeySecret == "" {
		x.KeySecret = "gefyra-credential-key"
	}
	if x.StowawayServiceAccount == "" {
		x.StowawayServiceAccount = "gefyra-stowaway"
	}
	key, err := signingKey(ctx, mgr.GetClient(), mgr.GetAPIReader(), ns, x.KeySecret)
	if err != nil {
		return nil, err
	}
	signer, err := credential.NewSigner(key, nil)
	if err != nil {
		return nil, err
	}
	var relay func(context.Context) (string, error)
	if x.RelayAddress == "" {
		c := mgr.GetClient()
		relay = func(ctx context.Context) (string, error) {
			return relayAddress(ctx, c, ns, x.RelayService)
		}
	}
	var share *xds.Share
	var ready *xds.Readiness
	srv, err := xds.New(xds.Config{
		Addr:     x.Addr,
		Listener: x.Listener,
		Translate: translate.Options{
			RelayAddress:  x.RelayAddress,
			Signer:        signer,
			CredentialTTL: x.CredentialTTL,
		},
		Relay:         relay,
		Authenticator: &auth.Reviewer{Client: mgr.GetClient(), Audiences: x.Audiences},
		Policy:        auth.Policy{StowawayNamespace: ns, StowawayServiceAccount: x.StowawayServiceAccount},
		OnChange: func() {
			share.Notify()
			ready.Notify()
		},
		Log:      cfg.Log.With("component", "xds"),
		Registry: cfg.Registry,
	})
	if err != nil {
		return nil, err
	}
	share = xds.NewShare(xds.Share{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: ns, Replica: x.Replica,
		Nodes: srv.Nodes, Log: cfg.Log.With("component", "xds-share"),
	})
	ready = xds.NewReadiness(xds.Readiness{
		Client: mgr.GetClient(), Model: srv.Model, Local: srv.Nodes, Share: share,
		Log: cfg.Log.With("component", "xds-readiness"),
	})
	if err := mgr.Add(share); err != nil {
		return nil, err
	}
	if err := mgr.Add(ready); err != nil {
		return nil, err
	}
	return srv, nil
}

// signingKey reads the credential signing key from Secret ns/name (key
// "privateKey", PEM), creating it with a new Ed25519 key the first time.
// Every replica signs with it, and stowaway accepts its public key.
func signingKey(ctx context.Context, c client.Client, api client.Reader, ns, name string) (crypto.Signer, error) {
	s := &corev1.Secret{}
	key := client.ObjectKey{Namespace: ns, Name: name}
	err := api.Get(ctx, key, s)
	if apierrors.IsNotFound(err) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		pemKey, merr := credential.MarshalPrivateKey(priv)
		if merr != nil {
			return nil, merr
		}
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "gefyra"}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{"privateKey": pemKey},
		}
		err = c.Create(ctx, s)
		if apierrors.IsAlreadyExists(err) {
			err = api.Get(ctx, key, s)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("credential signing key %s: %w", key, err)
	}
	k, err := credential.ParsePrivateKey(s.Data["privateKey"])
	if err != nil {
		return nil, fmt.Errorf("credential signing key %s: %w", key, err)
	}
	return k, nil
}

// relayAddress is Service ns/name's ClusterIP and its port named "relay"
// (or its only port).
func relayAddress(ctx context.Context, c client.Reader, ns, name string) (string, error) {
	svc := &corev1.Service{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
		return "", fmt.Errorf("service %s/%s: %w", ns, name, err)
	}
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone {
		return "", fmt.Errorf("service %s/%s has no cluster IP", ns, name)
	}
	var port int32
	for _, p := range svc.Spec.Ports {
		if p.Name == "relay" || len(svc.Spec.Ports) == 1 {
			port = p.Port
		}
	}
	if port == 0 {
		return "", fmt.Errorf("service %s/%s has no port named relay", ns, name)
	}
	return net.JoinHostPort(ip, strconv.Itoa(int(port))), nil
}

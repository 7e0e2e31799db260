package operator

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"golang.org/x/crypto/curve25519"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// stowawayPublicKey returns stowaway's WireGuard public key, creating its
// private key Secret the first time. Stowaway mounts that Secret; the
// private key never leaves the cluster.
func (o *Operator) stowawayPublicKey(ctx context.Context) (string, error) {
	s := &corev1.Secret{}
	key := client.ObjectKey{Namespace: o.cfg.Namespace, Name: o.cfg.StowawaySecret}
	err := o.api.Get(ctx, key, s)
	if apierrors.IsNotFound(err) {
		var priv [32]byte
		if _, err := rand.Read(priv[:]); err != nil {
			return "", err
		}
		priv[0] &= 248
		priv[31] = priv[31]&127 | 64
		s = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{"app.kubernetes.io/part-of": "gefyra"}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{"privateKey": []byte(base64.StdEncoding.EncodeToString(priv[:]))},
		}
		err = o.client.Create(ctx, s)
		if apierrors.IsAlreadyExists(err) {
			err = o.api.Get(ctx, key, s)
		}
	}
	if err != nil {
		return "", err
	}
	priv, err := base64.StdEncoding.DecodeString(string(s.Data["privateKey"]))
	if err != nil || len(priv) != 32 {
		return "", fmt.Errorf("secret %s: privateKey is not a base64 WireGuard key", key)
	}
	pub, err := curve25519.X25519(priv, curve25519.Basepoint)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(pub), nil
}

// ensureStowawayKey creates stowaway's key Secret as soon as this replica
// leads, retrying until it exists: stowaway's Pod mounts it and does not
// start without it, and the add-on must be up before the first client
// registers.
func (o *Operator) ensureStowawayKey(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for {
		_, err := o.stowawayPublicKey(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		o.log.Warn("creating stowaway's key Secret failed; retrying", "secret", o.cfg.Namespace+"/"+o.cfg.StowawaySecret, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

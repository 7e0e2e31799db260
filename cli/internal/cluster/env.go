package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"gefyra.dev/gefyra/cli/internal/errmark"
	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/internal/expansion"
)

// EnvRef names the container whose environment `gefyra run --env-from`
// copies: KIND/NAME[/CONTAINER].
type EnvRef struct {
	Kind      gefyrav1.TargetKind
	Name      string
	Container string // empty: the workload's only container
}

// ParseEnvRef reads deployment/NAME[/CONTAINER] (also statefulset/,
// daemonset/ and pod/, with kubectl's short forms deploy/, sts/, ds/, po/).
func ParseEnvRef(s string) (EnvRef, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return EnvRef{}, fmt.Errorf("--env-from %q: want KIND/NAME[/CONTAINER], e.g. deployment/oauth2-demo/oauth2-demo-app", s)
	}
	kind, err := ParseKind(parts[0])
	if err != nil {
		return EnvRef{}, fmt.Errorf("--env-from %q: %w", s, err)
	}
	r := EnvRef{Kind: kind, Name: parts[1]}
	if len(parts) == 3 {
		r.Container = parts[2]
	}
	if !isDNSSubdomain(r.Name) {
		return EnvRef{}, fmt.Errorf("--env-from %q: %q is not a valid workload name", s, r.Name)
	}
	if len(parts) == 3 && !isDNSLabel(r.Container) {
		return EnvRef{}, fmt.Errorf("--env-from %q: %q is not a valid container name", s, r.Container)
	}
	return r, nil
}

// ParseKind reads a workload kind as kubectl spells it.
func ParseKind(s string) (gefyrav1.TargetKind, error) {
	switch strings.ToLower(s) {
	case "deployment", "deployments", "deploy":
		return gefyrav1.KindDeployment, nil
	case "statefulset", "statefulsets", "sts":
		return gefyrav1.KindStatefulSet, nil
	case "daemonset", "daemonsets", "ds":
		return gefyrav1.KindDaemonSet, nil
	case "pod", "pods", "po":
		return gefyrav1.KindPod, nil
	}
	return "", fmt.Errorf("unknown workload kind %q: want deployment, statefulset, daemonset or pod", s)
}

// PickContainer returns the container name wants (the only one when name
// is empty), with an error that lists the choices.
func (w *Workload) PickContainer(name string) (*corev1.Container, error) {
	if name == "" {
		if len(w.Containers) == 1 {
			return &w.Containers[0], nil
		}
		return nil, errmark.New(ErrContainerAmbiguous, "%s has %d containers (%s)", w.Ref(), len(w.Containers), strings.Join(w.ContainerNames(), ", "))
	}
	c, ok := w.Container(name)
	if !ok {
		return nil, errmark.New(ErrWorkloadNotFound, "%s has no container %q (it has %s)", w.Ref(), name, strings.Join(w.ContainerNames(), ", "))
	}
	return c, nil
}

// Env returns the environment of the container ref names, as K=V in the
// order Kubernetes applies it (envFrom, then env), with values from
// ConfigMaps and Secrets resolved and $(VAR) references expanded. What
// cannot be known outside the Pod (its IP, resource limits) or may not be
// read is left out and reported in warnings.
func (c *Cluster) Env(ctx context.Context, namespace string, ref EnvRef) (env []string, warnings []string, err error) {
	w, err := c.GetWorkload(ctx, namespace, ref.Kind, ref.Name)
	if err != nil {
		return nil, nil, err
	}
	ct, err := w.PickContainer(ref.Container)
	if errors.Is(err, ErrContainerAmbiguous) {
		return nil, nil, fmt.Errorf("%v: name one, e.g. %s/%s", err, w.Ref(), w.Containers[len(w.Containers)-1].Name)
	}
	if err != nil {
		return nil, nil, err
	}
	values := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := values[k]; !ok {
			order = append(order, k)
		}
		values[k] = v
	}
	cms := map[string]*corev1.ConfigMap{}
	secrets := map[string]*corev1.Secret{}
	getCM := func(name string) (*corev1.ConfigMap, error) {
		if cm, ok := cms[name]; ok {
			return cm, nil
		}
		cm := &corev1.ConfigMap{}
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, cm); err != nil {
			return nil, err
		}
		cms[name] = cm
		return cm, nil
	}
	getSecret := func(name string) (*corev1.Secret, error) {
		if s, ok := secrets[name]; ok {
			return s, nil
		}
		s := &corev1.Secret{}
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s); err != nil {
			return nil, err
		}
		secrets[name] = s
		return s, nil
	}
	optional := func(b *bool) bool { return b != nil && *b }
	for _, src := range ct.EnvFrom {
		switch {
		case src.ConfigMapRef != nil:
			cm, err := getCM(src.ConfigMapRef.Name)
			if err != nil {
				if !(apierrors.IsNotFound(err) && optional(src.ConfigMapRef.Optional)) {
					warnings = append(warnings, fmt.Sprintf("configmap %s: %v", src.ConfigMapRef.Name, short(err)))
				}
				continue
			}
			for _, k := range sortedKeys(cm.Data) {
				set(src.Prefix+k, cm.Data[k])
			}
		case src.SecretRef != nil:
			s, err := getSecret(src.SecretRef.Name)
			if err != nil {
				if !(apierrors.IsNotFound(err) && optional(src.SecretRef.Optional)) {
					warnings = append(warnings, fmt.Sprintf("secret %s: %v", src.SecretRef.Name, short(err)))
				}
				continue
			}
			keys := make([]string, 0, len(s.Data))
			for k := range s.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				set(src.Prefix+k, string(s.Data[k]))
			}
		}
	}
	for _, e := range ct.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, values))
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.ConfigMapKeyRef != nil:
			cm, err := getCM(vf.ConfigMapKeyRef.Name)
			if err != nil {
				if !(apierrors.IsNotFound(err) && optional(vf.ConfigMapKeyRef.Optional)) {
					warnings = append(warnings, fmt.Sprintf("%s: configmap %s: %v", e.Name, vf.ConfigMapKeyRef.Name, short(err)))
				}
				continue
			}
			v, ok := cm.Data[vf.ConfigMapKeyRef.Key]
			if !ok {
				if !optional(vf.ConfigMapKeyRef.Optional) {
					warnings = append(warnings, fmt.Sprintf("%s: configmap %s has no key %s", e.Name, cm.Name, vf.ConfigMapKeyRef.Key))
				}
				continue
			}
			set(e.Name, v)
		case vf.SecretKeyRef != nil:
			s, err := getSecret(vf.SecretKeyRef.Name)
			if err != nil {
				if !(apierrors.IsNotFound(err) && optional(vf.SecretKeyRef.Optional)) {
					warnings = append(warnings, fmt.Sprintf("%s: secret %s: %v", e.Name, vf.SecretKeyRef.Name, short(err)))
				}
				continue
			}
			v, ok := s.Data[vf.SecretKeyRef.Key]
			if !ok {
				if !optional(vf.SecretKeyRef.Optional) {
					warnings = append(warnings, fmt.Sprintf("%s: secret %s has no key %s", e.Name, s.Name, vf.SecretKeyRef.Key))
				}
				continue
			}
			set(e.Name, string(v))
		case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.namespace":
			set(e.Name, namespace)
		case vf.FieldRef != nil:
			warnings = append(warnings, fmt.Sprintf("%s: field %s exists only inside the Pod; not copied", e.Name, vf.FieldRef.FieldPath))
		case vf.ResourceFieldRef != nil:
			warnings = append(warnings, fmt.Sprintf("%s: resource field %s exists only inside the Pod; not copied", e.Name, vf.ResourceFieldRef.Resource))
		}
	}
	env = make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+values[k])
	}
	return env, warnings, nil
}

// expand replaces $(VAR) with values already defined, as kubelet does.
func expand(s string, values map[string]string) string {
	return expansion.Expand(s, func(name string) (string, bool) {
		v, ok := values[name]
		return v, ok
	})
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func short(err error) string {
	switch {
	case apierrors.IsForbidden(err):
		return "you may not read it; not copied"
	case apierrors.IsNotFound(err):
		return "not found; not copied"
	}
	return err.Error()
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(s)-1) {
			return false
		}
	}
	return true
}

func isDNSSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

// IsDNSLabel and IsDNSSubdomain check Kubernetes object names.
func IsDNSLabel(s string) bool { return isDNSLabel(s) }

// IsDNSSubdomain checks a Kubernetes object name (RFC 1123 subdomain).
func IsDNSSubdomain(s string) bool { return isDNSSubdomain(s) }

package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"path"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// deployments returns every Deployment of the embedded manifests.
func deployments(t *testing.T) []appsv1.Deployment {
	t.Helper()
	var out []appsv1.Deployment
	err := fs.WalkDir(FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) != ".yaml" {
			return err
		}
		b, err := FS.ReadFile(p)
		if err != nil {
			return err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return err
			}
			if meta.Kind != "Deployment" {
				continue
			}
			var dep appsv1.Deployment
			if err := yaml.UnmarshalStrict(doc, &dep); err != nil {
				t.Errorf("%s: %v", p, err)
				continue
			}
			out = append(out, dep)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSecretsReadableByNonRootPods checks that a Pod running as a non-root
// user can read the Secrets it mounts: kubelet writes Secret files owned by
// root with the volume's mode, and hands them to the Pod's fsGroup only if
// there is one.
func TestSecretsReadableByNonRootPods(t *testing.T) {
	deps := deployments(t)
	if len(deps) == 0 {
		t.Fatal("no Deployments in the manifests")
	}
	for _, d := range deps {
		spec := d.Spec.Template.Spec
		sc := spec.SecurityContext
		if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("Deployment %s: Pods must run as a fixed non-root user", d.Name)
			continue
		}
		for _, v := range spec.Volumes {
			if v.Secret == nil {
				continue
			}
			mode := int32(corev1.SecretVolumeSourceDefaultMode)
			if v.Secret.DefaultMode != nil {
				mode = *v.Secret.DefaultMode
			}
			if mode&0o004 == 0 && sc.FSGroup == nil {
				t.Errorf("Deployment %s: Secret volume %s (mode %#o) belongs to root and the Pod sets no fsGroup: user %d cannot read it",
					d.Name, v.Name, mode, *sc.RunAsUser)
			}
		}
	}
}

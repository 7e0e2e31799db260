package operator_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestDeployManifestsAreAccepted builds deploy/ with kustomize and sends
// every object to the API server as a server-side dry run: what
// `kubectl apply -k deploy/` would install must pass the API server's
// validation.
func TestDeployManifestsAreAccepted(t *testing.T) {
	kubectl := filepath.Join(assetsDir, "kubectl")
	out, err := exec.Command(kubectl, "kustomize", filepath.Join(repoRoot, "deploy")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize deploy: %v", err)
	}
	kinds := map[string]int{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		kinds[u.GetKind()]++
		if u.GetLabels()["app.kubernetes.io/part-of"] != "gefyra" {
			t.Errorf("%s %s lacks the part-of label", u.GetKind(), u.GetName())
		}
		err := k8s.Create(context.Background(), &u, client.DryRunAll)
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Errorf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	for kind, want := range map[string]int{"CustomResourceDefinition": 3, "Deployment": 2, "Service": 3, "NetworkPolicy": 5,
		"ValidatingAdmissionPolicy": 1, "ClusterRole": 2, "Namespace": 1} {
		if kinds[kind] != want {
			t.Errorf("%d %s objects, want %d", kinds[kind], kind, want)
		}
	}
	if !strings.Contains(string(out), "imagePullPolicy: IfNotPresent") || strings.Contains(string(out), ":latest") {
		t.Error("images must be pinned and pulled only if not present")
	}
}

package install

import (
	"strings"
	"testing"
	"testing/fstest"

	"gefyra.dev/gefyra/deploy"
)

// The embedded add-on renders: every resource kustomization.yaml names is
// embedded, in kustomize's order, labelled.
func TestRenderEmbedded(t *testing.T) {
	objs, err := Render(deploy.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
		if o.GetLabels()["app.kubernetes.io/part-of"] != "gefyra" {
			t.Errorf("%s %s lacks the kustomization's label", o.GetKind(), o.GetName())
		}
	}
	for kind, min := range map[string]int{"Namespace": 1, "CustomResourceDefinition": 3, "Deployment": 2, "Service": 2,
		"ClusterRole": 1, "ValidatingAdmissionPolicy": 1, "NetworkPolicy": 1} {
		if kinds[kind] < min {
			t.Errorf("%d %s objects, want at least %d (all: %v)", kinds[kind], kind, min, kinds)
		}
	}
	if objs[0].GetKind() != "Namespace" || objs[0].GetName() != "gefyra" {
		t.Errorf("first object %s %s, want the namespace", objs[0].GetKind(), objs[0].GetName())
	}
	found := false
	for _, o := range objs {
		if o.GetKind() == "Service" && o.GetName() == "gefyra-stowaway-wireguard" {
			found = true
		}
	}
	if !found {
		t.Error("the stowaway's UDP Service is not in the add-on")
	}
}

func TestRenderRefusesWhatItCannotDo(t *testing.T) {
	ns := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"
	tests := []struct {
		name string
		fs   fstest.MapFS
		want string
	}{
		{name: "patches", fs: fstest.MapFS{
			"kustomization.yaml": {Data: []byte("kind: Kustomization\nresources: [ns.yaml]\npatches: [{path: p.yaml}]\n")},
			"ns.yaml":            {Data: []byte(ns)}}, want: `unknown field "patches"`},
		{name: "label selectors", fs: fstest.MapFS{
			"kustomization.yaml": {Data: []byte("kind: Kustomization\nresources: [ns.yaml]\nlabels: [{pairs: {a: b}, includeSelectors: true}]\n")},
			"ns.yaml":            {Data: []byte(ns)}}, want: "not supported"},
		{name: "missing resource", fs: fstest.MapFS{
			"kustomization.yaml": {Data: []byte("kind: Kustomization\nresources: [gone.yaml]\n")}}, want: "resource gone.yaml"},
		{name: "component", fs: fstest.MapFS{
			"kustomization.yaml": {Data: []byte("kind: Component\nresources: []\n")}}, want: `kind "Component"`},
		{name: "object without name", fs: fstest.MapFS{
			"kustomization.yaml": {Data: []byte("kind: Kustomization\nresources: [ns.yaml]\n")},
			"ns.yaml":            {Data: []byte("apiVersion: v1\nkind: Namespace\n")}}, want: "without kind or name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(tt.fs, ".")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Render: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestRenderNested(t *testing.T) {
	fs := fstest.MapFS{
		"kustomization.yaml":     {Data: []byte("kind: Kustomization\nresources: [ns.yaml, sub]\nlabels: [{pairs: {team: blue}}]\n")},
		"ns.yaml":                {Data: []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n")},
		"sub/kustomization.yaml": {Data: []byte("kind: Kustomization\nresources: [cm.yaml]\n")},
		"sub/cm.yaml":            {Data: []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {keep: me}\n")},
	}
	objs, err := Render(fs, ".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetName())
		if o.GetLabels()["team"] != "blue" {
			t.Errorf("%s lacks the label", o.GetName())
		}
	}
	if strings.Join(names, ",") != "a,b,c" || objs[2].GetLabels()["keep"] != "me" {
		t.Fatalf("objects %v (labels of c: %v), want a,b,c with c's own label kept", names, objs[2].GetLabels())
	}
}

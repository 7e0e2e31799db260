// Package install applies gefyra's cluster add-on for `gefyra up
// --install`: the kustomization embedded from deploy/ is rendered here (the
// small part of kustomize it uses: resources and labels; anything else is
// an error, so the two cannot drift apart silently) and applied with
// server-side apply, CRDs first.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// FieldManager owns the fields the CLI applies.
const FieldManager = "gefyra"

// kustomization is the part of kustomize's Kustomization the add-on uses.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
		IncludeTemplates bool              `json:"includeTemplates"`
	} `json:"labels"`
}

// Render returns the objects of the kustomization in dir of fsys, in the
// order kustomize lists them.
func Render(fsys fs.FS, dir string) ([]*unstructured.Unstructured, error) {
	file := path.Join(dir, "kustomization.yaml")
	b, err := fs.ReadFile(fsys, file)
	if err != nil {
		return nil, err
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		return nil, fmt.Errorf("%s: %w (the CLI renders only resources and labels)", file, err)
	}
	if k.Kind != "Kustomization" {
		return nil, fmt.Errorf("%s: kind %q, want Kustomization", file, k.Kind)
	}
	var out []*unstructured.Unstructured
	for _, r := range k.Resources {
		p := path.Join(dir, r)
		fi, err := fs.Stat(fsys, p)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %s: %w", file, r, err)
		}
		var objs []*unstructured.Unstructured
		if fi.IsDir() {
			objs, err = Render(fsys, p)
		} else {
			objs, err = decodeFile(fsys, p)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	for _, l := range k.Labels {
		if l.IncludeSelectors || l.IncludeTemplates {
			return nil, fmt.Errorf("%s: labels with includeSelectors or includeTemplates are not supported by the CLI", file)
		}
		for _, o := range out {
			labels := o.GetLabels()
			if labels == nil {
				labels = map[string]string{}
			}
			for k, v := range l.Pairs {
				labels[k] = v
			}
			o.SetLabels(labels)
		}
	}
	return out, nil
}

func decodeFile(fsys fs.FS, p string) ([]*unstructured.Unstructured, error) {
	b, err := fs.ReadFile(fsys, p)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("%s: an object without kind or name", p)
		}
		out = append(out, u)
	}
}

// Apply applies objs with server-side apply: namespaces and CRDs first
// (waiting until the CRDs are established), then the rest in order.
func Apply(ctx context.Context, cfg *rest.Config, objs []*unstructured.Unstructured, progress func(string)) error {
	if progress == nil {
		progress = func(string) {}
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	var first, crds, rest []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GroupVersionKind().GroupKind() {
		case schema.GroupKind{Kind: "Namespace"}:
			first = append(first, o)
		case schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}:
			crds = append(crds, o)
		default:
			rest = append(rest, o)
		}
	}
	apply := func(o *unstructured.Unstructured) error {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := o.GetNamespace()
			if ns == "" {
				ns = "default"
			}
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
			return fmt.Errorf("applying %s %s: %w", gvk.Kind, o.GetName(), err)
		}
		return nil
	}
	for _, o := range append(first, crds...) {
		if err := apply(o); err != nil {
			return err
		}
	}
	if len(crds) > 0 {
		progress(fmt.Sprintf("Waiting for %d CRDs to be established", len(crds)))
		crdRes := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
		for _, c := range crds {
			if err := waitEstablished(ctx, dyn.Resource(crdRes), c.GetName()); err != nil {
				return err
			}
		}
		mapper.Reset()
	}
	for _, o := range rest {
		if err := apply(o); err != nil {
			return err
		}
	}
	return nil
}

func waitEstablished(ctx context.Context, ri dynamic.ResourceInterface, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		u, err := ri.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s was not established: %w", name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

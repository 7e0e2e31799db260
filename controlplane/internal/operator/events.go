package operator

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
)

// CacheOptions limit what the operator caches: its own namespace's clients,
// Roles and RoleBindings, and no managed fields.
func CacheOptions(namespace string) cache.Options {
	own := map[string]cache.Config{namespace: {}}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&gefyrav1.GefyraClient{}: {Namespaces: own},
			&rbacv1.Role{}:           {Namespaces: own},
			&rbacv1.RoleBinding{}:    {Namespaces: own},
		},
	}
}

// Changes calls notify on every change that can alter the model: clients,
// mounts, bridges and Pods that run carrier or belong to a fallback clone.
// It runs on every replica, leader or not.
type Changes struct {
	Cache  cache.Cache
	Notify func()
}

// NeedLeaderElection is false: every replica serves the model.
func (c *Changes) NeedLeaderElection() bool { return false }

// Start registers the event handlers and returns when ctx is done.
func (c *Changes) Start(ctx context.Context) error {
	all := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.Notify() },
		UpdateFunc: func(any, any) { c.Notify() },
		DeleteFunc: func(any) { c.Notify() },
	}
	for _, obj := range []client.Object{&gefyrav1.GefyraClient{}, &gefyrav1.GefyraMount{}, &gefyrav1.GefyraBridge{}} {
		inf, err := c.Cache.GetInformer(ctx, obj)
		if err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(all); err != nil {
			return err
		}
	}
	pods, err := c.Cache.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return err
	}
	relevant := func(o any) bool {
		if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		p, ok := o.(*corev1.Pod)
		if !ok {
			return false
		}
		_, carrier := p.Labels[LabelCarrier]
		_, fallback := p.Labels[LabelFallback]
		return carrier || fallback
	}
	if _, err := pods.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if relevant(o) {
				c.Notify()
			}
		},
		UpdateFunc: func(old, o any) {
			if relevant(old) || relevant(o) {
				c.Notify()
			}
		},
		DeleteFunc: func(o any) {
			if relevant(o) {
				c.Notify()
			}
		},
	}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// Package operator is the Kubernetes half of the control plane: reconcilers
// for GefyraClient (tunnel address, lease, the developer's own access),
// GefyraBridge (validation, its mount, TTL) and GefyraMount (carrier swapped
// into the workload's Pods, the fallback clone, restoring everything when it
// goes), and the model built from all of them for the xDS server.
package operator

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	gefyrav1 "gefyra.dev/gefyra/controlplane/api/v1alpha1"
	"gefyra.dev/gefyra/controlplane/internal/ipam"
	"gefyra.dev/gefyra/internal/bridge"
)

// Labels and annotations the operator puts on the objects it changes.
const (
	// LabelCarrier marks a Pod with carrier in at least one container.
	LabelCarrier = "gefyra.dev/carrier"
	// LabelFallback marks a fallback clone and its Pods; the value is the
	// mount's UID.
	LabelFallback = "gefyra.dev/fallback"
	// AnnotationOriginalImage + container name holds the image to restore.
	AnnotationOriginalImage = "original-image.gefyra.dev/"
	// AnnotationMount + container name holds the mount's name.
	AnnotationMount = "mount.gefyra.dev/"
	// AnnotationManagedBy on a mount says bridges created it, so it goes when
	// the last of them does.
	AnnotationManagedBy = "gefyra.dev/managed-by"
	// ManagedByBridge is AnnotationManagedBy's value.
	ManagedByBridge = "gefyrabridge"
	// AnnotationFallbackOf on a clone names what it is a clone of.
	AnnotationFallbackOf = "gefyra.dev/fallback-of"
)

// Config configures the operator.
type Config struct {
	// Namespace holds GefyraClients, the address ConfigMap, stowaway's key
	// Secret and the leader election lease.
	Namespace string
	// CarrierImage replaces the mounted container's image.
	CarrierImage string
	// DefaultLease applies to clients that set none.
	DefaultLease time.Duration
	// TunnelCIDR is the tunnel network; its first address is stowaway's.
	TunnelCIDR netip.Prefix
	// StowawayEndpoint is announced to clients (host:port of the UDP port).
	StowawayEndpoint string
	// StowawaySecret holds stowaway's WireGuard private key (key "privateKey");
	// the operator creates it if it is missing.
	StowawaySecret string
	// AddressConfigMap holds the address allocations.
	AddressConfigMap string
	// MaxConcurrentReconciles per controller (default 2).
	MaxConcurrentReconciles int
	Log                     *slog.Logger
	Registry                prometheus.Registerer
}

func (c *Config) defaults() error {
	if c.Namespace == "" {
		c.Namespace = bridge.ClientNamespace
	}
	if c.CarrierImage == "" {
		return errors.New("operator: the carrier image is not set")
	}
	if c.DefaultLease <= 0 {
		c.DefaultLease = 60 * time.Second
	}
	if !c.TunnelCIDR.IsValid() {
		c.TunnelCIDR = netip.MustParsePrefix(DefaultTunnelCIDR)
	}
	if c.StowawaySecret == "" {
		c.StowawaySecret = "gefyra-stowaway"
	}
	if c.AddressConfigMap == "" {
		c.AddressConfigMap = "gefyra-addresses"
	}
	if c.MaxConcurrentReconciles <= 0 {
		c.MaxConcurrentReconciles = 2
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return nil
}

// DefaultTunnelCIDR is the tunnel network unless configured: a range the
// test world's node, Pod and Service networks do not use, that matches
// stowaway's default address 10.122.0.1, and that exists
// only inside the userspace tunnel stacks.
const DefaultTunnelCIDR = "10.122.0.0/24"

// Scheme returns a scheme with the Kubernetes types and gefyra's.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := gefyrav1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Logr adapts a slog logger for controller-runtime.
func Logr(l *slog.Logger) logr.Logger { return logr.FromSlogHandler(l.Handler()) }

// Operator holds the reconcilers' shared state.
type Operator struct {
	cfg     Config
	client  client.Client
	api     client.Reader // uncached reads
	ipam    *ipam.Store
	pool    ipam.Pool
	metrics *Metrics
	log     *slog.Logger
}

// Metrics count the reconciles.
type Metrics struct {
	Reconciles *prometheus.CounterVec // controller, result
	Errors     *prometheus.CounterVec // controller
	Duration   *prometheus.HistogramVec
	Restores   prometheus.Counter
	Expired    *prometheus.CounterVec // what: lease, ttl
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_controlplane_reconciles_total",
			Help: "Reconciles by controller and result (success, requeue, error).",
		}, []string{"controller", "result"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_controlplane_reconcile_errors_total",
			Help: "Reconciles that failed, by controller.",
		}, []string{"controller"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gefyra_controlplane_reconcile_duration_seconds",
			Help:    "Time spent in one reconcile, by controller.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"controller"}),
		Restores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gefyra_controlplane_pod_restores_total",
			Help: "Pods whose original image was put back.",
		}),
		Expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gefyra_controlplane_expirations_total",
			Help: "Bridges deleted because a client's lease lapsed (lease) or their TTL passed (ttl).",
		}, []string{"what"}),
	}
	reg.MustRegister(m.Reconciles, m.Errors, m.Duration, m.Restores, m.Expired)
	return m
}

// Field indexes on GefyraBridge.
const (
	indexBridgeClient = "spec.client"
	indexBridgeMount  = "mount"
)

// Setup registers the reconcilers and indexes with mgr.
func Setup(ctx context.Context, mgr manager.Manager, cfg Config) (*Operator, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	pool, err := ipam.NewPool(cfg.TunnelCIDR)
	if err != nil {
		return nil, err
	}
	o := &Operator{
		cfg:     cfg,
		client:  mgr.GetClient(),
		api:     mgr.GetAPIReader(),
		pool:    pool,
		metrics: newMetrics(cfg.Registry),
		log:     cfg.Log,
	}
	o.ipam = &ipam.Store{Client: &uncached{Client: mgr.GetClient(), api: mgr.GetAPIReader()}, Namespace: cfg.Namespace, Name: cfg.AddressConfigMap, Pool: pool}

	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &gefyrav1.GefyraBridge{}, indexBridgeClient, func(o client.Object) []string {
		return []string{o.(*gefyrav1.GefyraBridge).Spec.Client}
	}); err != nil {
		return nil, err
	}
	if err := idx.IndexField(ctx, &gefyrav1.GefyraBridge{}, indexBridgeMount, func(o client.Object) []string {
		return []string{gefyrav1.MountName(o.(*gefyrav1.GefyraBridge).Spec.Target)}
	}); err != nil {
		return nil, err
	}

	// Controller names need not be unique per process: the operator's
	// metrics go to its own registry, not controller-runtime's global one,
	// and tests run two control planes in one process.
	skip := true
	opts := controller.Options{MaxConcurrentReconciles: cfg.MaxConcurrentReconciles, SkipNameValidation: &skip}
	if err := ctrl.NewControllerManagedBy(mgr).Named("gefyraclient").WithOptions(opts).
		For(&gefyrav1.GefyraClient{}).
		Owns(&rbacv1.RoleBinding{}).
		Watches(&gefyrav1.GefyraBridge{}, handler.EnqueueRequestsFromMapFunc(o.clientOfBridge)).
		Complete(o.counted("gefyraclient", o.reconcileClient)); err != nil {
		return nil, err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("gefyrabridge").WithOptions(opts).
		For(&gefyrav1.GefyraBridge{}).
		Watches(&gefyrav1.GefyraMount{}, handler.EnqueueRequestsFromMapFunc(o.bridgesOfMount)).
		Watches(&gefyrav1.GefyraClient{}, handler.EnqueueRequestsFromMapFunc(o.bridgesOfClient)).
		Complete(o.counted("gefyrabridge", o.reconcileBridge)); err != nil {
		return nil, err
	}
	if err := ctrl.NewControllerManagedBy(mgr).Named("gefyramount").WithOptions(opts).
		For(&gefyrav1.GefyraMount{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(o.mountsOfPod)).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(o.mountsOfWorkload(gefyrav1.KindDeployment))).
		Watches(&appsv1.StatefulSet{}, handler.EnqueueRequestsFromMapFunc(o.mountsOfWorkload(gefyrav1.KindStatefulSet))).
		Watches(&appsv1.DaemonSet{}, handler.EnqueueRequestsFromMapFunc(o.mountsOfWorkload(gefyrav1.KindDaemonSet))).
		Watches(&gefyrav1.GefyraBridge{}, handler.EnqueueRequestsFromMapFunc(o.mountOfBridge)).
		Complete(o.counted("gefyramount", o.reconcileMount)); err != nil {
		return nil, err
	}
	// Leader only (a RunnableFunc needs the lease): one writer.
	if err := mgr.Add(manager.RunnableFunc(o.ensureStowawayKey)); err != nil {
		return nil, err
	}
	return o, nil
}

// counted wraps a reconcile function with metrics and error logging.
func (o *Operator) counted(name string, f func(context.Context, reconcile.Request) (reconcile.Result, error)) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		start := time.Now()
		res, err := f(ctx, req)
		o.metrics.Duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		result := "success"
		switch {
		case err != nil:
			result = "error"
			o.metrics.Errors.WithLabelValues(name).Inc()
			o.log.Warn("reconcile failed; retrying", "controller", name, "object", req.String(), "err", err)
		case res.RequeueAfter > 0:
			result = "requeue"
		}
		o.metrics.Reconciles.WithLabelValues(name, result).Inc()
		return res, err
	})
}

// uncached reads through the API server, writes through the client: the
// address store must never decide on a stale cache.
type uncached struct {
	client.Client
	api client.Reader
}

func (u *uncached) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return u.api.Get(ctx, key, obj, opts...)
}

func (u *uncached) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return u.api.List(ctx, list, opts...)
}

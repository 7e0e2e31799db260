// Package v1alpha1 holds gefyra's custom resources, group gefyra.dev, version
// v1alpha1: GefyraClient (one per developer), GefyraMount (carrier swapped
// into a workload's container) and GefyraBridge (traffic of a mount carried to
// a developer). The CRDs in deploy/crds are generated from these types by
// controlplane/generate.sh.
//
// +kubebuilder:object:generate=true
// +groupName=gefyra.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of these resources.
	GroupVersion = schema.GroupVersion{Group: "gefyra.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Condition types and reasons shared by the resources.
const (
	// ConditionReady is the summary: the resource does what it says.
	ConditionReady = "Ready"
	// ConditionAccepted says the spec is valid and its references resolve.
	ConditionAccepted = "Accepted"
	// ConditionMountReady on a bridge says its mount has carrier in every Pod.
	ConditionMountReady = "MountReady"
	// ConditionDataPlaneReady on a bridge says carrier acknowledged the
	// configuration and the client's tunnel has a handshake. The xDS server
	// sets it; the operator only reads it.
	ConditionDataPlaneReady = "DataPlaneReady"
	// ConditionFallbackReady on a mount says the fallback clone has ready Pods.
	ConditionFallbackReady = "FallbackReady"
	// ConditionLeaseValid on a client says its heartbeat is recent enough.
	ConditionLeaseValid = "LeaseValid"
	// ConditionAddressAllocated on a client says it has a tunnel address.
	ConditionAddressAllocated = "AddressAllocated"
)

// Finalizer is set on every gefyra resource the operator must clean up after.
const Finalizer = "gefyra.dev/cleanup"

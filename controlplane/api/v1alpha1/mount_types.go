package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TargetKind is the kind of workload a mount or bridge targets.
// +kubebuilder:validation:Enum=Deployment;StatefulSet;DaemonSet;Pod
type TargetKind string

// The workload kinds gefyra can mount.
const (
	KindDeployment  TargetKind = "Deployment"
	KindStatefulSet TargetKind = "StatefulSet"
	KindDaemonSet   TargetKind = "DaemonSet"
	KindPod         TargetKind = "Pod"
)

// Target names one container of a workload in the resource's namespace.
type Target struct {
	// Kind of the workload.
	Kind TargetKind `json:"kind"`
	// Name of the workload.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// Container whose image carrier replaces.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Container string `json:"container"`
}

// GefyraMountSpec says which container gets carrier.
type GefyraMountSpec struct {
	// Target is the workload container. It cannot change: delete the mount
	// and create another.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="target is immutable"
	Target Target `json:"target"`
}

// MountedPod is a Pod whose container runs carrier.
type MountedPod struct {
	Name string `json:"name"`
	// OriginalImage is the image restored when the mount goes away.
	OriginalImage string `json:"originalImage"`
	// +optional
	IP string `json:"ip,omitempty"`
}

// Fallback is the clone of the original workload that takes traffic no
// bridge claims.
type Fallback struct {
	Kind TargetKind `json:"kind"`
	Name string     `json:"name"`
	// Endpoints are the IPs of the clone's ready Pods.
	// +optional
	// +listType=atomic
	Endpoints []string `json:"endpoints,omitempty"`
}

// GefyraMountStatus reports what the operator did to the workload.
type GefyraMountStatus struct {
	// Pods carry carrier in place of the container's image.
	// +optional
	// +listType=atomic
	Pods []MountedPod `json:"pods,omitempty"`
	// Ports are the ports the container declares; bridges may carry those.
	// +optional
	// +listType=atomic
	Ports []corev1.ContainerPort `json:"ports,omitempty"`
	// Fallback is the clone of the original workload.
	// +optional
	Fallback *Fallback `json:"fallback,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// GefyraMount swaps carrier into one container of every Pod of a workload and
// keeps a clone of the original workload as the fallback. The operator
// creates one for the first bridge that needs it and deletes it, restoring
// the workload, when the last such bridge is gone (unless it was created by
// hand, without the annotation gefyra.dev/managed-by: gefyrabridge).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=gmount,categories=gefyra
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.target.kind`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.target.name`
// +kubebuilder:printcolumn:name="Container",type=string,JSONPath=`.spec.target.container`
// +kubebuilder:printcolumn:name="Fallback",type=string,JSONPath=`.status.fallback.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type GefyraMount struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   GefyraMountSpec   `json:"spec"`
	Status GefyraMountStatus `json:"status,omitempty"`
}

// GefyraMountList is a list of GefyraMount.
//
// +kubebuilder:object:root=true
type GefyraMountList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GefyraMount `json:"items"`
}

func init() {
	SchemeBuilder.Register(&GefyraMount{}, &GefyraMountList{})
}

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GefyraClientSpec is what a developer's CLI declares.
type GefyraClientSpec struct {
	// User is the Kubernetes user name that owns this client. The cluster's
	// admission policy only lets that user create, change or delete it, and
	// the client's name must be the user name made into an object name
	// (lowercase, with '@', ':', '_', '+', '/' and ' ' turned into '-').
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="user is immutable"
	User string `json:"user"`

	// PublicKey is the developer's WireGuard public key, base64 of 32 bytes.
	// The private key stays on the developer's machine.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=$`
	PublicKey string `json:"publicKey"`

	// LeaseDuration is how long the client stays valid after its last
	// heartbeat (default: the operator's, 60s). When it lapses the operator
	// deletes the client's bridges and restores the workloads.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s') && duration(self) <= duration('24h')",message="leaseDuration must be between 10s and 24h"
	LeaseDuration *metav1.Duration `json:"leaseDuration,omitempty"`
}

// StowawayEndpoint tells a client how to reach the cluster's end of the tunnel.
type StowawayEndpoint struct {
	// Endpoint is host:port of stowaway's WireGuard UDP port as the operator
	// is configured to announce it; a CLI may know a better route.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// PublicKey is stowaway's WireGuard public key.
	PublicKey string `json:"publicKey,omitempty"`
	// Address is stowaway's own address inside the tunnel.
	Address string `json:"address,omitempty"`
	// CIDR is the tunnel's network.
	CIDR string `json:"cidr,omitempty"`
}

// ClientBridgeStatus summarises one of the client's bridges, so the developer
// sees them without rights to read bridges at large.
type ClientBridgeStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Ready     bool   `json:"ready"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// GefyraClientStatus is what the operator (and, for LastHeartbeat, the CLI)
// reports.
type GefyraClientStatus struct {
	// Address is the client's address inside the tunnel, unique among clients.
	// +optional
	Address string `json:"address,omitempty"`
	// LastHeartbeat is renewed by the CLI while it runs.
	// +optional
	LastHeartbeat *metav1.Time `json:"lastHeartbeat,omitempty"`
	// Stowaway is the cluster's end of the tunnel.
	// +optional
	Stowaway *StowawayEndpoint `json:"stowaway,omitempty"`
	// Bridges are the client's bridges and their state.
	// +optional
	// +listType=atomic
	Bridges []ClientBridgeStatus `json:"bridges,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// GefyraClient is one developer's identity in the tunnel.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=gclient,categories=gefyra
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.user`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.address`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Heartbeat",type=date,JSONPath=`.status.lastHeartbeat`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type GefyraClient struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   GefyraClientSpec   `json:"spec"`
	Status GefyraClientStatus `json:"status,omitempty"`
}

// GefyraClientList is a list of GefyraClient.
//
// +kubebuilder:object:root=true
type GefyraClientList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GefyraClient `json:"items"`
}

func init() {
	SchemeBuilder.Register(&GefyraClient{}, &GefyraClientList{})
}

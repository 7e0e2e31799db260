package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PortMapping carries the target container's port Remote to port Local on
// the developer's side (the CLI's --port remote:local[/tcp]).
type PortMapping struct {
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Remote int32 `json:"remote"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Local int32 `json:"local"`
	// Protocol is how the port's traffic is carried: HTTP routes each
	// request (HTTP/1.1, h2c, WebSocket) by the rules; TCP carries whole
	// connections byte for byte (a database, any protocol that is not
	// HTTP), which no rule can select.
	// +kubebuilder:default=HTTP
	// +optional
	Protocol PortProtocol `json:"protocol,omitempty"`
}

// PortProtocol is how a bridged port's traffic is carried.
// +kubebuilder:validation:Enum=HTTP;TCP
type PortProtocol string

// The port protocols.
const (
	ProtocolHTTP PortProtocol = "HTTP"
	ProtocolTCP  PortProtocol = "TCP"
)

// MatchType says how a value is compared.
// +kubebuilder:validation:Enum=Exact;Prefix;RegularExpression
type MatchType string

// HeaderMatch matches a request header; names compare without regard to case.
type HeaderMatch struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern="^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$"
	Name string `json:"name"`
	// +kubebuilder:default=Exact
	// +optional
	Type MatchType `json:"type,omitempty"`
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// PathMatch matches the request's URL path.
// +kubebuilder:validation:XValidation:rule="self.type == 'RegularExpression' || self.value.startsWith('/')",message="an Exact or Prefix path must start with /"
// +kubebuilder:validation:XValidation:rule="self.type != 'RegularExpression' || size(self.value) > 0",message="a regular expression must not be empty"
type PathMatch struct {
	// +kubebuilder:default=Prefix
	// +optional
	Type MatchType `json:"type,omitempty"`
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// Rule picks requests for the developer: all of its matches must hold.
// +kubebuilder:validation:XValidation:rule="(has(self.headers) && size(self.headers) > 0) || has(self.path)",message="a rule needs at least one header or path match; leave out rules to take all traffic"
type Rule struct {
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Headers []HeaderMatch `json:"headers,omitempty"`
	// +optional
	Path *PathMatch `json:"path,omitempty"`
}

// GefyraBridgeSpec is one developer's claim on a workload's traffic.
// +kubebuilder:validation:XValidation:rule="!has(self.rules) || size(self.rules) == 0 || self.ports.all(p, !has(p.protocol) || p.protocol != 'TCP')",message="a bridge with a TCP port cannot have rules: rules select HTTP requests, a TCP port carries whole connections; bridge the TCP port in a bridge without rules"
type GefyraBridgeSpec struct {
	// Client is the GefyraClient (in namespace gefyra) that receives the traffic.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="client is immutable"
	Client string `json:"client"`

	// Target is the workload container whose traffic is bridged; the
	// operator mounts carrier into it.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="target is immutable"
	Target Target `json:"target"`

	// Ports carries the container's ports to local ports.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=remote
	Ports []PortMapping `json:"ports"`

	// Rules pick the requests for the developer: a request matching any rule
	// is bridged. No rules: all traffic of the ports is bridged. A bridge
	// with a TCP port has no rules.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Rules []Rule `json:"rules,omitempty"`

	// Local names the developer's side (e.g. the local container); the
	// developer's agent interprets it, the cluster does not.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Local string `json:"local,omitempty"`

	// TTL deletes the bridge this long after its creation.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s') && duration(self) <= duration('168h')",message="ttl must be between 10s and 168h"
	TTL *metav1.Duration `json:"ttl,omitempty"`
}

// GefyraBridgeStatus reports the bridge's state.
type GefyraBridgeStatus struct {
	// Mount is the GefyraMount carrying this bridge.
	// +optional
	Mount string `json:"mount,omitempty"`
	// ClientAddress is the client's tunnel address traffic goes to.
	// +optional
	ClientAddress string `json:"clientAddress,omitempty"`
	// ExpiresAt is when the TTL deletes the bridge.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// GefyraBridge carries the traffic of a workload container's ports that
// matches its rules to a developer's machine.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=gbridge,categories=gefyra
// +kubebuilder:printcolumn:name="Client",type=string,JSONPath=`.spec.client`
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.target.kind`,priority=1
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.target.name`
// +kubebuilder:printcolumn:name="Container",type=string,JSONPath=`.spec.target.container`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type GefyraBridge struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   GefyraBridgeSpec   `json:"spec"`
	Status GefyraBridgeStatus `json:"status,omitempty"`
}

// GefyraBridgeList is a list of GefyraBridge.
//
// +kubebuilder:object:root=true
type GefyraBridgeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GefyraBridge `json:"items"`
}

func init() {
	SchemeBuilder.Register(&GefyraBridge{}, &GefyraBridgeList{})
}

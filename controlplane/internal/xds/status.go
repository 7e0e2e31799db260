package xds

import "time"

// NodeStatus is what a replica knows of a node's configuration.
type NodeStatus struct {
	// Version is the version the node last acknowledged, and Bridges the
	// bridges in it with their fingerprints (translate.BridgeFingerprint).
	Version string            `json:"version,omitempty"`
	Bridges map[string]string `json:"bridges,omitempty"`
	// Rejected is the error the node rejected RejectedVersion with, as
	// long as it has not acknowledged another version since;
	// RejectedBridges were in that version.
	Rejected        string   `json:"rejected,omitempty"`
	RejectedVersion string   `json:"rejectedVersion,omitempty"`
	RejectedBridges []string `json:"rejectedBridges,omitempty"`
	// Connected says the node has a stream to the replica.
	Connected bool `json:"connected,omitempty"`
	// Updated is when the replica learnt this; across replicas the newest
	// wins.
	Updated time.Time `json:"updated"`
}

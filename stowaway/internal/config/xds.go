package config

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"

	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TypeURL is the xDS resource type that carries stowaway's config: Envoy's
// Runtime (RTDS), a named google.protobuf.Struct. It is a well-known type
// that go-control-plane's snapshot cache serves as it is, so no protobuf of
// our own is needed.
//
// Each Runtime resource's layer is a Config fragment in its JSON form
// (peers, bridges, credentialKeys). Stowaway merges every resource it gets,
// so the control plane can send one per client (its peer and its bridges)
// and one with the credential keys; a peer or bridge named twice across
// resources is an error, and the whole update is refused.
const TypeURL = "type.googleapis.com/envoy.service.runtime.v3.Runtime"

// FromResources merges the Runtime resources of one xDS update into a
// Config. Resources are taken in name order, so the result does not depend
// on the order they arrived in.
func FromResources(msgs []proto.Message) (Config, error) {
	rts := make([]*runtimev3.Runtime, 0, len(msgs))
	for _, m := range msgs {
		rt, ok := m.(*runtimev3.Runtime)
		if !ok {
			return Config{}, fmt.Errorf("config: xDS resource of type %T, want Runtime", m)
		}
		rts = append(rts, rt)
	}
	slices.SortFunc(rts, func(a, b *runtimev3.Runtime) int { return cmp.Compare(a.GetName(), b.GetName()) })
	var out Config
	for _, rt := range rts {
		b, err := protojson.Marshal(rt.GetLayer())
		if err != nil {
			return Config{}, fmt.Errorf("config: resource %q: %w", rt.GetName(), err)
		}
		c, err := Parse(b)
		if err != nil {
			return Config{}, fmt.Errorf("resource %q: %w", rt.GetName(), err)
		}
		out.Peers = append(out.Peers, c.Peers...)
		out.Bridges = append(out.Bridges, c.Bridges...)
		out.CredentialKeys = append(out.CredentialKeys, c.CredentialKeys...)
	}
	return out, nil
}

// ToResource is the Runtime resource named name that carries c, as the
// control plane builds it.
func ToResource(name string, c Config) (*runtimev3.Runtime, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var layer structpb.Struct
	if err := protojson.Unmarshal(b, &layer); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &runtimev3.Runtime{Name: name, Layer: &layer}, nil
}

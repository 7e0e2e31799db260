package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/controlplane/internal/translate"
)

// newSnapshot is the cache snapshot of n, each type with a version of its
// own, so a change reaches a node only as the types it changed: a rule
// change re-sends a carrier's routes, not its clusters, endpoints and
// listeners. The last type the node subscribes to (routes for carrier,
// runtimes for stowaway: go-control-plane answers ADS watches in type
// order, so it is sent last) carries the node's version, which changes
// with anything about the node, its bridges' fingerprints included; the
// other types carry a digest of their resources. So every new version of
// a node is sent as at least one response, and a node that acknowledged
// each of its types at the version the snapshot has for it acknowledged
// the node's version. versions maps type URL to version.
func newSnapshot(n *translate.Node) (cs *cache.Snapshot, versions map[string]string, err error) {
	subscribed := translate.Types(n.Kind)
	anchor := subscribed[len(subscribed)-1]
	cs = &cache.Snapshot{}
	versions = make(map[string]string, len(subscribed))
	for typ, items := range n.Resources() {
		i := cache.GetResponseType(typ)
		if i == types.UnknownType {
			return nil, nil, fmt.Errorf("unknown resource type %s", typ)
		}
		v := n.Version
		if typ != anchor {
			if v, err = digest(items); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", typ, err)
			}
		}
		cs.Resources[i] = cache.NewResources(v, items)
		versions[typ] = v
	}
	if err := cs.Consistent(); err != nil {
		return nil, nil, err
	}
	return cs, versions, nil
}

// digest is a digest of resources, marshalled deterministically.
func digest(resources []types.Resource) (string, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	for _, r := range resources {
		var err error
		if buf, err = opts.MarshalAppend(buf[:0], r); err != nil {
			return "", err
		}
		h.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(buf))))
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), nil
}

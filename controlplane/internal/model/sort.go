package model

import (
	"cmp"
	"net/netip"
	"slices"
)

// Sort puts every slice of m in a stable order: mounts and bridges by
// namespace/name, clients by name, Pods by name, fallback IPs and ports by
// value.
func (m *Model) Sort() {
	slices.SortFunc(m.Mounts, func(a, b Mount) int { return cmp.Compare(a.Key(), b.Key()) })
	for i := range m.Mounts {
		mt := &m.Mounts[i]
		slices.SortFunc(mt.Pods, func(a, b Pod) int { return cmp.Compare(a.Name, b.Name) })
		slices.SortFunc(mt.Ports, func(a, b Port) int {
			return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol))
		})
		slices.SortFunc(mt.Fallback, func(a, b netip.Addr) int { return a.Compare(b) })
	}
	slices.SortFunc(m.Bridges, func(a, b Bridge) int { return cmp.Compare(a.Key(), b.Key()) })
	slices.SortFunc(m.Clients, func(a, b Client) int { return cmp.Compare(a.Name, b.Name) })
}

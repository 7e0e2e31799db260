package state

import (
	"fmt"
	"strconv"

	"gefyra.dev/gefyra/internal/bridge"
)

// AssignTunnelPorts picks the tunnel port of each of a new bridge's port
// mappings to the local container named container. A tunnel port is the
// local port itself unless another of the client's bridges already uses it
// for a different container or local port; then the next free port above
// it is taken (wrapping around to 1024), so every tunnel port names one
// target.
func AssignTunnelPorts(existing []Bridge, container string, ports []bridge.PortMapping) ([]Port, error) {
	used := map[uint16]string{}
	for _, b := range existing {
		for _, p := range b.Ports {
			used[p.Tunnel] = b.Container + ":" + strconv.Itoa(int(p.Local))
		}
	}
	out := make([]Port, 0, len(ports))
	for _, m := range ports {
		want := container + ":" + strconv.Itoa(int(m.Local))
		tunnel, ok := freePort(used, m.Local, want)
		if !ok {
			return nil, fmt.Errorf("no free tunnel port for %s: every port is taken by other bridges", want)
		}
		used[tunnel] = want
		out = append(out, Port{Remote: m.Remote, Local: m.Local, Tunnel: tunnel, Protocol: m.Protocol})
	}
	return out, nil
}

// freePort returns from, or the first port after it, that is unused or
// already carries target.
func freePort(used map[uint16]string, from uint16, target string) (uint16, bool) {
	p := from
	for range 65536 {
		if t, ok := used[p]; !ok || t == target {
			if p != 0 {
				return p, true
			}
		}
		if p == 65535 {
			p = 1024
		} else {
			p++
		}
	}
	return 0, false
}

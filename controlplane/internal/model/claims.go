package model

import (
	"fmt"
	"slices"

	"gefyra.dev/gefyra/internal/bridge"
)

// Claims is how the bridges of one mount share its ports. An HTTP port is
// shared: every bridge on it gets the requests its rules select. A TCP port
// carries whole connections, which no rule can select, so exactly one
// bridge has it.
type Claims struct {
	// TCP maps each port carried as raw TCP to the bridge that has it.
	TCP map[uint16]*Bridge
	// Refused maps the key of each bridge that cannot be served as it asks
	// to why; such a bridge is left out on every port.
	Refused map[string]string
}

// ClaimPorts decides the ports of bridges, all of one mount, in the order
// given: the first bridge to map a port decides how it is carried, and a
// bridge that would carry a port another way than an earlier one did, or
// take a TCP port an earlier one has, is refused. A bridge with rules and a
// TCP port is refused too (its rules could not apply).
func ClaimPorts(bridges []*Bridge) Claims {
	c := Claims{TCP: map[uint16]*Bridge{}, Refused: map[string]string{}}
	http := map[uint16]*Bridge{} // the first bridge on each HTTP port
	for _, b := range bridges {
		if reason := c.refuse(b, http); reason != "" {
			c.Refused[b.Key()] = reason
			continue
		}
		for _, p := range b.Ports {
			switch {
			case p.IsTCP():
				c.TCP[p.Remote] = b
			case http[p.Remote] == nil:
				http[p.Remote] = b
			}
		}
	}
	return c
}

func (c *Claims) refuse(b *Bridge, http map[uint16]*Bridge) string {
	if len(b.Rules) > 0 {
		if i := slices.IndexFunc(b.Ports, func(p bridge.PortMapping) bool { return p.IsTCP() }); i >= 0 {
			return fmt.Sprintf("port %d is TCP and the bridge has rules: rules select HTTP requests, a TCP port carries whole connections", b.Ports[i].Remote)
		}
	}
	for _, p := range b.Ports {
		if owner := c.TCP[p.Remote]; owner != nil {
			return fmt.Sprintf("port %d is bridged over TCP by %s: a TCP port carries whole connections to one bridge", p.Remote, owner.Key())
		}
		if owner := http[p.Remote]; owner != nil && p.IsTCP() {
			return fmt.Sprintf("port %d is bridged as HTTP by %s: it cannot also carry whole TCP connections", p.Remote, owner.Key())
		}
	}
	return ""
}

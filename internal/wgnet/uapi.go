package wgnet

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// peersConfig validates next and returns the WireGuard configuration
// protocol text that turns the peer set old into next ("" if nothing
// changes).
func peersConfig(old map[Key]Peer, next []Peer) (string, error) {
	seen := make(map[Key]bool, len(next))
	var b strings.Builder
	for i, p := range next {
		if p.PublicKey.IsZero() {
			return "", fmt.Errorf("wgnet: peer %d: public key is required", i)
		}
		if seen[p.PublicKey] {
			return "", fmt.Errorf("wgnet: peer %s listed twice", p.PublicKey)
		}
		seen[p.PublicKey] = true
		for _, pfx := range p.AllowedIPs {
			if !pfx.IsValid() {
				return "", fmt.Errorf("wgnet: peer %s: invalid allowed IP prefix", p.PublicKey)
			}
		}
		if p.Endpoint.IsValid() && p.Endpoint.Port() == 0 {
			return "", fmt.Errorf("wgnet: peer %s: endpoint %s has no port", p.PublicKey, p.Endpoint)
		}
		if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535*time.Second {
			return "", fmt.Errorf("wgnet: peer %s: persistent keepalive %s out of range [0, 65535s]", p.PublicKey, p.PersistentKeepalive)
		}

		if prev, existed := old[p.PublicKey]; existed {
			if !samePeer(prev, p) {
				writePeer(&b, p, &prev)
			}
		} else {
			writePeer(&b, p, nil)
		}
	}
	// Remove in a stable order so the text is deterministic.
	var gone []Key
	for k := range old {
		if !seen[k] {
			gone = append(gone, k)
		}
	}
	slices.SortFunc(gone, func(a, b Key) int { return strings.Compare(a.hex(), b.hex()) })
	for _, k := range gone {
		fmt.Fprintf(&b, "public_key=%s\nremove=true\n", k.hex())
	}
	return b.String(), nil
}

// writePeer writes the configuration of p; prev is its configuration so far
// (nil for a new peer), so that an unchanged endpoint is not reset.
func writePeer(b *strings.Builder, p Peer, prev *Peer) {
	fmt.Fprintf(b, "public_key=%s\n", p.PublicKey.hex())
	if p.Endpoint.IsValid() && (prev == nil || prev.Endpoint != p.Endpoint) {
		fmt.Fprintf(b, "endpoint=%s\n", netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port()))
	}
	fmt.Fprintf(b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepalive/time.Second))
	b.WriteString("replace_allowed_ips=true\n")
	for _, pfx := range p.AllowedIPs {
		fmt.Fprintf(b, "allowed_ip=%s\n", pfx.Masked())
	}
}

func samePeer(a, b Peer) bool {
	return a.PublicKey == b.PublicKey && a.Endpoint == b.Endpoint &&
		a.PersistentKeepalive/time.Second == b.PersistentKeepalive/time.Second &&
		slices.Equal(a.AllowedIPs, b.AllowedIPs)
}

// parseIpcGet reads the listen port and per-peer counters from the output
// of the configuration protocol's "get" operation.
func parseIpcGet(s string) (port int, peers []PeerStats, err error) {
	var cur *PeerStats
	var hsSec, hsNsec int64
	flush := func() {
		if cur == nil {
			return
		}
		if hsSec != 0 || hsNsec != 0 {
			cur.LastHandshake = time.Unix(hsSec, hsNsec)
		}
		peers = append(peers, *cur)
		cur, hsSec, hsNsec = nil, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return 0, nil, fmt.Errorf("wgnet: device state line %q has no '='", line)
		}
		switch key {
		case "listen_port":
			port, err = strconv.Atoi(value)
		case "public_key":
			flush()
			cur = &PeerStats{}
			var b []byte
			b, err = hex.DecodeString(value)
			if err == nil && len(b) != KeyLen {
				err = errors.New("bad key length")
			}
			copy(cur.PublicKey[:], b)
		case "endpoint":
			if cur != nil {
				cur.Endpoint, err = netip.ParseAddrPort(value)
			}
		case "last_handshake_time_sec":
			hsSec, err = strconv.ParseInt(value, 10, 64)
		case "last_handshake_time_nsec":
			hsNsec, err = strconv.ParseInt(value, 10, 64)
		case "rx_bytes":
			if cur != nil {
				cur.RxBytes, err = strconv.ParseUint(value, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.TxBytes, err = strconv.ParseUint(value, 10, 64)
			}
		}
		if err != nil {
			return 0, nil, fmt.Errorf("wgnet: device state %s: %w", key, err)
		}
	}
	flush()
	return port, peers, sc.Err()
}

//go:build !linux

package wgnet

import "golang.zx2c4.com/wireguard/conn"

// newBind is the UDP socket layer a Net uses unless Config.bind replaces
// it: wireguard-go's own, away from Linux.
func newBind() conn.Bind { return conn.NewDefaultBind() }

package main

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"gefyra.dev/gefyra/internal/wgnet"
)

func freeTCP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func freeUDP(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// pair runs a server and a client with the given arguments and returns
// both errors.
func pair(server, client []string) (error, error) {
	done := make(chan error, 1)
	go func() { done <- run(server) }()
	cerr := run(client)
	return <-done, cerr
}

func TestTransfer(t *testing.T) {
	for _, dir := range []string{"S", "R"} {
		t.Run("plain/dir="+dir, func(t *testing.T) {
			addr := freeTCP(t)
			serr, cerr := pair(
				[]string{"-role", "server", "-listen", addr, "-bytes", "3000000", "-timeout", "20s"},
				[]string{"-role", "client", "-connect", addr, "-dir", dir, "-bytes", "3000000", "-timeout", "20s"})
			if serr != nil || cerr != nil {
				t.Fatalf("server: %v, client: %v", serr, cerr)
			}
		})
	}
	t.Run("tunnel", func(t *testing.T) {
		ka, _ := wgnet.GeneratePrivateKey()
		kb, _ := wgnet.GeneratePrivateKey()
		pa, pb := freeUDP(t), freeUDP(t)
		serr, cerr := pair(
			[]string{"-role", "server", "-tunnel", "-listen", ":5001", "-key", kb.String(), "-peer", ka.PublicKey().String(),
				"-peer-endpoint", fmt.Sprintf("127.0.0.1:%d", pa), "-udp-port", fmt.Sprint(pb), "-addr", "10.99.0.2", "-peer-addr", "10.99.0.1",
				"-bytes", "2000000", "-timeout", "20s"},
			[]string{"-role", "client", "-tunnel", "-connect", "10.99.0.2:5001", "-key", ka.String(), "-peer", kb.PublicKey().String(),
				"-peer-endpoint", fmt.Sprintf("127.0.0.1:%d", pb), "-udp-port", fmt.Sprint(pa), "-addr", "10.99.0.1", "-peer-addr", "10.99.0.2",
				"-dir", "S", "-bytes", "2000000", "-timeout", "20s"})
		if serr != nil || cerr != nil {
			t.Fatalf("server: %v, client: %v", serr, cerr)
		}
	})
}

func TestBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no role", args: nil, want: "-role"},
		{name: "bad direction", args: []string{"-role", "client", "-dir", "X"}, want: "-dir"},
		{name: "no bytes", args: []string{"-role", "client", "-bytes", "0"}, want: "-bytes"},
		{name: "bad key", args: []string{"-role", "server", "-tunnel", "-key", "nope"}, want: "-key"},
		{name: "unknown flag", args: []string{"-frobnicate"}, want: "frobnicate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %s", err, tc.want)
			}
		})
	}
}

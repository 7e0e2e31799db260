package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
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
// both results.
func pair(t *testing.T, server, client []string) (srv, cli Result) {
	t.Helper()
	var sout, cout bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(server, &sout) }()
	cerr := run(client, &cout)
	serr := <-done
	if serr != nil || cerr != nil {
		t.Fatalf("server: %v, client: %v", serr, cerr)
	}
	return result(t, "server", sout.String()), result(t, "client", cout.String())
}

// result reads the JSON line that ends out.
func result(t *testing.T, who, out string) Result {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var r Result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("%s output %q: %v", who, out, err)
	}
	return r
}

// check asserts what both results of one transfer of size bytes say.
func check(t *testing.T, srv, cli Result, clientSends bool, size int64) {
	t.Helper()
	if srv.Bytes != size || cli.Bytes != size {
		t.Errorf("bytes: server %d, client %d, want %d", srv.Bytes, cli.Bytes, size)
	}
	if cli.Sender != clientSends || srv.Sender == clientSends {
		t.Errorf("sender: client %v, server %v, want client %v", cli.Sender, srv.Sender, clientSends)
	}
	if !srv.Acked || !cli.Acked {
		t.Errorf("the receiver's acknowledgement was lost (client %+v, server %+v)", cli, srv)
	}
	if srv.Seconds <= 0 || cli.Seconds <= 0 {
		t.Errorf("seconds: server %v, client %v", srv.Seconds, cli.Seconds)
	}
}

func TestTransfer(t *testing.T) {
	for _, dir := range []string{"S", "R"} {
		t.Run("plain/dir="+dir, func(t *testing.T) {
			addr := freeTCP(t)
			srv, cli := pair(t,
				[]string{"-role", "server", "-listen", addr, "-bytes", "3000000", "-timeout", "20s"},
				[]string{"-role", "client", "-connect", addr, "-dir", dir, "-bytes", "3000000", "-timeout", "20s"})
			check(t, srv, cli, dir == "S", 3000000)
		})
	}
}

// TestTunnelAcknowledgement repeats transfers through the tunnel: the
// receiver's acknowledgement must reach the sender every time, also though
// the receiver's process (and its network stack) ends right afterwards.
func TestTunnelAcknowledgement(t *testing.T) {
	for _, dir := range []string{"S", "R"} {
		t.Run("dir="+dir, func(t *testing.T) {
			for i := 0; i < 4; i++ {
				ka, _ := wgnet.GeneratePrivateKey()
				kb, _ := wgnet.GeneratePrivateKey()
				pa, pb := freeUDP(t), freeUDP(t)
				srv, cli := pair(t,
					[]string{"-role", "server", "-tunnel", "-listen", ":5001", "-key", kb.String(), "-peer", ka.PublicKey().String(),
						"-peer-endpoint", fmt.Sprintf("127.0.0.1:%d", pa), "-udp-port", fmt.Sprint(pb), "-addr", "10.99.0.2", "-peer-addr", "10.99.0.1",
						"-bytes", "2000000", "-timeout", "30s"},
					[]string{"-role", "client", "-tunnel", "-connect", "10.99.0.2:5001", "-key", ka.String(), "-peer", kb.PublicKey().String(),
						"-peer-endpoint", fmt.Sprintf("127.0.0.1:%d", pb), "-udp-port", fmt.Sprint(pa), "-addr", "10.99.0.1", "-peer-addr", "10.99.0.2",
						"-dir", dir, "-bytes", "2000000", "-timeout", "30s"})
				check(t, srv, cli, dir == "S", 2000000)
			}
		})
	}
}

func TestCPUProfile(t *testing.T) {
	addr := freeTCP(t)
	file := filepath.Join(t.TempDir(), "client.cpu.pprof")
	srv, cli := pair(t,
		[]string{"-role", "server", "-listen", addr, "-bytes", "20000000", "-timeout", "20s"},
		[]string{"-role", "client", "-connect", addr, "-dir", "S", "-bytes", "20000000", "-timeout", "20s", "-cpuprofile", file})
	check(t, srv, cli, true, 20000000)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A CPU profile is a gzipped protocol buffer.
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("profile is not gzip: %v", err)
	}
	raw, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("profile: %v", err)
	}
	if len(raw) == 0 {
		t.Fatal("empty profile")
	}
	if !bytes.Contains(raw, []byte("cpu")) || !bytes.Contains(raw, []byte("nanoseconds")) {
		t.Error("profile has no CPU sample type")
	}
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
			err := run(tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %s", err, tc.want)
			}
		})
	}
}

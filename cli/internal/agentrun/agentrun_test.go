package agentrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/cli/internal/agent"
	"gefyra.dev/gefyra/internal/wgnet"
)

func writeConfig(t *testing.T, path string, c agent.Config) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// The agent process serves its status and applies new targets when its
// config file changes; its tunnel comes up with a real WireGuard peer on
// loopback.
func TestRunServesStatusAndReloadsTargets(t *testing.T) {
	swKey, _ := wgnet.GeneratePrivateKey()
	agentKey, _ := wgnet.GeneratePrivateKey()
	sw, err := wgnet.New(wgnet.Config{PrivateKey: swKey, Address: netip.MustParseAddr("10.122.0.1"),
		Peers: []wgnet.Peer{{PublicKey: agentKey.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.122.0.2/32")}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.json")
	cfg := agent.Config{PrivateKey: agentKey, Address: netip.MustParseAddr("10.122.0.2"),
		Stowaway: agent.Stowaway{Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sw.ListenPort())).String(), PublicKey: swKey.PublicKey()},
		Targets:  map[uint16]string{8155: "app:8155"}}
	writeConfig(t, cfgPath, cfg)
	addrFile := filepath.Join(dir, "status")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigFile: cfgPath, StatusAddr: "127.0.0.1:0", StatusAddrFile: addrFile, PollInterval: 20 * time.Millisecond})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var addr string
	waitFor(t, "the status address file", func() error {
		b, err := os.ReadFile(addrFile)
		addr = strings.TrimSpace(string(b))
		if err == nil && addr == "" {
			err = errors.New("empty")
		}
		return err
	})
	waitFor(t, "the tunnel", func() error {
		s, err := FetchStatus(ctx, addr)
		if err == nil && !s.Up {
			err = errors.New("not up")
		}
		return err
	})
	next := map[uint16]string{8155: "app:8155", 8156: "second:8155"}
	cfg.Targets = next
	writeConfig(t, cfgPath, cfg)
	waitFor(t, "the new targets", func() error {
		s, err := FetchStatus(ctx, addr)
		if err == nil && !maps.Equal(s.Targets, next) {
			err = fmt.Errorf("targets %v", s.Targets)
		}
		return err
	})
	// A broken file keeps the targets that work.
	if err := os.WriteFile(cfgPath, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	s, err := FetchStatus(ctx, addr)
	if err != nil || !maps.Equal(s.Targets, next) {
		t.Fatalf("after a broken config: %v %v", s.Targets, err)
	}
}

func TestRunRefuses(t *testing.T) {
	dir := t.TempDir()
	key, _ := wgnet.GeneratePrivateKey()
	good := filepath.Join(dir, "good.json")
	writeConfig(t, good, agent.Config{PrivateKey: key, Address: netip.MustParseAddr("10.122.0.2"),
		Stowaway: agent.Stowaway{Endpoint: "127.0.0.1:9", PublicKey: key.PublicKey()}})
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"address": "10.122.0.2"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{name: "no config", opts: Options{}, want: "--config is required"},
		{name: "missing config", opts: Options{ConfigFile: filepath.Join(dir, "none")}, want: "no such file"},
		{name: "invalid config", opts: Options{ConfigFile: bad}, want: "private key is required"},
		{name: "status on the network", opts: Options{ConfigFile: good, StatusAddr: "0.0.0.0:0"}, want: "not a loopback address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := Run(ctx, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

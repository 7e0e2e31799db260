package agent

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"gefyra.dev/gefyra/internal/wgnet"
	"gefyra.dev/gefyra/internal/wire"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildBin != "" {
		os.RemoveAll(filepath.Dir(buildBin))
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func mustKey(t testing.TB) wgnet.Key {
	k, err := wgnet.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return Config{
			PrivateKey: mustKey(t),
			Address:    netip.MustParseAddr("10.122.0.2"),
			Stowaway:   Stowaway{Endpoint: "127.0.0.1:51820", PublicKey: mustKey(t).PublicKey()},
			Targets:    map[uint16]string{8155: "127.0.0.1:8155"},
		}
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "good", mod: func(*Config) {}},
		{name: "host name endpoint", mod: func(c *Config) { c.Stowaway.Endpoint = "localhost:51820" }},
		{name: "no private key", mod: func(c *Config) { c.PrivateKey = wgnet.Key{} }, wantErr: "private key"},
		{name: "no address", mod: func(c *Config) { c.Address = netip.Addr{} }, wantErr: "tunnel address"},
		{name: "no stowaway key", mod: func(c *Config) { c.Stowaway.PublicKey = wgnet.Key{} }, wantErr: "public key"},
		{name: "endpoint without port", mod: func(c *Config) { c.Stowaway.Endpoint = "127.0.0.1" }, wantErr: "endpoint"},
		{name: "endpoint port 0", mod: func(c *Config) { c.Stowaway.Endpoint = "127.0.0.1:0" }, wantErr: "host:port"},
		{name: "target port 0", mod: func(c *Config) { c.Targets = map[uint16]string{0: "127.0.0.1:1"} }, wantErr: "port 0"},
		{name: "target without port", mod: func(c *Config) { c.Targets = map[uint16]string{80: "127.0.0.1"} }, wantErr: "target"},
		{name: "target without host", mod: func(c *Config) { c.Targets = map[uint16]string{80: ":80"} }, wantErr: "no host"},
		{name: "target bad port", mod: func(c *Config) { c.Targets = map[uint16]string{80: "127.0.0.1:http"} }, wantErr: "bad port"},
		{name: "egress device", mod: func(c *Config) { c.EgressDevice = "gefyra0" }},
		{name: "egress device too long", mod: func(c *Config) { c.EgressDevice = "a-very-long-device" }, wantErr: "egress device"},
		{name: "egress device with a slash", mod: func(c *Config) { c.EgressDevice = "a/b" }, wantErr: "egress device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				b, _ := json.Marshal(c)
				back, err := ParseConfig(b)
				if err != nil {
					t.Fatalf("JSON round trip: %v (%s)", err, b)
				}
				if back.PrivateKey != c.PrivateKey || back.Targets[8155] != c.Targets[8155] || back.Stowaway.Endpoint != c.Stowaway.Endpoint || back.Stowaway.PublicKey != c.Stowaway.PublicKey {
					t.Fatalf("round trip changed the config: %+v", back)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"privateKey":"` + strings.Repeat("A", 43) + `=","address":"10.122.0.2","stowaway":{"endpoint":"127.0.0.1:51820","publicKey":"` + strings.Repeat("B", 43) + `="},"keepalive":"25s","targets":{"8155":"127.0.0.1:8155"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"targets":{"70000":"x"}}`))
	f.Add([]byte(`{"privateKey":"` + strings.Repeat("A", 43) + `=","address":"10.122.0.2","stowaway":{"endpoint":"h:1","publicKey":"` + strings.Repeat("B", 43) + `="},"egressDevice":"gefyra0"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseConfig(out); err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
	})
}

// stowawayProc is the real stowaway binary, run as a process.
type stowawayProc struct {
	cmd       *exec.Cmd
	wgPort    int
	relayAddr string
	adminAddr string
	done      chan error
}

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

func stowawayBinary(t testing.TB) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gefyra-agent-test")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "stowaway")
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			gobin = "go"
		}
		out, err := exec.Command(gobin, "build", "-o", buildBin, "gefyra.dev/gefyra/stowaway").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building stowaway: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// startStowaway runs stowaway with the given private key, config and
// WireGuard port (0 for any) and waits until it listens.
func startStowaway(t testing.TB, key wgnet.Key, cfg string, wgPort int) *stowawayProc {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	cfgFile := filepath.Join(dir, "config.json")
	os.WriteFile(keyFile, []byte(key.String()+"\n"), 0o600)
	os.WriteFile(cfgFile, []byte(cfg), 0o600)
	cmd := exec.Command(stowawayBinary(t),
		"--private-key-file", keyFile, "--config", cfgFile,
		"--wireguard-port", fmt.Sprint(wgPort), "--relay-port", "0", "--admin-port", "0",
		// Long enough for one SYN retransmission (gVisor's first RTO is 1s):
		// a peer that just shook hands may drop the very first packet, sent
		// before stowaway saw the handshake confirmed.
		"--dial-timeout", "2500ms", "--log-format", "json", "--log-level", "debug")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &stowawayProc{cmd: cmd, done: make(chan error, 1)}
	ready := make(chan struct{})
	logs := &strings.Builder{}
	var logMu sync.Mutex
	go func() {
		signal := ready
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			logs.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
				Port int    `json:"wireguard_port"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			switch line.Msg {
			case "stowaway starting":
				p.wgPort = line.Port
			case "relay listening":
				_, port, _ := net.SplitHostPort(line.Addr)
				p.relayAddr = "127.0.0.1:" + port
			case "admin endpoints listening":
				_, port, _ := net.SplitHostPort(line.Addr)
				p.adminAddr = "127.0.0.1:" + port
			}
			if p.wgPort != 0 && p.relayAddr != "" && p.adminAddr != "" && signal != nil {
				close(signal)
				signal = nil
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-p.done:
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("stowaway exited: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("stowaway did not start")
	}
	t.Cleanup(p.stop)
	t.Cleanup(func() {
		if t.Failed() {
			logMu.Lock()
			t.Logf("stowaway log:\n%s", logs.String())
			logMu.Unlock()
		}
	})
	return p
}

func (p *stowawayProc) stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// metric returns the value of one sample line of stowaway's /metrics.
func (p *stowawayProc) metric(t testing.TB, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

// runAgent starts an agent and returns a stop function that waits for Run.
func runAgent(t testing.TB, cfg Config) (*Agent, func()) {
	t.Helper()
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, "agent tunnel up", func() bool { return a.Status().Up })
	return a, stop
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// backend is a local HTTP server standing in for the developer's container.
func backend(t testing.TB, name string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s token=%s", name, r.URL.Path, r.Header.Get("X-Forwarded-Access-Token"))
	}))
	t.Cleanup(s.Close)
	return s
}

// carrier speaks the wire preamble to stowaway's relay and sends one HTTP
// request over the relayed connection.
func carrier(t testing.TB, relay string, h wire.Header, path string) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", relay)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := wire.Encode(c, &h); err != nil {
		t.Fatal(err)
	}
	if err := wire.ReadReply(c); err != nil {
		return "", err
	}
	req, _ := http.NewRequest("GET", "http://demo"+path, nil)
	req.Header.Set("X-Forwarded-Access-Token", "eyJ.token.sig")
	req.Header.Set("Connection", "close")
	if err := req.Write(c); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func refusal(err error) wire.Code {
	var r *wire.RefusedError
	if errors.As(err, &r) {
		return r.Code
	}
	return 255
}

// TestWholeRelayPath: carrier client → stowaway process → WireGuard →
// agent → local HTTP backend, and the agent restarting.
func TestWholeRelayPath(t *testing.T) {
	stowKey := mustKey(t)
	agentKey := mustKey(t)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(edPub)
	stowCfg, _ := json.Marshal(map[string]any{
		"peers":          []map[string]any{{"name": "alice", "publicKey": agentKey.PublicKey(), "address": "10.122.0.2"}},
		"bridges":        []map[string]any{{"name": "demo/alice", "peer": "alice", "ports": []map[string]int{{"target": 8155}, {"target": 9000}}}},
		"credentialKeys": []string{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))},
	})
	stow := startStowaway(t, stowKey, string(stowCfg), 0)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"bridge": "demo/alice", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	h8155 := wire.Header{Bridge: "demo/alice", Port: 8155, Credential: []byte(tok)}
	h9000 := wire.Header{Bridge: "demo/alice", Port: 9000, Credential: []byte(tok)}

	local := backend(t, "local")
	second := backend(t, "second")
	cfg := Config{
		PrivateKey: agentKey,
		Address:    netip.MustParseAddr("10.122.0.2"),
		Stowaway:   Stowaway{Endpoint: fmt.Sprintf("localhost:%d", stow.wgPort), PublicKey: stowKey.PublicKey()},
		Targets:    map[uint16]string{8155: local.Listener.Addr().String()},
	}
	a, stop := runAgent(t, cfg)

	body, err := carrier(t, stow.relayAddr, h8155, "/items/123")
	if err != nil {
		t.Fatal(err)
	}
	if want := "local /items/123 token=eyJ.token.sig"; body != want {
		t.Fatalf("body %q, want %q", body, want)
	}

	// Port 9000 is allowed by the bridge but not served by the agent yet.
	if _, err := carrier(t, stow.relayAddr, h9000, "/"); refusal(err) != wire.CodeDialFailed {
		t.Fatalf("unserved port: %v", err)
	}
	if err := a.SetTargets(map[uint16]string{8155: local.Listener.Addr().String(), 9000: second.Listener.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	if body, err := carrier(t, stow.relayAddr, h9000, "/nine"); err != nil || !strings.HasPrefix(body, "second /nine") {
		t.Fatalf("added target: %q, %v", body, err)
	}
	if err := a.SetTargets(map[uint16]string{9000: second.Listener.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := carrier(t, stow.relayAddr, h8155, "/"); refusal(err) != wire.CodeDialFailed {
		t.Fatalf("removed target: %v", err)
	}

	// A target that does not answer: the tunnel connection is reset before
	// stowaway accepts the carrier, so carrier learns it in the reply.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if err := a.SetTargets(map[uint16]string{9000: closed}); err != nil {
		t.Fatal(err)
	}
	if _, err := carrier(t, stow.relayAddr, h9000, "/"); refusal(err) != wire.CodeDialFailed {
		t.Fatalf("dead local target: %v", err)
	}
	if err := a.SetTargets(map[uint16]string{9000: second.Listener.Addr().String()}); err != nil {
		t.Fatal(err)
	}

	st := a.Status()
	if !st.Up || st.HandshakeAgeSeconds < 0 || st.HandshakeAgeSeconds > 60 || st.RxBytes == 0 || st.TxBytes == 0 ||
		st.TotalConnections != 3 || st.FailedConnections != 1 || st.ActiveConnections != 0 {
		t.Fatalf("status %+v", st)
	}
	srv := httptest.NewServer(a.Handler())
	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var got Status
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	srv.Close()
	if got.PublicKey != agentKey.PublicKey() || !got.Up || got.Targets[9000] == "" {
		t.Fatalf("status endpoint: %+v", got)
	}

	if v := stow.metric(t, `gefyra_stowaway_connections_total{bridge="demo/alice"}`); v != 2 {
		t.Errorf("connections_total = %v, want 2", v)
	}
	if v := stow.metric(t, `gefyra_stowaway_refused_connections_total{reason="dial_failed"}`); v != 3 {
		t.Errorf("refused dial_failed = %v, want 3", v)
	}
	if v := stow.metric(t, `gefyra_stowaway_relayed_bytes_total{bridge="demo/alice",direction="from_peer"}`); v < 100 {
		t.Errorf("bytes from peer = %v", v)
	}
	if v := stow.metric(t, `gefyra_stowaway_peer_last_handshake_seconds{peer="alice"}`); v < 0 || v > 60 {
		t.Errorf("last handshake = %v", v)
	}

	// The agent goes away: stowaway answers "peer down" ...
	stop()
	if _, err := carrier(t, stow.relayAddr, h9000, "/"); refusal(err) != wire.CodePeerDown {
		t.Fatalf("agent stopped: %v", err)
	}
	// ... and a new agent process (new UDP port, same key) is reachable
	// again without any action: stowaway learns its new address from the
	// handshake, and its liveness probe (every 250ms) marks the peer up on
	// the first answer. Until then it refuses fast with "peer down".
	runAgent(t, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, err := carrier(t, stow.relayAddr, h8155, "/again")
		if err == nil && strings.HasPrefix(body, "local /again") {
			break
		}
		if refusal(err) != wire.CodePeerDown || time.Now().After(deadline) {
			t.Fatalf("after agent restart: %q, %v", body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// relaySetup is a stowaway process, a bridge to an agent key, and a
// credential for it.
type relaySetup struct {
	stowKey, agentKey wgnet.Key
	cfgJSON           string
	header            wire.Header
}

func newRelaySetup(t testing.TB) *relaySetup {
	s := &relaySetup{stowKey: mustKey(t), agentKey: mustKey(t)}
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(edPub)
	b, _ := json.Marshal(map[string]any{
		"peers":          []map[string]any{{"name": "alice", "publicKey": s.agentKey.PublicKey(), "address": "10.122.0.2"}},
		"bridges":        []map[string]any{{"name": "demo/alice", "peer": "alice", "ports": []map[string]int{{"target": 8155}}}},
		"credentialKeys": []string{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))},
	})
	s.cfgJSON = string(b)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"bridge": "demo/alice", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	s.header = wire.Header{Bridge: "demo/alice", Port: 8155, Credential: []byte(tok)}
	return s
}

// TestRecoversFromStowawayRestart: stowaway restarts (same key, same UDP
// port) and forgets every session; the agent's probe notices and shakes
// hands again long before WireGuard's own two-minute rekey would.
func TestRecoversFromStowawayRestart(t *testing.T) {
	s := newRelaySetup(t)
	stow := startStowaway(t, s.stowKey, s.cfgJSON, 0)
	local := backend(t, "local")
	a, _ := runAgent(t, Config{
		PrivateKey:    s.agentKey,
		Address:       netip.MustParseAddr("10.122.0.2"),
		Stowaway:      Stowaway{Endpoint: fmt.Sprintf("127.0.0.1:%d", stow.wgPort), PublicKey: s.stowKey.PublicKey()},
		ProbeInterval: Duration(300 * time.Millisecond),
		Targets:       map[uint16]string{8155: local.Listener.Addr().String()},
	})
	if _, err := carrier(t, stow.relayAddr, s.header, "/first"); err != nil {
		t.Fatal(err)
	}
	port := stow.wgPort
	stow.stop()
	stow = startStowaway(t, s.stowKey, s.cfgJSON, port)
	var body string
	waitFor(t, "relay through the restarted stowaway", func() bool {
		var err error
		body, err = carrier(t, stow.relayAddr, s.header, "/second")
		return err == nil
	})
	if !strings.HasPrefix(body, "local /second") {
		t.Fatalf("body %q", body)
	}
	if st := a.Status(); !st.Up || !st.ProbeOK || st.LastProbe.IsZero() {
		t.Fatalf("status %+v", st)
	}
}

// TestFollowsMovedStowaway: stowaway's name resolves to a new address
// (a new stowaway Pod); the agent follows within its resolve interval.
func TestFollowsMovedStowaway(t *testing.T) {
	stowKey := mustKey(t)
	agentKey := mustKey(t)
	newStow := func(port int) *wgnet.Net {
		n, err := wgnet.New(wgnet.Config{
			PrivateKey: stowKey, Address: DefaultStowawayAddress, ListenPort: port,
			Peers: []wgnet.Peer{{PublicKey: agentKey.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.122.0.2/32")}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	stow1 := newStow(0)
	port := stow1.ListenPort()

	var mu sync.Mutex
	current := netip.MustParseAddr("127.0.0.1")
	local := backend(t, "local")
	a, err := New(Config{
		PrivateKey:      agentKey,
		Address:         netip.MustParseAddr("10.122.0.2"),
		Stowaway:        Stowaway{Endpoint: fmt.Sprintf("stowaway.gefyra.test:%d", port), PublicKey: stowKey.PublicKey()},
		ResolveInterval: Duration(100 * time.Millisecond),
		ProbeInterval:   -1,
		Targets:         map[uint16]string{8155: local.Listener.Addr().String()},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		if host != "stowaway.gefyra.test" {
			return nil, fmt.Errorf("unexpected lookup of %q", host)
		}
		mu.Lock()
		defer mu.Unlock()
		return []netip.Addr{netip.MustParseAddr("::1"), current}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	get := func(n *wgnet.Net) (string, error) {
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		c, err := n.DialContext(dctx, "tcp", "10.122.0.2:8155")
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /moved HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	waitFor(t, "first stowaway reaches the agent", func() bool { _, err := get(stow1); return err == nil })
	if got := a.Status().Stowaway; got != netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Fatalf("stowaway endpoint %s (IPv4 preferred)", got)
	}

	// The old stowaway goes, a new one (same key, new process) answers on
	// another address.
	stow1.Close()
	stow2 := newStow(port)
	mu.Lock()
	current = netip.MustParseAddr("127.0.0.2")
	mu.Unlock()
	want := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.2:%d", port))
	waitFor(t, "agent follows the new address", func() bool { return a.Status().Stowaway == want })
	var body string
	waitFor(t, "new stowaway reaches the agent", func() bool {
		var err error
		body, err = get(stow2)
		return err == nil
	})
	if !strings.HasPrefix(body, "local /moved") {
		t.Fatalf("body %q", body)
	}
	st, ok, _ := stow2.PeerStats(agentKey.PublicKey())
	if !ok || st.Endpoint.Addr() != netip.MustParseAddr("127.0.0.1") && st.Endpoint.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("new stowaway's view of the agent: %+v", st)
	}
}

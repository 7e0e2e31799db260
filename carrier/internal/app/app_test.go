package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/carrier/internal/app"
	ct "gefyra.dev/gefyra/carrier/internal/config/configtest"
	"gefyra.dev/gefyra/internal/pipe"
	"gefyra.dev/gefyra/internal/wire"
)

const nodeID = "oauth2-demo/oauth2-demo-7d9f-abcde"

func backend(t *testing.T, name string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s token=%s", name, r.URL.Path, r.Header.Get("X-Forwarded-Access-Token"))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// stowaway accepts wire preambles for one bridge and relays to target.
func stowaway(t *testing.T, bridge, credential, target string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				h, err := wire.Decode(c)
				switch {
				case err != nil:
					wire.WriteReply(c, wire.CodeFor(err))
				case h.Bridge != bridge:
					wire.WriteReply(c, wire.CodeUnknownBridge)
				case string(h.Credential) != credential:
					wire.WriteReply(c, wire.CodeUnauthenticated)
				default:
					up, err := net.Dial("tcp", target)
					if err != nil {
						wire.WriteReply(c, wire.CodeDialFailed)
						break
					}
					wire.WriteReply(c, wire.CodeAccepted)
					pipe.Join(context.Background(), c, up)
					return
				}
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

type controlPlane struct {
	addr  string
	cache cachev3.SnapshotCache
	mu    sync.Mutex // guards nacks
	nacks []string
}

func startControlPlane(t *testing.T) *controlPlane {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{addr: ln.Addr().String(), cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
		if r.GetErrorDetail() != nil {
			cp.mu.Lock()
			cp.nacks = append(cp.nacks, r.GetErrorDetail().GetMessage())
			cp.mu.Unlock()
		}
		return nil
	}}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(context.Background(), cp.cache, cb))
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return cp
}

func (cp *controlPlane) set(t *testing.T, version string, msgs ...proto.Message) {
	res := map[resourcev3.Type][]types.Resource{}
	for typ, list := range ct.Resources(msgs...) {
		for _, m := range list {
			res[typ] = append(res[typ], m.(types.Resource))
		}
	}
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, s := f()
		if ok {
			return
		}
		last = s
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: never; last %q", what, last)
}

func get(url string, headers ...string) (int, string) {
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCarrierOverXDS runs the tutorial's flow against a real
// go-control-plane server: the workload's traffic goes to the fallback,
// a bridge takes the requests that carry its header, a bad update is
// refused without harm, and the bridge goes away again.
func TestCarrierOverXDS(t *testing.T) {
	cp := startControlPlane(t)
	fallback := backend(t, "fallback")
	local := backend(t, "laptop")
	stow := stowaway(t, "oauth2-demo/myfastapi", "jwt-of-client-a", local)

	base := []proto.Message{
		ct.HTTPListener("port-8155", "127.0.0.1:0", "routes-8155", "fallback-8155"),
		ct.EDSCluster("fallback-8155"),
		ct.Endpoints("fallback-8155", fallback),
	}
	probe := ct.Direct("probe", ct.Path("/healthz", ct.Header("user-agent", "kube-probe/1.37")), 200, "ok")
	cp.set(t, "1", append(base, ct.Routes("routes-8155", probe))...)

	a, err := app.New(app.Config{XDSServer: cp.addr, NodeID: nodeID, AdminAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	eventually(t, "listener open", func() (bool, string) { return a.Server.Addr("port-8155") != "", "" })
	url := "http://" + a.Server.Addr("port-8155")
	eventually(t, "ready", func() (bool, string) {
		code, body := get("http://" + a.Admin.ListenAddr() + "/readyz")
		return code == 200, body
	})
	if code, body := get(url+"/items/123", "X-Forwarded-Access-Token", "t0"); code != 200 || body != "fallback /items/123 token=t0" {
		t.Fatalf("before the bridge: %d %q", code, body)
	}
	if code, body := get(url+"/healthz", "User-Agent", "kube-probe/1.37"); code != 200 || body != "ok" {
		t.Fatalf("probe: %d %q", code, body)
	}

	// gefyra bridge: requests for john go to the laptop.
	bridged := append(base,
		ct.Routes("routes-8155", probe, ct.To("myfastapi", ct.Prefix("/", ct.HeaderRegex("x-forwarded-access-token", "john.*")), "bridge-myfastapi")),
		ct.BridgeCluster("bridge-myfastapi", stow, "oauth2-demo/myfastapi", 8155, "jwt-of-client-a"),
	)
	cp.set(t, "2", bridged...)
	eventually(t, "bridged request reaches the laptop", func() (bool, string) {
		code, body := get(url+"/items/123", "X-Forwarded-Access-Token", "john.jwt")
		return code == 200 && body == "laptop /items/123 token=john.jwt", body
	})
	if code, body := get(url+"/items/123", "X-Forwarded-Access-Token", "jane.jwt"); code != 200 || !strings.HasPrefix(body, "fallback") {
		t.Fatalf("other users stay on the fallback: %d %q", code, body)
	}

	// A bad regex is NACKed; the bridge keeps working.
	bad := append(base, ct.Routes("routes-8155", ct.To("x", ct.Regex("/items/(["), "bridge-myfastapi")),
		ct.BridgeCluster("bridge-myfastapi", stow, "oauth2-demo/myfastapi", 8155, "jwt-of-client-a"))
	cp.set(t, "3", bad...)
	eventually(t, "NACK", func() (bool, string) {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return len(cp.nacks) > 0 && strings.Contains(cp.nacks[0], "missing closing ]"), strings.Join(cp.nacks, ";")
	})
	if code, body := get(url+"/items/1", "X-Forwarded-Access-Token", "john.jwt"); code != 200 || !strings.HasPrefix(body, "laptop") {
		t.Fatalf("after the NACK: %d %q", code, body)
	}

	// Metrics on the admin endpoint.
	_, metrics := get("http://" + a.Admin.ListenAddr() + "/metrics")
	for _, want := range []string{
		`gefyra_carrier_requests_total{bridge="oauth2-demo/myfastapi",code="200",route="myfastapi"}`,
		`gefyra_carrier_config_updates_total{result="rejected"}`,
		`gefyra_carrier_fallbacks_total{bridge="",reason="no_route"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// gefyra unbridge: back to the fallback.
	cp.set(t, "4", append(base, ct.Routes("routes-8155", probe))...)
	eventually(t, "unbridged", func() (bool, string) {
		code, body := get(url+"/items/123", "X-Forwarded-Access-Token", "john.jwt")
		return code == 200 && strings.HasPrefix(body, "fallback"), body
	})
}

func TestNodeID(t *testing.T) {
	nsFile := t.TempDir() + "/namespace"
	tests := []struct {
		name     string
		env      map[string]string
		nsFile   string
		hostname string
		want     string
	}{
		{name: "downward API env", env: map[string]string{"POD_NAMESPACE": "ns", "POD_NAME": "pod"}, want: "ns/pod"},
		{name: "service account namespace and hostname", nsFile: "oauth2-demo\n", hostname: "oauth2-demo-7d9f-abcde", want: "oauth2-demo/oauth2-demo-7d9f-abcde"},
		{name: "nothing", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := nsFile + "-missing"
			if tt.nsFile != "" {
				path = nsFile
				if err := writeFile(path, tt.nsFile); err != nil {
					t.Fatal(err)
				}
			}
			got, err := app.NodeID(func(k string) string { return tt.env[k] }, path, func() (string, error) {
				if tt.hostname == "" {
					return "", fmt.Errorf("no hostname")
				}
				return tt.hostname, nil
			})
			if got != tt.want || (tt.want == "") != (err != nil) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

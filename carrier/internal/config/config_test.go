package config_test

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"gefyra.dev/gefyra/carrier/internal/config"
	ct "gefyra.dev/gefyra/carrier/internal/config/configtest"
)

// req is a config.Request that, like carrier's own, does not allocate
// when a header occurs once.
type req struct {
	method, host, path []byte
	headers            [][2][]byte
	join               []byte
}

func (r *req) Method() []byte { return r.method }
func (r *req) Host() []byte   { return r.host }
func (r *req) Path() []byte   { return r.path }
func (r *req) Header(name string) ([]byte, bool) {
	var first []byte
	n := 0
	for _, h := range r.headers {
		if strings.EqualFold(string(h[0]), name) {
			if n == 1 {
				r.join = append(append(append(r.join[:0], first...), ','), h[1]...)
			} else if n > 1 {
				r.join = append(append(r.join, ','), h[1]...)
			}
			if n == 0 {
				first = h[1]
			}
			n++
		}
	}
	switch n {
	case 0:
		return nil, false
	case 1:
		return first, true
	}
	return r.join, true
}

func get(path string, headers ...string) *req {
	r := &req{method: []byte("GET"), host: []byte("svc.example:8080"), path: []byte(path)}
	for i := 0; i+1 < len(headers); i += 2 {
		r.headers = append(r.headers, [2][]byte{[]byte(headers[i]), []byte(headers[i+1])})
	}
	return r
}

func compile(t testing.TB, rc *routev3.RouteConfiguration) *config.RouteTable {
	t.Helper()
	cfg, err := config.Compile(ct.Resources(
		ct.HTTPListener("http", "127.0.0.1:0", rc.Name, "fallback"),
		rc,
		ct.Cluster("fallback", "127.0.0.1:1"),
		ct.BridgeCluster("bridge-a", "127.0.0.1:2", "demo/a", 8155, "tok-a"),
		ct.BridgeCluster("bridge-b", "127.0.0.1:2", "demo/b", 8155, "tok-b"),
	), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Listener("http").HTTP.Routes
}

func TestRouting(t *testing.T) {
	ignoreCase := &routev3.HeaderMatcher{Name: "x-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "JOHN"}, IgnoreCase: true},
	}}
	absent := &routev3.HeaderMatcher{Name: "x-skip", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}
	inverted := ct.Header("x-env", "prod")
	inverted.InvertMatch = true
	caseless := ct.Prefix("/CaseLess")
	caseless.CaseSensitive = wrapperspb.Bool(false)
	rc := ct.Routes("routes",
		ct.Direct("probe", ct.Path("/healthz", ct.Header("user-agent", "kube-probe/1.37")), 200, "ok"),
		ct.To("a-header", ct.Prefix("/", ct.Header("x-gefyra-bridge", "a")), "bridge-a"),
		ct.To("b-header", ct.Prefix("/", ct.Header("x-gefyra-bridge", "b")), "bridge-b"),
		ct.To("both", ct.Prefix("/and", ct.Header("x-one", "1"), ct.Header("x-two", "2")), "bridge-a"),
		ct.To("regex", ct.Regex(`/items/[0-9]+`), "bridge-b"),
		ct.To("header-regex", ct.Prefix("/re", ct.HeaderRegex("x-forwarded-access-token", `ey[A-Za-z0-9_-]+\..*`)), "bridge-a"),
		ct.To("ignore-case", ct.Prefix("/ic", ignoreCase), "bridge-b"),
		ct.To("absent", ct.Prefix("/absent", absent), "bridge-a"),
		ct.To("inverted", ct.Prefix("/inv", inverted), "bridge-b"),
		ct.To("caseless", caseless, "bridge-a"),
		ct.To("exact", ct.Path("/exact"), "bridge-b"),
		ct.To("first-wins", ct.Prefix("/api"), "bridge-a"),
		ct.To("never", ct.Prefix("/api/v2"), "bridge-b"),
	)
	table := compile(t, rc)
	tests := []struct {
		name string
		r    *req
		want string // route name, "" for none
	}{
		{name: "probe answered locally", r: get("/healthz", "User-Agent", "kube-probe/1.37"), want: "probe"},
		{name: "probe path without probe agent is not the probe", r: get("/healthz"), want: ""},
		{name: "header split a", r: get("/items", "X-Gefyra-Bridge", "a"), want: "a-header"},
		{name: "header split b", r: get("/items", "x-gefyra-bridge", "b"), want: "b-header"},
		{name: "header value is case sensitive", r: get("/x", "x-gefyra-bridge", "A"), want: ""},
		{name: "headers are ANDed", r: get("/and", "x-one", "1", "x-two", "2"), want: "both"},
		{name: "one of two headers is not enough", r: get("/and", "x-one", "1"), want: ""},
		{name: "repeated header joins with comma", r: get("/and", "x-one", "1", "x-two", "2", "x-two", "3"), want: ""},
		{name: "path regex matches whole path", r: get("/items/123"), want: "regex"},
		{name: "path regex ignores the query", r: get("/items/123?full=1"), want: "regex"},
		{name: "path regex is anchored", r: get("/items/123/x"), want: ""},
		{name: "header regex", r: get("/re", "X-Forwarded-Access-Token", "eyJhbGc.eyJzdWIi.sig"), want: "header-regex"},
		{name: "header regex anchored", r: get("/re", "X-Forwarded-Access-Token", "Bearer eyJhbGc.x"), want: ""},
		{name: "ignore_case prefix", r: get("/ic", "x-user", "john@gefyra.dev"), want: "ignore-case"},
		{name: "present_match false, header absent", r: get("/absent"), want: "absent"},
		{name: "present_match false, header present", r: get("/absent", "x-skip", ""), want: ""},
		{name: "inverted, other value", r: get("/inv", "x-env", "dev"), want: "inverted"},
		{name: "inverted, same value", r: get("/inv", "x-env", "prod"), want: ""},
		{name: "inverted, header missing does not match", r: get("/inv"), want: ""},
		{name: "case-insensitive path", r: get("/caseless/x"), want: "caseless"},
		{name: "exact path", r: get("/exact?q=1"), want: "exact"},
		{name: "exact path is exact", r: get("/exact/"), want: ""},
		{name: "first match wins", r: get("/api/v2/x"), want: "first-wins"},
		{name: "nothing matches", r: get("/nothing"), want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if rt := table.Route(tt.r); rt != nil {
				got = rt.Name
			}
			if got != tt.want {
				t.Fatalf("route %q, want %q", got, tt.want)
			}
		})
	}
}

func TestVirtualHosts(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "vh", VirtualHosts: []*routev3.VirtualHost{
		{Name: "exact", Domains: []string{"api.example.com"}, Routes: []*routev3.Route{ct.To("exact", ct.Prefix("/"), "bridge-a")}},
		{Name: "suffix", Domains: []string{"*.example.com"}, Routes: []*routev3.Route{ct.To("suffix", ct.Prefix("/"), "bridge-a")}},
		{Name: "longer-suffix", Domains: []string{"*.eu.example.com"}, Routes: []*routev3.Route{ct.To("longer-suffix", ct.Prefix("/"), "bridge-a")}},
		{Name: "prefix", Domains: []string{"internal.*"}, Routes: []*routev3.Route{ct.To("prefix", ct.Prefix("/"), "bridge-a")}},
		{Name: "star", Domains: []string{"*"}, Routes: []*routev3.Route{ct.To("star", ct.Prefix("/"), "bridge-a")}},
	}}
	table := compile(t, rc)
	tests := []struct{ name, host, want string }{
		{name: "exact", host: "api.example.com", want: "exact"},
		{name: "exact, any case", host: "API.Example.com", want: "exact"},
		{name: "exact with port", host: "api.example.com:8080", want: "exact"},
		{name: "suffix", host: "www.example.com", want: "suffix"},
		{name: "longest suffix wins", host: "a.eu.example.com", want: "longer-suffix"},
		{name: "prefix", host: "internal.svc", want: "prefix"},
		{name: "star", host: "10.0.0.1:8155", want: "star"},
		{name: "no host", host: "", want: "star"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get("/")
			r.host = []byte(tt.host)
			rt := table.Route(r)
			if rt == nil || rt.Name != tt.want {
				t.Fatalf("got %v, want %s", rt, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	withAction := func(a *routev3.RouteAction) *routev3.Route {
		r := ct.To("r", ct.Prefix("/"), "bridge-a")
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "bridge-a"}
		r.Action = &routev3.Route_Route{Route: a}
		return r
	}
	badBridge := ct.BridgeCluster("bad", "127.0.0.1:1", "no-slash", 80, "t")
	badPort := ct.BridgeCluster("bad", "127.0.0.1:1", "demo/x", 70000, "t")
	noCred := ct.BridgeCluster("bad", "127.0.0.1:1", "demo/x", 80, "")
	tests := []struct {
		name string
		res  []proto.Message
		want string
	}{
		{name: "bad path regex", res: []proto.Message{ct.Routes("r", ct.To("r", ct.Regex("/items/(["), "x"))}, want: "missing closing ]"},
		{name: "bad header regex", res: []proto.Message{ct.Routes("r", ct.To("r", ct.Prefix("/", ct.HeaderRegex("x", "a(")), "x"))}, want: "missing closing )"},
		{name: "prefix rewrite", res: []proto.Message{ct.Routes("r", withAction(&routev3.RouteAction{PrefixRewrite: "/v2"}))}, want: "rewrites are not supported"},
		{name: "query parameters", res: []proto.Message{ct.Routes("r", &routev3.Route{Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, QueryParameters: []*routev3.QueryParameterMatcher{{Name: "q"}},
		}, Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "x"}}}})}, want: "query_parameters"},
		{name: "redirect", res: []proto.Message{ct.Routes("r", &routev3.Route{Match: ct.Prefix("/"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{}}})}, want: "not supported"},
		{name: "bad bridge name", res: []proto.Message{badBridge}, want: "not namespace/name"},
		{name: "bad bridge port", res: []proto.Message{badPort}, want: "port"},
		{name: "no credential", res: []proto.Message{noCred}, want: "credential"},
		{name: "two listeners, one port", res: []proto.Message{
			ct.HTTPListener("a", "127.0.0.1:8155", "r", ""), ct.TCPListener("b", "127.0.0.1:8155", "c", ""),
		}, want: "both listen"},
		{name: "direct response status", res: []proto.Message{ct.Routes("r", ct.Direct("d", ct.Prefix("/"), 99, ""))}, want: "status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Compile(ct.Resources(tt.res...), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestMissingReferencesAreNotErrors(t *testing.T) {
	cfg, err := config.Compile(ct.Resources(
		ct.HTTPListener("http", "127.0.0.1:0", "not-yet", "fallback-not-yet"),
		ct.TCPListener("tcp", "127.0.0.1:0", "cluster-not-yet", ""),
		ct.EDSCluster("eds"),
	), nil)
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Listener("http")
	if l.HTTP.Routes != nil || l.Fallback != nil || l.FallbackName != "fallback-not-yet" {
		t.Fatalf("pending references resolved to %+v", l)
	}
	if cfg.Listener("tcp").TCP.Cluster != nil {
		t.Fatal("missing TCP cluster resolved")
	}
	if eps := cfg.Clusters["eds"].Endpoints; len(eps) != 0 {
		t.Fatalf("EDS cluster without assignment has endpoints %v", eps)
	}
	cfg, err = config.Compile(ct.Resources(ct.EDSCluster("eds"), ct.Endpoints("eds", "10.244.0.9:8155", "10.244.0.10:8155")), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Clusters["eds"]
	if got := []string{c.Endpoint(), c.Endpoint(), c.Endpoint()}; got[0] != "10.244.0.9:8155" || got[1] != "10.244.0.10:8155" || got[2] != got[0] {
		t.Fatalf("round robin gave %v", got)
	}
}

func BenchmarkRoute(b *testing.B) {
	rc := ct.Routes("routes",
		ct.Direct("probe", ct.Path("/healthz", ct.Header("user-agent", "kube-probe/1.37")), 200, "ok"),
		ct.To("a", ct.Prefix("/", ct.Header("x-gefyra-bridge", "a")), "bridge-a"),
		ct.To("b", ct.Regex(`/items/[0-9]+`, ct.HeaderRegex("x-forwarded-access-token", `ey.*`)), "bridge-b"),
		ct.To("fallback", ct.Prefix("/"), "fallback"),
	)
	table := compile(b, rc)
	r := get("/items/123?x=1", "User-Agent", "wrk", "Accept", "*/*", "X-Forwarded-Access-Token", "eyJhbGciOiJSUzI1NiJ9.e30.sig")
	b.ReportAllocs()
	for b.Loop() {
		if rt := table.Route(r); rt == nil || rt.Name != "b" {
			b.Fatal("wrong route")
		}
	}
}

func TestRouteDoesNotAllocate(t *testing.T) {
	table := compile(t, ct.Routes("routes",
		ct.To("a", ct.Prefix("/", ct.Header("x-gefyra-bridge", "a")), "bridge-a"),
		ct.To("b", ct.Regex(`/items/[0-9]+`, ct.HeaderRegex("x-forwarded-access-token", `ey.*`)), "bridge-b"),
	))
	r := get("/items/123", "X-Forwarded-Access-Token", "eyJ.e30.sig", "Accept", "*/*")
	if n := testing.AllocsPerRun(100, func() { table.Route(r) }); n != 0 {
		t.Fatalf("%v allocations per routing decision", n)
	}
}

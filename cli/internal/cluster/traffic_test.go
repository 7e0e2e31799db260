package cluster

import (
	"strings"
	"testing"
)

const carrierMetrics = `# HELP gefyra_carrier_requests_total HTTP requests answered, by bridge (empty for the fallback and local answers), route and status code.
# TYPE gefyra_carrier_requests_total counter
gefyra_carrier_requests_total{bridge="oauth2-demo/myfastapi",code="200",route="r0"} 7
gefyra_carrier_requests_total{bridge="oauth2-demo/myfastapi",code="500",route="r0"} 2
gefyra_carrier_requests_total{bridge="oauth2-demo/myfastapi",code="502",route="r1"} 1
gefyra_carrier_requests_total{bridge="oauth2-demo/other",code="500",route="r0"} 40
gefyra_carrier_requests_total{bridge="",code="200",route="fallback"} 11
# HELP gefyra_carrier_fallbacks_total Requests and connections sent to the fallback.
# TYPE gefyra_carrier_fallbacks_total counter
gefyra_carrier_fallbacks_total{bridge="oauth2-demo/myfastapi",reason="connect"} 3
gefyra_carrier_fallbacks_total{bridge="oauth2-demo/other",reason="connect"} 5
# HELP gefyra_carrier_tcp_connections_total TCP connections forwarded on TCP listeners, by bridge.
# TYPE gefyra_carrier_tcp_connections_total counter
gefyra_carrier_tcp_connections_total{bridge="oauth2-demo/myfastapi",route="tcp"} 4
# HELP gefyra_carrier_active_connections Client connections open now, by listener.
# TYPE gefyra_carrier_active_connections gauge
gefyra_carrier_active_connections{listener="8155"} 1
`

func TestParseCarrierMetrics(t *testing.T) {
	tests := []struct {
		name   string
		bridge string
		want   Traffic
	}{
		{name: "the bridge's series only", bridge: "oauth2-demo/myfastapi", want: Traffic{Requests: 10, ServerErrors: 3, Fallbacks: 3, Connections: 4}},
		{name: "another bridge", bridge: "oauth2-demo/other", want: Traffic{Requests: 40, ServerErrors: 40, Fallbacks: 5}},
		{name: "a bridge without traffic", bridge: "oauth2-demo/none", want: Traffic{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCarrierMetrics(strings.NewReader(carrierMetrics), tt.bridge)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if got := (Traffic{Requests: 10, ServerErrors: 3}).ErrorRate(); got != 0.3 {
		t.Errorf("ErrorRate = %v, want 0.3", got)
	}
	if got := (Traffic{}).ErrorRate(); got != 0 {
		t.Errorf("ErrorRate without requests = %v, want 0", got)
	}
}

func TestParseCarrierMetricsRefusesGarbage(t *testing.T) {
	for _, in := range []string{
		"gefyra_carrier_requests_total{bridge=\"a/b\" 1\n",
		"# TYPE x counter\nx{bridge=\"a/b\"} notanumber\n",
	} {
		if _, err := ParseCarrierMetrics(strings.NewReader(in), "a/b"); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func FuzzParseCarrierMetrics(f *testing.F) {
	f.Add(carrierMetrics, "oauth2-demo/myfastapi")
	f.Add("gefyra_carrier_requests_total{bridge=\"a/b\",code=\"503\"} 1e30\n", "a/b")
	f.Add("gefyra_carrier_requests_total{bridge=\"a/b\",code=\"503\"} NaN\n", "a/b")
	f.Fuzz(func(t *testing.T, in, bridge string) {
		got, err := ParseCarrierMetrics(strings.NewReader(in), bridge)
		if err != nil {
			return
		}
		if got.ServerErrors > got.Requests {
			t.Fatalf("%d server errors of %d requests", got.ServerErrors, got.Requests)
		}
	})
}

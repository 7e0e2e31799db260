//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"gefyra.dev/gefyra/internal/ociimage"
	"gefyra.dev/gefyra/internal/testworld"
	"gefyra.dev/gefyra/internal/testworld/dnsq"
)

// webManifest is one Pod of the test server behind a ClusterIP Service. The
// Pod's name is not the Service's: its own hostname is in its /etc/hosts.
func webManifest(ns string) string {
	return fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: %[1]s
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %[2]s:v1
    imagePullPolicy: IfNotPresent
    args: [serve]
    env: [{name: NAME, value: web}, {name: LISTEN, value: ":8080"}]
    ports: [{containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: %[1]s
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
`, ns, worldServerImage)
}

// TestDNS checks the cluster DNS as Pods and the host see it: Pods resolve
// Services by their short and full names through the search list kubelet
// gives them, the host asks the DNS Service directly over UDP and TCP, and
// a name outside the cluster fails at once, since nothing is forwarded.
func TestDNS(t *testing.T) {
	w := testworld.Get(t)
	if w.DNSIP == "" || w.ClusterDomain == "" {
		t.Fatalf("the world has no cluster DNS (world.env names none); restart it: world/world.sh down && world/world.sh up")
	}
	bin := testworld.GoBuild(t, "gefyra.dev/gefyra/world/testimages/server")
	w.LoadImages(t, testworld.BuildImage(t, ociimage.Spec{
		Tag:        worldServerImage + ":v1",
		Files:      []ociimage.File{{Src: bin, Dst: "/server"}},
		Entrypoint: []string{"/server"},
		Env:        []string{"VERSION=v1"},
	}))
	ns := w.Namespace(t, "dns")
	w.Apply(t, webManifest(ns))
	pod := w.WaitPodReady(t, ns, "web-0", 2*time.Minute)
	webIP := w.Service(t, ns, "web").Spec.ClusterIP
	apiIP := w.Service(t, "default", "kubernetes").Spec.ClusterIP
	domain := w.ClusterDomain
	webFQDN := "web." + ns + ".svc." + domain

	// CoreDNS learns of the new Service from its watch.
	testworld.WaitFor(t, "the cluster DNS to know "+webFQDN, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		a, err := w.AskDNS(ctx, "udp", webFQDN, dnsmessage.TypeA)
		if err != nil {
			return false, err.Error(), nil
		}
		return slices.Equal(a.Addrs(), []string{webIP}), fmt.Sprintf("%s %q", a.Status(), a.Addrs()), nil
	})

	// lookup resolves name inside the web-0 Pod as its programs would.
	lookup := func(name string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := w.RunKubectl(ctx, "", "exec", "-n", ns, "web-0", "-c", "app", "--", "/server", "lookup", name)
		return strings.TrimSpace(out), err
	}

	t.Run("a Pod resolves cluster names", func(t *testing.T) {
		tests := []struct {
			name, host, want string
		}{
			{name: "the API server's Service", host: "kubernetes.default", want: apiIP},
			{name: "a Service of its own namespace", host: "web", want: webIP},
			{name: "svc.ns", host: "web." + ns, want: webIP},
			{name: "svc.ns.svc", host: "web." + ns + ".svc", want: webIP},
			{name: "the full name", host: webFQDN, want: webIP},
			{name: "the full name, rooted", host: webFQDN + ".", want: webIP},
			{name: "a Pod by its dashed IP", host: strings.ReplaceAll(pod.Status.PodIP, ".", "-") + "." + ns + ".pod." + domain, want: pod.Status.PodIP},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := lookup(tt.host)
				if err != nil || got != tt.want {
					t.Fatalf("lookup %s in a Pod = %q, %v; want %s", tt.host, got, err, tt.want)
				}
			})
		}
	})

	t.Run("a Pod reaches a Service by name", func(t *testing.T) {
		out := w.Kubectl(t, "exec", "-n", ns, "web-0", "-c", "app", "--", "/server", "probe", "http://web."+ns+"/")
		if !strings.Contains(out, `"name":"web"`) {
			t.Fatalf("GET http://web.%s/ from a Pod: %q", ns, out)
		}
	})

	t.Run("a name the cluster does not have fails at once", func(t *testing.T) {
		// Every name of the search list gets NXDOMAIN, the last one (the
		// name as given) too: nothing is forwarded, so nothing is waited
		// for, and the lookup says "not found" as in a cluster with a real
		// upstream, not "timed out" or a temporary failure.
		for _, host := range []string{"nosuchservice", "nosuchservice." + ns, "example.com", "nosuchservice." + ns + ".svc." + domain} {
			t.Run(host, func(t *testing.T) {
				got, err := lookup(host)
				if err == nil || !strings.Contains(err.Error(), host+": not found") {
					t.Fatalf("lookup %s in a Pod = %q, %v; want %q", host, got, err, host+": not found")
				}
			})
		}
	})

	t.Run("the host asks the DNS Service", func(t *testing.T) {
		rev := func(ip string) string {
			p := strings.Split(ip, ".")
			slices.Reverse(p)
			return strings.Join(p, ".") + ".in-addr.arpa"
		}
		tests := []struct {
			name     string
			qname    string
			qtype    dnsmessage.Type
			wantCode string
			want     []string // the records' data; nil: none
		}{
			{name: "A of the API server", qname: "kubernetes.default.svc." + domain, qtype: dnsmessage.TypeA, wantCode: "NOERROR", want: []string{apiIP}},
			{name: "A of a Service", qname: webFQDN, qtype: dnsmessage.TypeA, wantCode: "NOERROR", want: []string{webIP}},
			{name: "SRV of a named port", qname: "_http._tcp." + webFQDN, qtype: dnsmessage.TypeSRV, wantCode: "NOERROR", want: []string{"0 100 80 " + webFQDN + "."}},
			{name: "PTR of a ClusterIP", qname: rev(webIP), qtype: dnsmessage.TypePTR, wantCode: "NOERROR", want: []string{webFQDN + "."}},
			{name: "no AAAA in an IPv4 cluster", qname: webFQDN, qtype: dnsmessage.TypeAAAA, wantCode: "NOERROR"},
			{name: "a missing Service", qname: "nosuchservice." + ns + ".svc." + domain, qtype: dnsmessage.TypeA, wantCode: "NXDOMAIN"},
			{name: "a name outside the cluster", qname: "example.com", qtype: dnsmessage.TypeA, wantCode: "NXDOMAIN"},
			{name: "a reverse name outside the cluster", qname: rev("192.0.2.1"), qtype: dnsmessage.TypePTR, wantCode: "NXDOMAIN"},
		}
		for _, network := range []string{"udp", "tcp"} {
			for _, tt := range tests {
				t.Run(network+"/"+tt.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					a, err := w.AskDNS(ctx, network, tt.qname, tt.qtype)
					if err != nil {
						t.Fatalf("%s %s over %s: %v", dnsq.TypeName(tt.qtype), tt.qname, network, err)
					}
					got := a.Of(tt.qtype)
					if a.Status() != tt.wantCode || !slices.Equal(got, tt.want) {
						t.Fatalf("%s %s over %s = %s %q, want %s %q", dnsq.TypeName(tt.qtype), tt.qname, network, a.Status(), got, tt.wantCode, tt.want)
					}
				})
			}
		}
	})
}

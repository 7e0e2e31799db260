package translate_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/netip"
	"testing"

	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/controlplane/internal/translate"
	"gefyra.dev/gefyra/internal/bridge"
	"gefyra.dev/gefyra/internal/credential"
)

// fleet is the shape of a benchmark model: mounts × podsPerMount carrier
// Pods and mounts × bridgesPerMount bridges, each of its own developer.
type fleet struct {
	name                                  string
	mounts, podsPerMount, bridgesPerMount int
}

// The shapes benchmarked: 1,000 bridges spread over 100 workloads of 10
// replicas (1,000 carriers), and one workload of 1,000 replicas shared by
// 10 developers (a rule change goes to all 1,000 carriers).
var fleets = []fleet{
	{name: "bridges=1000,carriers=1000,spread", mounts: 100, podsPerMount: 10, bridgesPerMount: 10},
	{name: "bridges=10,carriers=1000,one-workload", mounts: 1, podsPerMount: 1000, bridgesPerMount: 10},
}

// fleetModel builds f's model; every bridge has one header rule.
func fleetModel(f fleet) *model.Model {
	addr := func(base netip.Addr, i int) netip.Addr {
		b := base.As4()
		b[2], b[3] = byte(i>>8), byte(i)
		return netip.AddrFrom4(b)
	}
	m := &model.Model{Stowaway: model.Stowaway{PublicKey: wgKey("stowaway"), Address: netip.MustParseAddr("10.122.0.1"),
		CIDR: netip.MustParsePrefix("10.122.0.0/16")}}
	pod, dev := 0, 0
	for i := 0; i < f.mounts; i++ {
		ns := fmt.Sprintf("team-%03d", i)
		mt := model.Mount{Namespace: ns, Name: "web-deployment-app", Kind: "Deployment", Workload: "web", Container: "app",
			Ports:    []model.Port{{Name: "http", Port: 8080, Protocol: "TCP"}},
			Fallback: []netip.Addr{addr(netip.MustParseAddr("10.245.0.0"), i+1)}}
		for j := 0; j < f.podsPerMount; j++ {
			pod++
			mt.Pods = append(mt.Pods, model.Pod{Namespace: ns, Name: fmt.Sprintf("web-%04d", j), IP: addr(netip.MustParseAddr("10.244.0.0"), pod)})
		}
		m.Mounts = append(m.Mounts, mt)
		for j := 0; j < f.bridgesPerMount; j++ {
			dev++
			name := fmt.Sprintf("dev-%04d", dev)
			a := addr(netip.MustParseAddr("10.122.0.0"), dev+1)
			m.Clients = append(m.Clients, model.Client{Name: name, User: name + "@example.com", PublicKey: wgKey(name), Address: a})
			m.Bridges = append(m.Bridges, model.Bridge{Namespace: ns, Name: name, Mount: mt.Name, Client: name, ClientAddress: a,
				Ports: []bridge.PortMapping{{Remote: 8080, Local: 8155}},
				Rules: []bridge.Rule{{Headers: []bridge.HeaderMatch{{Name: "x-gefyra-user", Type: bridge.Exact, Value: name}}}},
				Local: "local"})
		}
	}
	m.Sort()
	return m
}

// wgKey is a WireGuard public key (32 bytes, base64) derived from name.
func wgKey(name string) string {
	k := sha256.Sum256([]byte(name))
	return base64.StdEncoding.EncodeToString(k[:])
}

func benchSigner(b *testing.B) *credential.Signer {
	seed := sha256.Sum256([]byte("gefyra translate benchmark key"))
	s, err := credential.NewSigner(ed25519.NewKeyFromSeed(seed[:]), nil)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkTranslateFleet translates whole models of 1,000 carriers: what the
// control plane does after every burst of changes and at every credential
// renewal.
func BenchmarkTranslateFleet(b *testing.B) {
	for _, f := range fleets {
		b.Run(f.name, func(b *testing.B) {
			m := fleetModel(f)
			opts := translate.Options{RelayAddress: "10.96.0.20:8833", Signer: benchSigner(b)}
			snap, err := translate.Translate(m, opts)
			if err != nil {
				b.Fatal(err)
			}
			if want := f.mounts*f.podsPerMount + 1; len(snap.Nodes) != want || len(snap.Warnings) != 0 {
				b.Fatalf("%d nodes, warnings %v; want %d nodes and no warnings", len(snap.Nodes), snap.Warnings, want)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := translate.Translate(m, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

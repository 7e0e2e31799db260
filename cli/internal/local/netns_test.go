package local_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/cli/internal/clitest"
	"gefyra.dev/gefyra/cli/internal/local"
)

// A container in another's network namespace has that one's address, in
// Inspect and List, and answers there; what belongs to a network
// namespace cannot be its own.
func TestSharedNetworkNamespace(t *testing.T) {
	eng := clitest.Docker(t)
	image := clitest.ServerImage(t, eng)
	ctx := ctxT(t)
	if _, err := eng.EnsureNetwork(ctx); err != nil {
		t.Fatal(err)
	}
	holderName, name := clitest.RandomName("holder-"), clitest.RandomName("dev-")
	holder, err := eng.Run(ctx, local.RunSpec{Name: holderName, Image: image, Cmd: []string{"/server", "--listen", ":9000"},
		Role: local.RoleNetns, Labels: clitest.TestLabels, Hostname: name, Aliases: []string{name},
		DNS: []string{"10.96.0.10"}, DNSSearch: []string{"shop.svc.cluster.local"}, DNSOptions: []string{"ndots:5"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := eng.Run(ctx, local.RunSpec{Name: name, Image: image, Cmd: []string{"/server", "--greeting", "shared"},
		NetworkOf: holderName, PIDOf: holderName, Labels: clitest.TestLabels})
	if err != nil {
		t.Fatal(err)
	}
	if c.IP == "" || c.IP != holder.IP || c.NetworkOf != holderName {
		t.Fatalf("container %+v, want the address of %+v", c, holder)
	}
	list, err := eng.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range list {
		if l.Name == name {
			found = true
			if l.IP != holder.IP || l.NetworkOf != holderName {
				t.Errorf("List: %+v, want the holder's address", l)
			}
		}
	}
	if !found {
		t.Fatalf("List has no %s: %+v", name, list)
	}
	var r reply
	clitest.Eventually(t, 20*time.Second, "the container answers at the holder's address", func() (err error) {
		r, err = get("http://" + holder.IP + ":8155/?file=/etc/resolv.conf")
		return err
	})
	if r.Greeting != "shared" || r.Host != name || !strings.Contains(r.File, "search shop.svc.cluster.local") || !strings.Contains(r.File, "ndots:5") {
		t.Fatalf("reply %+v, want the holder's host name and resolver", r)
	}
}

func TestSharedNetworkRefusesItsOwn(t *testing.T) {
	eng := clitest.Docker(t)
	image := clitest.ServerImage(t, eng)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		name string
		spec local.RunSpec
		want string
	}{
		{name: "ports", spec: local.RunSpec{Ports: []local.PortBinding{{ContainerPort: 80}}}, want: "published ports"},
		{name: "hosts and DNS", spec: local.RunSpec{ExtraHosts: []string{"a:1.2.3.4"}, DNS: []string{"10.96.0.10"}}, want: "DNS settings, extra hosts"},
		{name: "aliases", spec: local.RunSpec{Aliases: []string{"x"}, Hostname: "x"}, want: "a host name, network aliases"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tt.spec
			spec.Name, spec.Image, spec.NetworkOf, spec.Labels = clitest.RandomName("x-"), image, "somebody", clitest.TestLabels
			_, err := eng.Run(ctx, spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: %v, want %q", err, tt.want)
			}
			if _, ok, _ := eng.Inspect(ctx, spec.Name); ok {
				t.Fatal("a container was made")
			}
		})
	}
}

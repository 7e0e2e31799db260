package translate

import (
	"crypto/ed25519"
	"crypto/sha256"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"gefyra.dev/gefyra/controlplane/internal/model"
	"gefyra.dev/gefyra/internal/credential"
)

// TestSharedAndCachedTranslation: the Pods of a mount get the same
// resources and version; with a credential cache, translations at
// different times are byte-identical until the credentials are renewed.
func TestSharedAndCachedTranslation(t *testing.T) {
	m, o := readInput(t, "testdata/in/rules.yaml")
	m.Mounts[0].Pods = append(m.Mounts[0].Pods, model.Pod{Namespace: "shop", Name: "checkout-5c8d-a9b8c", IP: netip.MustParseAddr("10.244.0.32")})
	m.Sort()
	now := testClock
	seed := sha256.Sum256([]byte("gefyra translate test key"))
	signer, err := credential.NewSigner(ed25519.NewKeyFromSeed(seed[:]), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	o.Signer = signer
	if o.Credentials, err = credential.NewCache(signer, 0); err != nil {
		t.Fatal(err)
	}
	translate := func(at time.Time) *Snapshot {
		t.Helper()
		now = at
		s, err := Translate(m, o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	const pod1, pod2 = "shop/checkout-5c8d-x1y2z", "shop/checkout-5c8d-a9b8c"
	a := translate(testClock)
	n1, n2 := a.Node(pod1), a.Node(pod2)
	if n1 == nil || n2 == nil || n1.ID == n2.ID {
		t.Fatalf("nodes %v %v", n1, n2)
	}
	if n1.Version != n2.Version {
		t.Errorf("the Pods of one mount have versions %s and %s", n1.Version, n2.Version)
	}
	m1, m2 := n1.Messages(), n2.Messages()
	if len(m1) != len(m2) || len(m1) == 0 {
		t.Fatalf("%d and %d resources", len(m1), len(m2))
	}
	for i := range m1 {
		if !proto.Equal(m1[i], m2[i]) {
			t.Errorf("resource %d differs between the Pods of one mount", i)
		}
	}
	if want := testClock.Add(DefaultCredentialTTL); !a.Expires.Equal(want) {
		t.Errorf("expires %v, want %v", a.Expires, want)
	}

	tests := []struct {
		name    string
		at      time.Time
		same    bool
		expires time.Time
	}{
		{name: "credentials fresh", at: testClock.Add(DefaultCredentialTTL / 4), same: true, expires: testClock.Add(DefaultCredentialTTL)},
		{name: "credentials due", at: testClock.Add(DefaultCredentialTTL / 2), expires: testClock.Add(DefaultCredentialTTL * 3 / 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := translate(tt.at)
			if got := b.Node(pod1).Version == a.Node(pod1).Version; got != tt.same {
				t.Errorf("carrier kept its version: %v, want %v", got, tt.same)
			}
			if b.Node(DefaultStowawayNodeID).Version != a.Node(DefaultStowawayNodeID).Version {
				t.Error("stowaway's version changed with the credentials")
			}
			if !b.Expires.Equal(tt.expires) {
				t.Errorf("expires %v, want %v", b.Expires, tt.expires)
			}
		})
	}

	_, other, _ := ed25519.GenerateKey(nil)
	otherSigner, _ := credential.NewSigner(other, nil)
	o.Credentials, _ = credential.NewCache(otherSigner, 0)
	if _, err := Translate(m, o); err == nil {
		t.Error("translated with a credential cache of another signer")
	}
}

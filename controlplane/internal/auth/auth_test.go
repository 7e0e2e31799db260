package auth

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestPolicy(t *testing.T) {
	p := Policy{StowawayNodeID: "gefyra/stowaway", StowawayNamespace: "gefyra", StowawayServiceAccount: "gefyra-stowaway"}
	carrier := Identity{Username: "system:serviceaccount:shop:web", Namespace: "shop", ServiceAccount: "web", Pod: "web-1"}
	stowaway := Identity{Username: "system:serviceaccount:gefyra:gefyra-stowaway", Namespace: "gefyra", ServiceAccount: "gefyra-stowaway"}
	podNamedStowaway := Identity{Username: "system:serviceaccount:gefyra:default", Namespace: "gefyra", ServiceAccount: "default", Pod: "stowaway"}
	tests := []struct {
		name string
		id   Identity
		node string
		ok   bool
	}{
		{name: "carrier as its Pod", id: carrier, node: "shop/web-1", ok: true},
		{name: "carrier as another Pod", id: carrier, node: "shop/web-2"},
		{name: "carrier in another namespace", id: carrier, node: "other/web-1"},
		{name: "carrier as stowaway", id: carrier, node: "gefyra/stowaway"},
		{name: "Pod named like stowaway's node", id: podNamedStowaway, node: "gefyra/stowaway"},
		{name: "stowaway", id: stowaway, node: "gefyra/stowaway", ok: true},
		{name: "stowaway as a Pod", id: stowaway, node: "gefyra/web-1"},
		{name: "token bound to no Pod", id: Identity{Username: "system:serviceaccount:shop:web", Namespace: "shop", ServiceAccount: "web"}, node: "shop/web-1"},
		{name: "a user", id: Identity{Username: "alice"}, node: "shop/web-1"},
		{name: "no slash", id: carrier, node: "web-1"},
		{name: "two slashes", id: carrier, node: "shop/web-1/x"},
		{name: "empty pod", id: carrier, node: "shop/"},
		{name: "empty", id: carrier, node: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Authorize(tt.id, tt.node)
			if tt.ok != (err == nil) {
				t.Fatalf("Authorize(%v, %q) = %v, want ok %v", tt.id, tt.node, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrForbidden) {
				t.Fatalf("error %v does not wrap ErrForbidden", err)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name string
		md   metadata.MD
		want string
	}{
		{name: "bearer", md: metadata.Pairs("authorization", "Bearer abc.def"), want: "abc.def"},
		{name: "lower-case scheme", md: metadata.Pairs("authorization", "bearer abc"), want: "abc"},
		{name: "basic", md: metadata.Pairs("authorization", "Basic abc")},
		{name: "no scheme", md: metadata.Pairs("authorization", "abc")},
		{name: "two headers", md: metadata.Pairs("authorization", "Bearer a", "authorization", "Bearer b")},
		{name: "none", md: metadata.MD{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(context.Background(), tt.md)
			if got := BearerToken(ctx); got != tt.want {
				t.Fatalf("BearerToken = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEmptyTokenIsUnauthenticated(t *testing.T) {
	// No API call is made for a missing token (Client is nil).
	_, err := (&Reviewer{}).Authenticate(context.Background(), "")
	if !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("error %v, want ErrUnauthenticated", err)
	}
}

func FuzzBearerToken(f *testing.F) {
	f.Add("Bearer abc.def.ghi")
	f.Add("bearer  x ")
	f.Add("Basic x")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", v))
		tok := BearerToken(ctx)
		if tok != "" && !strings.Contains(v, tok) {
			t.Fatalf("token %q is not part of %q", tok, v)
		}
		if tok != strings.TrimSpace(tok) {
			t.Fatalf("token %q has surrounding space", tok)
		}
	})
}

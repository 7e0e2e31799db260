// Package auth authenticates the data plane's xDS streams and decides
// which node IDs an identity may claim.
//
// Every stream presents a Kubernetes ServiceAccount token as gRPC metadata
// "authorization: Bearer <token>"; the API server checks it (TokenReview).
//
//   - Carrier runs in the workload's own Pod, with the workload's
//     ServiceAccount, and a live Pod cannot be given a new volume: it
//     presents the Pod's automounted token
//     (/var/run/secrets/kubernetes.io/serviceaccount/token). That token has
//     the API server's audience and is bound to the Pod: the review names
//     the Pod (user.extra "authentication.kubernetes.io/pod-name"), and
//     its namespace is the ServiceAccount's. Carrier may be node
//     "namespace/pod" of exactly that Pod. A workload that sets
//     automountServiceAccountToken: false has no token, so carrier cannot
//     authenticate and its bridges never become DataPlaneReady; mount such
//     workloads only after allowing the token.
//   - Stowaway has its own ServiceAccount and a projected token with the
//     audience of Reviewer.Audiences (e.g. "gefyra-xds"), so the token is
//     good for nothing but the control plane. It may be only the stowaway
//     node ID, and that node ID is reserved for it: no Pod's identity can
//     claim it.
//
// A token is first reviewed for the API server's own audience, then for
// Reviewer.Audiences; results are cached for a short while, so a burst of
// reconnects costs few reviews. Streams that are open are not reviewed
// again: the token is checked when a stream starts.
package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ExtraPodName is the TokenReview user extra that names a token's Pod.
const ExtraPodName = "authentication.kubernetes.io/pod-name"

// Identity is who a token belongs to.
type Identity struct {
	// Username is the Kubernetes user, e.g.
	// "system:serviceaccount:ns:name".
	Username string
	// Namespace and ServiceAccount are set for ServiceAccount tokens.
	Namespace, ServiceAccount string
	// Pod is the Pod a bound token belongs to ("" if not bound).
	Pod string
	// Audiences the API server accepted the token for (empty: its own).
	Audiences []string
}

// String names the identity for logs and errors.
func (id Identity) String() string {
	if id.Pod != "" {
		return id.Username + " (Pod " + id.Namespace + "/" + id.Pod + ")"
	}
	return id.Username
}

// Errors Authenticate returns (wrapped).
var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("permission denied")
)

// Reviewer authenticates tokens with TokenReviews.
type Reviewer struct {
	// Client creates TokenReviews (needs create on
	// authentication.k8s.io/tokenreviews).
	Client client.Client
	// Audiences a token may have besides the API server's own, e.g.
	// "gefyra-xds" for stowaway's projected token.
	Audiences []string
	// CacheTTL bounds how long a review's answer is reused (default 30s;
	// negative: no cache).
	CacheTTL time.Duration

	mu    sync.Mutex // guards cache
	cache map[[32]byte]cached
}

type cached struct {
	id      Identity
	err     error
	expires time.Time
}

// Authenticate reviews token. The error wraps ErrUnauthenticated when the
// API server refuses the token; any other error is the API server's.
func (r *Reviewer) Authenticate(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	ttl := r.CacheTTL
	if ttl == 0 {
		ttl = 30 * time.Second
	}
	if ttl > 0 {
		r.mu.Lock()
		c, ok := r.cache[key]
		r.mu.Unlock()
		if ok && now.Before(c.expires) {
			return c.id, c.err
		}
	}
	id, err := r.review(ctx, token, nil)
	if errors.Is(err, ErrUnauthenticated) && len(r.Audiences) > 0 {
		id, err = r.review(ctx, token, r.Audiences)
	}
	if ttl > 0 && (err == nil || errors.Is(err, ErrUnauthenticated)) {
		r.mu.Lock()
		if r.cache == nil {
			r.cache = map[[32]byte]cached{}
		}
		for k, c := range r.cache {
			if !now.Before(c.expires) {
				delete(r.cache, k)
			}
		}
		r.cache[key] = cached{id: id, err: err, expires: now.Add(ttl)}
		r.mu.Unlock()
	}
	return id, err
}

func (r *Reviewer) review(ctx context.Context, token string, audiences []string) (Identity, error) {
	tr := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences}}
	if err := r.Client.Create(ctx, tr); err != nil {
		return Identity{}, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		msg := tr.Status.Error
		if msg == "" {
			msg = "token not accepted"
		}
		return Identity{}, fmt.Errorf("%w: %s", ErrUnauthenticated, msg)
	}
	u := tr.Status.User
	id := Identity{Username: u.Username, Audiences: tr.Status.Audiences}
	if rest, ok := strings.CutPrefix(u.Username, "system:serviceaccount:"); ok {
		id.Namespace, id.ServiceAccount, _ = strings.Cut(rest, ":")
	}
	if pods := u.Extra[ExtraPodName]; len(pods) == 1 {
		id.Pod = pods[0]
	}
	return id, nil
}

// Policy says which node IDs an identity may claim.
type Policy struct {
	// StowawayNodeID is reserved for the ServiceAccount StowawayNamespace/
	// StowawayServiceAccount.
	StowawayNodeID                            string
	StowawayNamespace, StowawayServiceAccount string
}

// Authorize returns nil if id may be node nodeID, else an error wrapping
// ErrForbidden.
func (p Policy) Authorize(id Identity, nodeID string) error {
	if nodeID == p.StowawayNodeID {
		if id.Namespace == p.StowawayNamespace && id.ServiceAccount == p.StowawayServiceAccount {
			return nil
		}
		return fmt.Errorf("%w: node %s is stowaway's; %s is not ServiceAccount %s/%s", ErrForbidden, nodeID, id, p.StowawayNamespace, p.StowawayServiceAccount)
	}
	ns, pod, ok := strings.Cut(nodeID, "/")
	if !ok || ns == "" || pod == "" || strings.Contains(pod, "/") {
		return fmt.Errorf("%w: node ID %q is not namespace/pod", ErrForbidden, nodeID)
	}
	if id.Pod == "" || id.Namespace == "" {
		return fmt.Errorf("%w: %s is not a Pod-bound ServiceAccount token, so it cannot be node %s", ErrForbidden, id, nodeID)
	}
	if id.Namespace != ns || id.Pod != pod {
		return fmt.Errorf("%w: %s may not be node %s", ErrForbidden, id, nodeID)
	}
	return nil
}

type ctxKey struct{}

// FromContext returns the identity StreamInterceptor put in ctx.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// Authenticator authenticates a bearer token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// StreamInterceptor refuses a stream without a good bearer token
// (codes.Unauthenticated; codes.Unavailable when the API server cannot be
// asked) and passes the identity on in the stream's context.
func StreamInterceptor(a Authenticator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		id, err := a.Authenticate(ss.Context(), BearerToken(ss.Context()))
		switch {
		case errors.Is(err, ErrUnauthenticated):
			return status.Error(codes.Unauthenticated, err.Error())
		case err != nil:
			return status.Error(codes.Unavailable, err.Error())
		}
		return handler(srv, &identityStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), ctxKey{}, id)})
	}
}

// BearerToken is the token of the incoming "authorization: Bearer" metadata,
// or "".
func BearerToken(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return ""
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

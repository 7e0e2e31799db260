// Package deploy holds the demo's Kubernetes manifests as kustomize
// directories: base/ mirrors the tutorial (the backend with its oauth2-proxy
// sidecar, Keycloak with the realm for it), local/ is the variant for the
// project's own test cluster (the demo's OIDC provider instead of Keycloak,
// fixed ClusterIPs, images built by demo/images.sh). The package's tests
// render both and check them.
package deploy

// Package demo is the tutorial's workload in Go: the backend with its bug
// (app), its dev loop (devloop), a real OIDC provider (oidc), the manifests
// (deploy), the browser-style client (browser) and the story that ties them
// together (story). This package itself only holds the login test: the real
// OIDC provider, the real oauth2-proxy and the backend on loopback.
package demo

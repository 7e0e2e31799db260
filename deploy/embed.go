// Package deploy holds gefyra's cluster add-on as plain manifests (a
// kustomization: `kubectl apply -k deploy/`) and embeds them, so that
// `gefyra up --install` applies the very same files.
package deploy

import "embed"

// FS holds kustomization.yaml and every manifest it names (the optional
// monitoring component is not part of the default install).
//
//go:embed *.yaml crds/*.yaml rbac/*.yaml
var FS embed.FS

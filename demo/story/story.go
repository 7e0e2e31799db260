package story

import "gefyra.dev/gefyra/internal/testworld"

// Steps is the tutorial's story on the test world, as far as it goes: the
// workload in the cluster, the login, the bug. The bridge's steps (gefyra
// up, run, bridge, the fixed answer through the bridge, down, the 500
// again) follow the bug as more steps.
func Steps(d *Demo) []Step {
	return []Step{
		{Title: "Building the demo's images FROM scratch (demo/images.sh)", Run: d.BuildImages},
		{Title: "Loading them into the cluster's containerd", Run: d.LoadImages},
		{Title: "Deploying the tutorial's workload: kubectl apply -k demo/deploy/local", Run: d.Deploy},
		{Title: "Waiting for the OIDC provider and the oauth2-demo Pod (the backend and its oauth2-proxy sidecar)", Run: func(t testworld.T) {
			d.WaitReady(t)
			d.Show(t)
		}},
		{Title: "Logging in as " + User + " through oauth2-proxy and the OIDC provider", Run: func(t testworld.T) {
			d.Login(t)
			d.ExpectHello(t)
		}},
		{Title: "Asking for item 123: the tutorial's bug", Run: func(t testworld.T) { d.ExpectBug(t) }},
		{Title: "Next in the tutorial: gefyra up, gefyra run, gefyra bridge and gefyra down. This demo does not play them yet: the story ends here."},
	}
}

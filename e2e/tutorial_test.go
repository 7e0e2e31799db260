//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"gefyra.dev/gefyra/demo/story"
	"gefyra.dev/gefyra/internal/ociimage"
	"gefyra.dev/gefyra/internal/testworld"
)

// TestTutorial replays the tutorial as `make demo` tells it (story.Steps):
// the workload with its bug, the login as john@gefyra.dev, the add-on from
// deploy/, then the tutorial's commands run by a real gefyra binary as
// separate invocations (gefyra up; gefyra run with the development image
// and the source mounted; gefyra bridge with the tutorial's flags), the bug
// seen in the local container, the one-line fix picked up by the hot
// reload, /items/123 answered through oauth2-proxy and the bridge, and
// gefyra down bringing back the original image and the bug. While the fix
// is bridged, a second local container is bridged to a second workload at
// the same time. Every step's check fails the test; the steps share this
// test's cleanups.
func TestTutorial(t *testing.T) {
	w := testworld.Get(t)
	d := story.New(w, repoRoot(t))
	u, err := story.NewTutorial(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range u.Steps(secondBridge(t, w, u)) {
		t.Logf("==> %s", s.Title)
		if s.Run != nil {
			s.Run(t)
		}
	}
}

// secondBridge is a step of TestTutorial: a second workload (the test
// world's server, naming itself "cluster") in a namespace of its own, a
// second local container (the same server, naming itself "local") started
// with gefyra run, and a second bridge; both bridges carry traffic at
// once; unbridge gives the workload its own answer back.
func secondBridge(t *testing.T, w *testworld.World, u *story.Tutorial) story.Step {
	const image = worldServerImage + ":tutorial"
	bin := testworld.GoBuild(t, "gefyra.dev/gefyra/world/testimages/server")
	tar := testworld.BuildImage(t, ociimage.Spec{
		Tag:        image,
		Files:      []ociimage.File{{Src: bin, Dst: "/server"}},
		Entrypoint: []string{"/server"},
		Cmd:        []string{"serve"},
	})
	return story.Step{Title: "A second local container, bridged to a second workload at the same time", Run: func(tt testworld.T) {
		docker := dockerCLI(t)
		if out, err := exec.Command(docker, "load", "-i", tar).CombinedOutput(); err != nil {
			t.Fatalf("docker load: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command(docker, "rmi", image).Run() })
		w.LoadImages(t, tar)
		ns := w.Namespace(t, "second")
		w.Apply(t, fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: server
        image: %[2]s
        imagePullPolicy: Never
        env: [{name: NAME, value: cluster}]
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: %[1]s}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
`, ns, image))
		w.WaitDeploymentAvailable(t, ns, "echo", 2*time.Minute)
		addr := w.ServiceAddr(t, ns, "echo", 80)
		c := w.HTTPClient()
		testworld.WaitFor(t, "the second workload at "+addr, time.Minute, answers(c, addr, info{Name: "cluster"}))

		out := u.Gefyra(t, "run", "-i", image, "-N", "second-local", "-n", ns, "--env", "NAME=local")
		if !strings.Contains(out, "is running at ") {
			t.Errorf("gefyra run did not print the container's address: %s", out)
		}
		u.Gefyra(t, "bridge", "-N", "second-local", "-n", ns, "--deployment", "echo", "--port", "8080:8080", "--container-name", "server", "-I", "second")
		if got, err := getInfo(t.Context(), c, addr); err != nil || got.Name != "local" {
			t.Fatalf("the second workload through its bridge answered %+v, %v; want the local container", got, err)
		}
		u.ExpectFixed(t) // the first bridge still carries the tutorial's traffic
		for range 20 {
			if got, err := getInfo(t.Context(), c, addr); err != nil || got.Name != "local" {
				t.Fatalf("the second workload through its bridge answered %+v, %v; want the local container", got, err)
			}
		}
		u.Gefyra(t, "list")
		u.Gefyra(t, "unbridge", "-I", "second")
		testworld.WaitFor(t, "the second workload's own answer again", time.Minute, answers(c, addr, info{Name: "cluster"}))
		// The restored container's first probes may take the Pod out of
		// the Service for a moment: its own /healthz answers once kube-proxy
		// has it back.
		testworld.WaitFor(t, "the second workload's /healthz after unbridge", time.Minute, testworld.Answers(c, "http://"+addr+"/healthz"))
	}}
}

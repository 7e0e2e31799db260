//go:build e2e

// Package e2e holds the end-to-end tests: they run against the test world
// (world/world.sh up) and the machine's Docker, never against mocks.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"gefyra.dev/gefyra/internal/ociimage"
	"gefyra.dev/gefyra/internal/testworld"
)

const worldServerImage = "gefyra.dev/world-test/server"

// duoManifest is a Pod with two containers of the test server (an app and a
// sidecar) whose probes are HTTP, TCP and exec, and a NodePort Service for
// both (and the app's UDP echo).
func duoManifest(ns string) string {
	return fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: duo
  namespace: %[1]s
  labels: {app: duo}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: %[2]s:v1
    imagePullPolicy: IfNotPresent
    args: [serve]
    env: [{name: NAME, value: app}, {name: LISTEN, value: ":8080"}, {name: UDP_LISTEN, value: ":8082"}]
    ports: [{containerPort: 8080}, {containerPort: 8082, protocol: UDP}]
    startupProbe:
      exec: {command: [/server, probe, "http://127.0.0.1:8080/healthz"]}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 2
  - name: sidecar
    image: %[2]s:v1
    imagePullPolicy: IfNotPresent
    args: [serve]
    env: [{name: NAME, value: sidecar}, {name: LISTEN, value: ":8081"}]
    ports: [{containerPort: 8081}]
    readinessProbe:
      tcpSocket: {port: 8081}
      periodSeconds: 1
    livenessProbe:
      exec: {command: [/server, probe, "tcp://127.0.0.1:8081"]}
      periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: duo
  namespace: %[1]s
spec:
  type: NodePort
  selector: {app: duo}
  ports:
  - {name: app, port: 80, targetPort: 8080}
  - {name: sidecar, port: 81, targetPort: 8081}
  - {name: echo, port: 82, targetPort: 8082, protocol: UDP}
`, ns, worldServerImage)
}

type info struct {
	Name, Version string
}

// getInfo asks the test server at addr who it is.
func getInfo(ctx context.Context, c *http.Client, addr string) (info, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return info{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return info{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return info{}, fmt.Errorf("GET %s: %s", addr, resp.Status)
	}
	var in info
	return in, json.NewDecoder(resp.Body).Decode(&in)
}

// answers is a condition: the server at addr answers as want.
func answers(c *http.Client, addr string, want info) testworld.Condition {
	return func(ctx context.Context) (bool, string, error) {
		got, err := getInfo(ctx, c, addr)
		if err != nil {
			return false, err.Error(), nil
		}
		return got == want, fmt.Sprintf("answered %+v", got), nil
	}
}

func TestWorld(t *testing.T) {
	w := testworld.Get(t)
	bin := testworld.GoBuild(t, "gefyra.dev/gefyra/world/testimages/server")
	image := func(version string) string {
		return testworld.BuildImage(t, ociimage.Spec{
			Tag:        worldServerImage + ":" + version,
			Files:      []ociimage.File{{Src: bin, Dst: "/server"}},
			Entrypoint: []string{"/server"},
			Env:        []string{"VERSION=" + version},
		})
	}
	v1, v2 := image("v1"), image("v2")
	w.LoadImages(t, v1, v2)

	ns := w.Namespace(t, "world")
	w.Apply(t, duoManifest(ns))
	pod := w.WaitPodReady(t, ns, "duo", 2*time.Minute)
	podIP := pod.Status.PodIP
	c := w.HTTPClient()

	t.Run("ClusterIP answers from the host", func(t *testing.T) {
		testworld.WaitFor(t, "app behind its ClusterIP", 30*time.Second,
			answers(c, w.ServiceAddr(t, ns, "duo", 80), info{"app", "v1"}))
		testworld.WaitFor(t, "sidecar behind its ClusterIP", 30*time.Second,
			answers(c, w.ServiceAddr(t, ns, "duo", 81), info{"sidecar", "v1"}))
	})

	t.Run("NodePort answers from the host over TCP and UDP", func(t *testing.T) {
		testworld.WaitFor(t, "app behind its NodePort", 30*time.Second,
			answers(c, w.NodePortAddr(t, ns, "duo", 80, corev1.ProtocolTCP), info{"app", "v1"}))
		addr := w.NodePortAddr(t, ns, "duo", 82, corev1.ProtocolUDP)
		testworld.WaitFor(t, "UDP echo behind its NodePort", 30*time.Second, func(ctx context.Context) (bool, string, error) {
			got, err := udpEcho(ctx, w, addr)
			if err != nil {
				return false, err.Error(), nil
			}
			return got == "app:ping", "echoed " + got, nil
		})
	})

	t.Run("readiness follows the HTTP probe", func(t *testing.T) {
		app := net.JoinHostPort(podIP, "8080")
		setReady := func(ok bool) {
			t.Helper()
			resp, err := c.Post(fmt.Sprintf("http://%s/readiness?ok=%t", app, ok), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		setReady(false)
		w.WaitPodCondition(t, ns, "duo", "not Ready after /healthz fails", time.Minute, func(p *corev1.Pod) bool { return !testworld.PodReady(p) })
		setReady(true)
		w.WaitPodReady(t, ns, "duo", time.Minute)
	})

	t.Run("kubectl exec and logs reach the containers", func(t *testing.T) {
		out := w.Kubectl(t, "exec", "-n", ns, "duo", "-c", "app", "--", "/server", "probe", "http://127.0.0.1:8081/")
		if !strings.Contains(out, `"name":"sidecar"`) {
			t.Errorf("exec in app, GET sidecar over the Pod's loopback: %q", out)
		}
		// Pod -> ClusterIP -> the same Pod (hairpin through kube-proxy and
		// the bridge), and the API server's ClusterIP from inside a Pod.
		svc := "http://" + w.ServiceAddr(t, ns, "duo", 81) + "/"
		out = w.Kubectl(t, "exec", "-n", ns, "duo", "-c", "app", "--", "/server", "probe", svc)
		if !strings.Contains(out, `"name":"sidecar"`) {
			t.Errorf("exec in app, GET %s: %q", svc, out)
		}
		w.Kubectl(t, "exec", "-n", ns, "duo", "-c", "app", "--", "/server", "probe", "tcp://"+w.ServiceAddr(t, "default", "kubernetes", 443))
		logs := w.Kubectl(t, "logs", "-n", ns, "duo", "-c", "sidecar")
		if !strings.Contains(logs, "sidecar v1 listening") {
			t.Errorf("sidecar logs: %q", logs)
		}
	})

	t.Run("ServiceAccount tokens are issued and reviewed", func(t *testing.T) {
		ctx := context.Background()
		const audience = "gefyra-world-test"
		expiry := int64(600)
		tr, err := w.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "default", &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &expiry},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenRequest: %v", err)
		}
		tests := []struct {
			name      string
			audience  string
			wantAuthn bool
		}{
			{name: "its audience", audience: audience, wantAuthn: true},
			{name: "another audience", audience: "someone-else", wantAuthn: false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rev, err := w.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
					Spec: authnv1.TokenReviewSpec{Token: tr.Status.Token, Audiences: []string{tt.audience}},
				}, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("TokenReview: %v", err)
				}
				if rev.Status.Authenticated != tt.wantAuthn {
					t.Fatalf("authenticated = %t (%s), want %t", rev.Status.Authenticated, rev.Status.Error, tt.wantAuthn)
				}
				if want := "system:serviceaccount:" + ns + ":default"; tt.wantAuthn && rev.Status.User.Username != want {
					t.Errorf("user %q, want %q", rev.Status.User.Username, want)
				}
			})
		}
	})

	t.Run("a Docker container reaches the NodePort over TCP and UDP", func(t *testing.T) {
		docker := dockerCLI(t)
		if out, err := exec.Command(docker, "load", "-i", v1).CombinedOutput(); err != nil {
			t.Fatalf("docker load: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command(docker, "rmi", worldServerImage+":v1").Run() })
		for _, addr := range []string{
			"http://" + w.NodePortAddr(t, ns, "duo", 80, corev1.ProtocolTCP) + "/",
			"udp://" + w.NodePortAddr(t, ns, "duo", 82, corev1.ProtocolUDP),
		} {
			out, err := exec.Command(docker, "run", "--rm", "--network", "bridge", worldServerImage+":v1", "probe", addr).CombinedOutput()
			if err != nil {
				t.Errorf("from a container on Docker's bridge, %s: %v: %s", addr, err, out)
				continue
			}
			if !strings.Contains(string(out), "app") {
				t.Errorf("from a container on Docker's bridge, %s answered %q", addr, out)
			}
		}
	})

	t.Run("patching one container's image restarts only that container", func(t *testing.T) {
		ctx := context.Background()
		before, err := w.Client.CoreV1().Pods(ns).Get(ctx, "duo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		app0, _ := testworld.ContainerStatus(before, "app")
		side0, _ := testworld.ContainerStatus(before, "sidecar")
		patch := fmt.Sprintf(`{"spec":{"containers":[{"name":"app","image":"%s:v2"}]}}`, worldServerImage)
		if _, err := w.Client.CoreV1().Pods(ns).Patch(ctx, "duo", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("patching the image: %v", err)
		}
		w.WaitPodCondition(t, ns, "duo", "app restarted on v2", 2*time.Minute, func(p *corev1.Pod) bool {
			app, ok := testworld.ContainerStatus(p, "app")
			return ok && app.ContainerID != app0.ContainerID && strings.HasSuffix(app.Image, ":v2")
		})
		// Right after the restart kubelet may still report the old probe
		// results for a moment; the Service answering from v2 is the proof
		// that the new container passed its probes.
		testworld.WaitFor(t, "app v2 behind the ClusterIP", time.Minute,
			answers(c, w.ServiceAddr(t, ns, "duo", 80), info{"app", "v2"}))
		after := w.WaitPodReady(t, ns, "duo", time.Minute)
		app1, _ := testworld.ContainerStatus(after, "app")
		side1, _ := testworld.ContainerStatus(after, "sidecar")
		if app1.RestartCount != app0.RestartCount+1 {
			t.Errorf("app restarts: %d -> %d, want one more", app0.RestartCount, app1.RestartCount)
		}
		if side1.RestartCount != side0.RestartCount || side1.ContainerID != side0.ContainerID {
			t.Errorf("sidecar changed: restarts %d -> %d, container %s -> %s", side0.RestartCount, side1.RestartCount, side0.ContainerID, side1.ContainerID)
		}
		if after.Status.PodIP != before.Status.PodIP || after.UID != before.UID {
			t.Errorf("the Pod changed: IP %s -> %s, UID %s -> %s", before.Status.PodIP, after.Status.PodIP, before.UID, after.UID)
		}
		// The restarted app's failed probes took the Pod out of the
		// Service's endpoints for a moment, and kube-proxy puts it back
		// some time after kubelet reports it Ready: wait for the sidecar,
		// still v1 (its container was not touched, as checked above).
		testworld.WaitFor(t, "sidecar v1 behind the ClusterIP after the patch", time.Minute,
			answers(c, w.ServiceAddr(t, ns, "duo", 81), info{"sidecar", "v1"}))
	})
}

// udpEcho sends one datagram to addr and returns the answer.
func udpEcho(ctx context.Context, w *testworld.World, addr string) (string, error) {
	conn, err := w.Dialer()(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// dockerCLI returns the docker command, failing the test when the Docker
// daemon does not answer.
func dockerCLI(t *testing.T) string {
	t.Helper()
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Fatalf("no docker CLI: %v (install docker.io)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		t.Fatalf("the Docker daemon does not answer: %v: %s (start dockerd)", err, out)
	}
	return docker
}

package operator

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNormalizeImage(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "own registry", in: "gefyra.dev/carrier:0.1.0", want: "gefyra.dev/carrier:0.1.0"},
		{name: "hub short name", in: "carrier:0.1.0", want: "carrier:0.1.0"},
		{name: "hub library", in: "docker.io/library/carrier:0.1.0", want: "carrier:0.1.0"},
		{name: "index library", in: "index.docker.io/library/carrier:0.1.0", want: "carrier:0.1.0"},
		{name: "hub user", in: "docker.io/gefyra/carrier:0.1.0", want: "gefyra/carrier:0.1.0"},
		{name: "library without registry", in: "library/carrier:0.1.0", want: "carrier:0.1.0"},
		{name: "implicit latest", in: "docker.io/library/carrier", want: "carrier:latest"},
		{name: "registry port is no tag", in: "localhost:5000/carrier", want: "localhost:5000/carrier:latest"},
		{name: "digest kept", in: "gefyra.dev/carrier@sha256:abc", want: "gefyra.dev/carrier@sha256:abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := normalizeImage(tt.in); got != tt.want {
				t.Errorf("normalizeImage(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCarrierStarting(t *testing.T) {
	o := &Operator{cfg: Config{CarrierImage: "carrier:0.1.0"}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	runningSince := func(d time.Duration) corev1.ContainerState {
		return corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(now.Add(-d))}}
	}
	running := runningSince(time.Minute)
	yes, no := true, false
	startup := &corev1.Probe{PeriodSeconds: 3}
	tests := []struct {
		name    string
		startup *corev1.Probe // of container app
		status  []corev1.ContainerStatus
		want    string        // a substring of the reason; "" means carrier is up
		wait    time.Duration // when to look again
	}{
		{name: "no status yet", want: "Pod p: container app has not started yet"},
		{name: "other container only", status: []corev1.ContainerStatus{{Name: "sidecar", Image: "carrier:0.1.0", State: running, Ready: true}},
			want: "container app has not started yet"},
		{name: "old container still runs", status: []corev1.ContainerStatus{{Name: "app", Image: "demo/app:1.0", State: running, Ready: true}},
			want: "Pod p: container app still runs demo/app:1.0; kubelet restarts it with carrier"},
		{name: "waiting", status: []corev1.ContainerStatus{{Name: "app", Image: "carrier:0.1.0",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 10s"}}}},
			want: "carrier in container app is waiting (CrashLoopBackOff: back-off 10s)"},
		{name: "terminated", status: []corev1.ContainerStatus{{Name: "app", Image: "carrier:0.1.0",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 2}}}},
			want: "terminated (Error, exit code 2)"},
		{name: "running, probes pending", status: []corev1.ContainerStatus{{Name: "app", Image: "carrier:0.1.0", State: running}},
			want: "carrier runs in container app, which is not ready yet"},
		{name: "not started", startup: startup, status: []corev1.ContainerStatus{{Name: "app", Image: "carrier:0.1.0", State: running, Started: &no, Ready: true}},
			want: "whose startup probe has not passed yet"},
		{name: "ready, as the runtime spells it", status: []corev1.ContainerStatus{{Name: "app", Image: "docker.io/library/carrier:0.1.0", State: running, Ready: true}}},
		{name: "ready", status: []corev1.ContainerStatus{{Name: "app", Image: "carrier:0.1.0", State: running, Started: &yes, Ready: true}}},
		{name: "ready at once without a startup probe", status: []corev1.ContainerStatus{{Name: "app", Image: "carrier:0.1.0", State: runningSince(0), Started: &yes, Ready: true}}},
		// kubelet carries "started" over to the restarted container until
		// its startup prober ticks: not trusted within the probe's period.
		{name: "ready before the startup prober's turn", startup: startup,
			status: []corev1.ContainerStatus{{Name: "app", Image: "carrier:0.1.0", State: runningSince(time.Second), Started: &yes, Ready: true}},
			want:   "waiting for kubelet to run its startup probe", wait: 3*time.Second + startupSettle - time.Second},
		{name: "ready after the startup prober's turn", startup: startup,
			status: []corev1.ContainerStatus{{Name: "app", Image: "carrier:0.1.0", State: runningSince(3*time.Second + startupSettle), Started: &yes, Ready: true}}},
		{name: "default startup period", startup: &corev1.Probe{},
			status: []corev1.ContainerStatus{{Name: "app", Image: "carrier:0.1.0", State: runningSince(5 * time.Second), Started: &yes, Ready: true}},
			want:   "startup probe", wait: 10*time.Second + startupSettle - 5*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
				Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app", StartupProbe: tt.startup}}},
				Status: corev1.PodStatus{ContainerStatuses: tt.status}}
			got, wait := o.carrierStarting(p, "app", now)
			if tt.want == "" && got != "" {
				t.Fatalf("carrierStarting = %q, want carrier up", got)
			}
			if tt.want != "" && !strings.Contains(got, tt.want) {
				t.Fatalf("carrierStarting = %q, want it to say %q", got, tt.want)
			}
			if wait != tt.wait {
				t.Fatalf("look again after %s, want %s", wait, tt.wait)
			}
		})
	}
}

func TestCarrierStartingByDigest(t *testing.T) {
	o := &Operator{cfg: Config{CarrierImage: "gefyra.dev/carrier@sha256:0123"}}
	p := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
		Name: "app", Image: "gefyra.dev/carrier:0.1.0", ImageID: "gefyra.dev/carrier@sha256:0123", Ready: true,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
	}}}}
	if got, _ := o.carrierStarting(p, "app", time.Now()); got != "" {
		t.Fatalf("a container running the carrier image's digest: %q", got)
	}
	p.Status.ContainerStatuses[0].ImageID = "gefyra.dev/carrier@sha256:4567"
	if got, _ := o.carrierStarting(p, "app", time.Now()); got == "" {
		t.Fatal("a container running another digest counts as carrier")
	}
}

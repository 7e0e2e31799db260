package operator

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestSwapProblems(t *testing.T) {
	exec := func(cmd ...string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: cmd}}}
	}
	fromSecret := &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}
	tests := []struct {
		name string
		c    corev1.Container
		want []string // one substring per problem; none means the swap is safe
	}{
		{name: "image defaults", c: corev1.Container{}},
		{name: "args only", c: corev1.Container{Args: []string{"--port", "8155"}}},
		{name: "bare name through the image's PATH", c: corev1.Container{Command: []string{"uvicorn", "main:app"}}},
		{name: "absolute path in the image", c: corev1.Container{Command: []string{"/app/server"}}},
		{name: "absolute path outside the image", c: corev1.Container{Command: []string{"/app/bin/server"}},
			want: []string{"container app's command /app/bin/server is not in the carrier image"}},
		{name: "bare name the image lacks", c: corev1.Container{Command: []string{"myserver"}},
			want: []string{"command myserver is not in the carrier image"}},
		{name: "relative to the working directory", c: corev1.Container{Command: []string{"./server"}, WorkingDir: "/app"}},
		{name: "relative, elsewhere", c: corev1.Container{Command: []string{"./server"}, WorkingDir: "/srv"},
			want: []string{"command ./server is not in the carrier image"}},
		{name: "the container's own PATH", c: corev1.Container{Command: []string{"python3"}, Env: []corev1.EnvVar{{Name: "PATH", Value: "/opt/venv/bin"}}},
			want: []string{"command python3 is not in the carrier image"}},
		{name: "the container's own PATH, built from another variable", c: corev1.Container{Command: []string{"python3"},
			Env: []corev1.EnvVar{{Name: "VENV", Value: "/opt/venv"}, {Name: "PATH", Value: "$(VENV)/bin:/usr/bin"}}}},
		{name: "PATH from a Secret", c: corev1.Container{Command: []string{"python3"}, Env: []corev1.EnvVar{{Name: "PATH", ValueFrom: fromSecret}}},
			want: []string{"PATH set from outside the Pod spec"}},
		{name: "PATH from a Secret, absolute command", c: corev1.Container{Command: []string{"/bin/sh"}, Env: []corev1.EnvVar{{Name: "PATH", ValueFrom: fromSecret}}}},
		{name: "command from a literal variable", c: corev1.Container{Command: []string{"$(BIN)"}, Env: []corev1.EnvVar{{Name: "BIN", Value: "/usr/bin/node"}}}},
		{name: "command from a Secret", c: corev1.Container{Command: []string{"$(BIN)"}, Env: []corev1.EnvVar{{Name: "BIN", ValueFrom: fromSecret}}},
			want: []string{"names $(BIN), which is set from outside the Pod spec"}},
		{name: "command from an undefined variable", c: corev1.Container{Command: []string{"$(NOPE)"}},
			want: []string{"command $(NOPE) is not in the carrier image"}},
		{name: "exec probes in the image", c: corev1.Container{
			StartupProbe:   exec("cat", "/tmp/started"),
			LivenessProbe:  exec("sh", "-c", "true"),
			ReadinessProbe: exec("/bin/grpc_health_probe", "-addr=:9000"),
		}},
		{name: "non-exec probes need nothing", c: corev1.Container{
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz"}}},
		}},
		{name: "every probe and hook outside the image", c: corev1.Container{
			Command:        []string{"/opt/run"},
			StartupProbe:   exec("/opt/started"),
			LivenessProbe:  exec("check-live"),
			ReadinessProbe: exec("/opt/ready"),
			Lifecycle: &corev1.Lifecycle{
				PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/opt/warm-up"}}},
				PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/opt/drain"}}},
			},
		}, want: []string{
			"command /opt/run", "startup probe command /opt/started", "liveness probe command check-live",
			"readiness probe command /opt/ready", "postStart hook command /opt/warm-up", "preStop hook command /opt/drain",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.Name = "app"
			got := swapProblems(&tt.c)
			if len(got) != len(tt.want) {
				t.Fatalf("problems %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d is %q, want it to say %q", i, got[i], w)
				}
			}
			if refusal := swapRefusal(&tt.c); (refusal == "") != (len(tt.want) == 0) {
				t.Fatalf("swapRefusal = %q with problems %q", refusal, got)
			}
		})
	}
}

package testworld

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition reports whether what a test waits for has happened, and a short
// status for the log while it has not. A non-nil error ends the wait at once.
type Condition func(ctx context.Context) (done bool, status string, err error)

// Answers is the Condition that a GET of url through c answers 200 OK; a
// refused connection or another status is waited out, with the reason as
// the status.
func Answers(c *http.Client, url string) Condition {
	return func(ctx context.Context) (bool, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, "", err
		}
		resp, err := c.Do(req)
		if err != nil {
			return false, err.Error(), nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status, nil
	}
}

// pollInterval is how often conditions are checked; progressEvery is how
// often an unchanged status is logged again.
const (
	pollInterval  = 200 * time.Millisecond
	progressEvery = 10 * time.Second
)

// poll checks cond until it is done, it fails, or ctx ends; progress gets
// each new status (and the same one again every progressEvery).
func poll(ctx context.Context, cond Condition, progress func(status string)) error {
	var last string
	var lastLog time.Time
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		done, status, err := cond(ctx)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if done {
			return nil
		}
		if status != last || time.Since(lastLog) >= progressEvery {
			progress(status)
			last, lastLog = status, time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// WaitFor waits at most timeout (or until the test's deadline, if that is
// sooner) for cond, logging its progress, and fails the test if it does not
// come true.
func WaitFor(t T, what string, timeout time.Duration, cond Condition) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if tt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := tt.Deadline(); ok {
			var c2 context.CancelFunc
			ctx, c2 = context.WithDeadline(ctx, d.Add(-5*time.Second))
			defer c2()
		}
	}
	start := time.Now()
	err := poll(ctx, cond, func(status string) {
		t.Logf("waiting for %s: %s (%s)", what, status, time.Since(start).Round(100*time.Millisecond))
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	t.Logf("%s after %s", what, time.Since(start).Round(10*time.Millisecond))
}

// WaitPodReady waits for a Pod's Ready condition and returns the Pod.
func (w *World) WaitPodReady(t T, namespace, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	return w.WaitPodCondition(t, namespace, name, "Ready", timeout, PodReady)
}

// WaitPodCondition waits until ok holds for a Pod and returns the Pod; what
// names the wait in the log.
func (w *World) WaitPodCondition(t T, namespace, name, what string, timeout time.Duration, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	WaitFor(t, "pod "+namespace+"/"+name+" "+what, timeout, func(ctx context.Context) (bool, string, error) {
		p, err := w.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "not created yet", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		pod = p
		return ok(p), PodStatus(p), nil
	})
	return pod
}

// WaitDeploymentAvailable waits until a Deployment's current generation has
// all its replicas updated and available.
func (w *World) WaitDeploymentAvailable(t T, namespace, name string, timeout time.Duration) *appsv1.Deployment {
	t.Helper()
	var dep *appsv1.Deployment
	WaitFor(t, "deployment "+namespace+"/"+name+" available", timeout, func(ctx context.Context) (bool, string, error) {
		d, err := w.Client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "not created yet", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		dep = d
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		s := d.Status
		status := fmt.Sprintf("generation %d/%d, %d updated, %d available of %d", s.ObservedGeneration, d.Generation, s.UpdatedReplicas, s.AvailableReplicas, want)
		done := s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
		return done, status, nil
	})
	return dep
}

// PodReady reports whether a Pod's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodStatus is a one-line summary of a Pod for progress logs: phase, and
// each container's state and restarts.
func PodStatus(p *corev1.Pod) string {
	parts := []string{string(p.Status.Phase)}
	for _, cs := range p.Status.ContainerStatuses {
		state := "waiting"
		switch {
		case cs.State.Running != nil:
			state = "running"
			if cs.Ready {
				state += ",ready"
			}
		case cs.State.Terminated != nil:
			state = "terminated:" + cs.State.Terminated.Reason
		case cs.State.Waiting != nil:
			state = "waiting:" + cs.State.Waiting.Reason
		}
		parts = append(parts, fmt.Sprintf("%s=%s(restarts %d)", cs.Name, state, cs.RestartCount))
	}
	return strings.Join(parts, " ")
}

// ContainerStatus returns the status of one container of a Pod.
func ContainerStatus(p *corev1.Pod, container string) (corev1.ContainerStatus, bool) {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == container {
			return cs, true
		}
	}
	return corev1.ContainerStatus{}, false
}

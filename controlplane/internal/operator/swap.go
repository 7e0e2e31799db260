package operator

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"gefyra.dev/gefyra/internal/carrierimage"
	"gefyra.dev/gefyra/internal/expansion"
)

// ReasonNotInCarrierImage is the mount's Ready reason when a command of the
// target container would not start in the carrier image.
const ReasonNotInCarrierImage = "CommandNotInCarrierImage"

// swapProblems lists what would break if c's image were swapped for
// carrier's: the runtime resolves c's command[0], and kubelet the
// command[0] of c's exec probes and exec hooks, in the image's filesystem,
// and fails the container (or its probes, or its start) where nothing is
// there. A container that sets only args runs carrier's entrypoint and
// needs nothing.
//
// PATH is the container's own where its env sets one literally, else the
// image's. Variables set through envFrom are not looked at: they are
// assumed not to set PATH or appear in a command.
func swapProblems(c *corev1.Container) []string {
	static := map[string]string{}
	dynamic := map[string]bool{} // set from a Secret, ConfigMap or field: unknown here
	lookup := func(name string) (string, bool) { v, ok := static[name]; return v, ok }
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			dynamic[e.Name] = true
			delete(static, e.Name)
			continue
		}
		// kubelet expands an env value with the variables before it.
		static[e.Name] = expansion.Expand(e.Value, lookup)
		delete(dynamic, e.Name)
	}
	pathEnv, pathKnown := carrierimage.PATH, !dynamic["PATH"]
	if v, ok := static["PATH"]; ok {
		pathEnv = v
	}
	workdir := c.WorkingDir // "" is the carrier image's working directory, /

	var problems []string
	check := func(what, command string, dynamicVars map[string]bool) {
		if !strings.Contains(command, "/") && !pathKnown {
			problems = append(problems, fmt.Sprintf("container %s's %s %s is looked up in a PATH set from outside the Pod spec; cannot tell whether the carrier image has it", c.Name, what, command))
			return
		}
		if dynamicVars != nil && strings.Contains(command, "$(") {
			for _, name := range slices.Sorted(maps.Keys(dynamicVars)) {
				if strings.Contains(command, "$("+name+")") {
					problems = append(problems, fmt.Sprintf("container %s's %s %s names $(%s), which is set from outside the Pod spec; cannot tell whether the carrier image has it", c.Name, what, command, name))
					return
				}
			}
		}
		if _, ok := carrierimage.Resolve(command, pathEnv, workdir); !ok {
			problems = append(problems, fmt.Sprintf("container %s's %s %s is not in the carrier image", c.Name, what, command))
		}
	}
	if len(c.Command) > 0 {
		// kubelet expands the command with the whole env; a variable it
		// takes from elsewhere is unknown here.
		check("command", expansion.Expand(c.Command[0], lookup), dynamic)
	}
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
	}{{"startup probe", c.StartupProbe}, {"liveness probe", c.LivenessProbe}, {"readiness probe", c.ReadinessProbe}} {
		if p.probe != nil && p.probe.Exec != nil && len(p.probe.Exec.Command) > 0 {
			// Probes are expanded with the literal env values only.
			check(p.what+" command", expansion.Expand(p.probe.Exec.Command[0], lookup), nil)
		}
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []struct {
			what    string
			handler *corev1.LifecycleHandler
		}{{"postStart hook", l.PostStart}, {"preStop hook", l.PreStop}} {
			if h.handler != nil && h.handler.Exec != nil && len(h.handler.Exec.Command) > 0 {
				// Hooks run their command as written.
				check(h.what+" command", h.handler.Exec.Command[0], nil)
			}
		}
	}
	return problems
}

// swapRefusal is the mount's message when c cannot take carrier, or "".
func swapRefusal(c *corev1.Container) string {
	problems := swapProblems(c)
	if len(problems) == 0 {
		return ""
	}
	return strings.Join(problems, "; ") + "; carrier is not swapped in, since kubelet could not start the container or run its probes with the carrier image, and the Pods keep their original image"
}

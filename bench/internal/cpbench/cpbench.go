// Package cpbench runs the control plane's benchmarks for the harness: the
// xDS fan-out (controlplane/internal/xds BenchmarkXDSRuleChange: 1,000
// real ADS streams of simulated carriers against the xDS server in a
// process of its own, the time from a rule change to the last stream that
// has it, and the server's memory) and the translation of 1,000-carrier
// models (controlplane/internal/translate BenchmarkTranslateFleet). They
// are Go benchmarks, so `go test -bench` runs them too; here they run with
// the server's CPU and heap profiles written, and the profiles' top
// entries are read with `go tool pprof` as the evidence of what limits
// them.
package cpbench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"gefyra.dev/gefyra/bench/internal/measure"
	"gefyra.dev/gefyra/bench/internal/profile"
)

// The benchmarks and their packages.
const (
	FanoutBench      = "BenchmarkXDSRuleChange"
	FanoutPackage    = "./controlplane/internal/xds"
	TranslateBench   = "BenchmarkTranslateFleet"
	TranslatePackage = "./controlplane/internal/translate"
	// ProfileEnv names the directory the fan-out benchmark's server writes
	// its profiles to.
	ProfileEnv = "GEFYRA_BENCH_PROFILE_DIR"
)

// Profile is the top of one pprof profile.
type Profile struct {
	// Title says what it is, File is the profile's name.
	Title, File string
	// Top is `go tool pprof -top`'s table, trimmed.
	Top string
}

// Result is what the benchmarks reported.
type Result struct {
	Fanout    []measure.GoBench
	Translate []measure.GoBench
	Profiles  []Profile
	// Commands are the command lines that ran.
	Commands []string
}

// Run runs both benchmarks in the module at root: the fan-out with
// changes rule changes per shape, the translation translations times per
// shape. Profiles go to profileDir.
func Run(ctx context.Context, root string, changes, translations int, profileDir string) (*Result, error) {
	res := &Result{}
	fan := []string{"test", "-run", "^$", "-bench", "^" + FanoutBench + "$", "-benchtime", fmt.Sprintf("%dx", changes), "-count", "1", FanoutPackage}
	out, err := goCmd(ctx, root, []string{ProfileEnv + "=" + profileDir}, fan...)
	res.Commands = append(res.Commands, ProfileEnv+"=DIR go "+strings.Join(fan, " "))
	if err != nil {
		return res, err
	}
	if res.Fanout, err = measure.ParseGoBench(out); err != nil {
		return res, err
	}
	if len(res.Fanout) == 0 {
		return res, fmt.Errorf("%s reported nothing:\n%s", FanoutBench, out)
	}
	tr := []string{"test", "-run", "^$", "-bench", "^" + TranslateBench + "$", "-benchmem", "-benchtime", fmt.Sprintf("%dx", translations), "-count", "1", TranslatePackage}
	out, err = goCmd(ctx, root, nil, tr...)
	res.Commands = append(res.Commands, "go "+strings.Join(tr, " "))
	if err != nil {
		return res, err
	}
	if res.Translate, err = measure.ParseGoBench(out); err != nil {
		return res, err
	}
	files, _ := filepath.Glob(filepath.Join(profileDir, "*.pprof"))
	sort.Strings(files)
	for _, f := range files {
		base := filepath.Base(f)
		shape := strings.TrimSuffix(strings.TrimSuffix(base, ".cpu.pprof"), ".heap.pprof")
		fleet := " (fleet " + shape + ": mounts, Pods per mount, bridges per mount)"
		var views []view
		switch {
		case strings.HasSuffix(base, ".cpu.pprof"):
			views = append(views,
				view{"CPU of the xDS server process over the rule changes, cumulative" + fleet,
					[]string{"-top", "-cum", "-nodecount", "22", "-hide", `^(testing|runtime|google\.golang\.org/grpc|gefyra\.dev/gefyra/controlplane/internal/xds_test)\.`}},
				view{"CPU of the xDS server process over the rule changes, flat" + fleet,
					[]string{"-top", "-nodecount", "15"}})
		case strings.HasSuffix(base, ".heap.pprof"):
			views = append(views, view{"Heap in use of the xDS server process with every stream connected" + fleet,
				[]string{"-top", "-sample_index", "inuse_space", "-nodecount", "15"}})
		}
		for _, v := range views {
			top, err := profile.Top(ctx, root, f, v.args...)
			if err != nil {
				return res, err
			}
			res.Profiles = append(res.Profiles, Profile{Title: v.title, File: base, Top: top})
		}
	}
	return res, nil
}

// view is one pprof view of a profile.
type view struct {
	title string
	args  []string
}

func goCmd(ctx context.Context, root string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, lastLines(string(out), 40))
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

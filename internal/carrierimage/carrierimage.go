// Package carrierimage is what the carrier image holds: one binary at
// Binary, a symlink to it at every path of Paths, and PATH. carrier writes
// the image's tree from it (carrier -image-layout) and the operator checks
// a container against it before swapping the container's image, because
// the container runtime resolves a container's command[0], and kubelet its
// exec probes' and hooks' command[0], in the carrier image's filesystem:
// where nothing is there the container fails to start, or its probes fail.
//
// Resolve answers for one command as the runtime would: an absolute path
// is the file at that path; a name with a slash is relative to the working
// directory; a bare name is looked up in each directory of PATH in turn.
package carrierimage

import (
	"path"
	"slices"
	"strings"
)

// Binary is where the image holds the carrier binary; every path of Paths
// links here.
const Binary = "/carrier"

// PATH is the image's PATH, the directories a bare command name is looked
// up in unless the container sets a PATH of its own.
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// dirs are the directories that hold the program names.
var dirs = []string{"/bin", "/usr/bin", "/usr/local/bin"}

// names are the program names the image holds in each of dirs: the
// programs Pods commonly start with (application servers, interpreters,
// shells) and the commands exec probes commonly run.
var names = []string{
	// Shells and coreutils that exec probes use.
	"sh", "bash", "ash", "dash", "cat", "test", "true", "ls", "stat", "pgrep", "ps", "kill", "echo", "grep", "wget", "curl", "nc",
	// Interpreters and application servers.
	"python", "python3", "uvicorn", "gunicorn", "hypercorn", "daphne", "flask", "fastapi", "celery",
	"node", "npm", "npx", "yarn", "pnpm", "bun", "deno", "java", "dotnet", "ruby", "bundle", "rails", "puma",
	"php", "php-fpm", "perl", "nginx", "httpd", "apache2", "envoy", "tini", "dumb-init",
	// Probe helpers.
	"grpc_health_probe", "healthcheck", "redis-cli", "pg_isready", "mysqladmin",
}

// programs are the absolute paths a container's own program commonly has,
// linked in the image besides the names in dirs.
var programs = []string{
	"/app/server", "/app/main", "/app/app", "/app/healthcheck", "/server", "/main",
	"/entrypoint.sh", "/docker-entrypoint.sh", "/usr/local/bin/docker-entrypoint.sh",
}

// Paths returns every path the image links to Binary, sorted.
func Paths() []string {
	out := slices.Clone(programs)
	for _, d := range dirs {
		for _, n := range names {
			out = append(out, d+"/"+n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// paths is Paths, for lookups.
var paths = Paths()

// Has reports whether the image holds a program at the absolute path p.
func Has(p string) bool {
	if !path.IsAbs(p) || strings.HasSuffix(p, "/") {
		return false
	}
	p = path.Clean(p)
	if p == Binary {
		return true
	}
	_, ok := slices.BinarySearch(paths, p)
	return ok
}

// Resolve returns the file of the image that starts for command, the
// first element of a container's command or of an exec probe, as the
// runtime resolves it: pathEnv is the process's PATH (PATH when the
// container sets none) and workdir its working directory ("" is "/"). ok
// is false when nothing in the image answers to command.
func Resolve(command, pathEnv, workdir string) (file string, ok bool) {
	if command == "" {
		return "", false
	}
	if workdir == "" || !path.IsAbs(workdir) {
		workdir = "/"
	}
	if strings.Contains(command, "/") {
		if !path.IsAbs(command) {
			command = path.Join(workdir, command)
		}
		return path.Clean(command), Has(command)
	}
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			dir = "."
		}
		if !path.IsAbs(dir) {
			dir = path.Join(workdir, dir)
		}
		if f := path.Join(dir, command); Has(f) {
			return f, true
		}
	}
	return "", false
}

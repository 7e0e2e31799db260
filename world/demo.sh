#!/usr/bin/env bash
# demo.sh tells the tutorial's story on this machine (`make demo`): it starts
# Docker Engine and the test world when they are not running, then the story
# program (demo/story/cmd/story) builds and loads the demo's images, deploys
# the workload, logs in as john@gefyra.dev through oauth2-proxy and the OIDC
# provider and shows the bug; then it installs the add-on and types the
# tutorial's gefyra commands (up, run, bridge), fixes the bug in the local
# source and gets the right answer through the bridge, and ends with gefyra
# down, one narrated step at a time. At the end it
# removes what it deployed, and stops the world and Docker only if it started
# them; when it started the world it also checks that the machine is left as
# it was (world/snapshot.sh before and after).
#
# Usage: world/demo.sh     (as root; exit status 0 when every step passed)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
export PATH=$PATH:/usr/local/go/bin

say() { printf '==> %s\n' "$*"; }
indent() { sed -u 's/^/    /'; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root: it starts Docker Engine and a Kubernetes node (sudo make demo)"
command -v go >/dev/null || fail "no Go toolchain on PATH"

tmp=$(mktemp -d)
started_docker=
started_world=
start=$SECONDS
# snapshot: world/snapshot.sh without the processes that other programs'
# tests run from copies of the world's binaries in temporary directories
# (envtest): they come and go on their own, the world never runs from /tmp.
snapshot() { "$here/snapshot.sh" 2>/dev/null | grep -v '^/tmp/'; }
finish() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$started_world" ]; then
		say "Stopping the test world (world/world.sh down)"
		"$here/world.sh" down 2>&1 | indent || rc=1
		snapshot >"$tmp/after" || rc=1
		if ! diff -u "$tmp/before" "$tmp/after" >"$tmp/diff"; then
			indent <"$tmp/diff" >&2
			printf 'demo: the world left traces on this machine (diff above: - before, + after)\n' >&2
			rc=1
		fi
	fi
	if [ -n "$started_docker" ]; then
		say "Stopping Docker Engine (world/docker.sh down)"
		"$here/docker.sh" down 2>&1 | indent || rc=1
	fi
	rm -rf "$tmp"
	if [ "$rc" = 0 ]; then
		say "Done in $((SECONDS - start))s"
	elif [ "$rc" = 130 ]; then
		printf 'demo: interrupted after %ss\n' "$((SECONDS - start))" >&2
	else
		printf 'demo: FAILED (exit status %s) after %ss\n' "$rc" "$((SECONDS - start))" >&2
	fi
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# Docker first: starting it adds docker0 and its iptables chains, which the
# snapshots must see on both sides.
if "$here/docker.sh" status | grep -q ': running'; then
	say "Docker Engine is running already"
else
	say "Starting Docker Engine (world/docker.sh up)"
	started_docker=1
	"$here/docker.sh" up 2>&1 | indent
fi
if "$here/world.sh" status >/dev/null 2>&1; then
	say "The test world is up already (it stays up)"
else
	say "Starting the test world: a real single-node Kubernetes, built from source (world/world.sh up)"
	snapshot >"$tmp/before"
	started_world=1
	"$here/world.sh" up 2>&1 | indent
fi

say "Building the story (demo/story/cmd/story)"
(cd "$root" && go build -o "$tmp/story" ./demo/story/cmd/story) 2>&1 | indent
cd "$root"
"$tmp/story" -root "$root"

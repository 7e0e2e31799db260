#!/usr/bin/env bash
# e2e.sh runs the end-to-end tests (go test -race -tags e2e ./e2e/...) on the
# test world and the machine's Docker Engine, after the CLI's tests that need
# Docker Engine (./cli/..., which skip those without one). It starts what is not running
# and afterwards stops only what it started; when it started the world, it
# also checks that `world.sh down` left the machine exactly as it found it
# (world/snapshot.sh before and after). The world's logs stay in
# /var/log/gefyra-world for a post-mortem.
#
# Usage: world/e2e.sh [go test flags...]    e.g. world/e2e.sh -run TestWorld -v
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[e2e] %s\n' "$*" >&2; }

tmp=$(mktemp -d)
started_docker=
started_world=
finish() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$started_world" ]; then
		"$here/world.sh" down || rc=1
		"$here/snapshot.sh" >"$tmp/after"
		if ! diff -u "$tmp/before" "$tmp/after" >&2; then
			log "the world left traces on this machine (diff above: - before up, + after down)"
			rc=1
		fi
	fi
	if [ -n "$started_docker" ]; then
		"$here/docker.sh" down || rc=1
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# Docker first: starting it adds docker0 and its iptables chains, which the
# snapshots must see on both sides.
if ! "$here/docker.sh" status | grep -q ': running'; then
	started_docker=1
	"$here/docker.sh" up
fi
skip=()
# The CLI's tests that drive Docker Engine (they skip where there is none,
# as in `make unit`); not when go test flags pick tests.
if [ $# -eq 0 ]; then
	log "the CLI's tests that need Docker Engine"
	(cd "$here/.." && go test -race -count=1 ./cli/...)
fi

if "$here/world.sh" status >/dev/null 2>&1; then
	log "using the world that is already up (it stays up)"
else
	# The sandbox's test first, while no world runs: `gefyra sandbox up`
	# starts the world itself and `sandbox down` stops it and compares the
	# machine with what it was before (the path a newcomer takes).
	log "the sandbox, from a machine without a world (TestSandbox)"
	(cd "$here/.." && go test -race -tags e2e -count=1 -timeout 20m -run '^TestSandbox$' "$@" ./e2e/)
	skip=(-skip '^TestSandbox$')
	"$here/snapshot.sh" >"$tmp/before"
	started_world=1
	"$here/world.sh" up
fi
cd "$here/.."
go test -race -tags e2e -count=1 -timeout 45m "${skip[@]}" "$@" ./e2e/...

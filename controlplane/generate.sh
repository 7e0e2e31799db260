#!/usr/bin/env bash
# generate.sh regenerates what controller-gen derives from the API types in
# controlplane/api/v1alpha1: their DeepCopy methods and the CRDs in
# deploy/crds. With --check it changes nothing and fails when the generated
# files are stale. Usage: controlplane/generate.sh [--check]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

CONTROLLER_GEN=(go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0)
api=controlplane/api/v1alpha1
crds=deploy/crds
generated=("$api/zz_generated.deepcopy.go")

generate() {
	"${CONTROLLER_GEN[@]}" object:headerFile=controlplane/boilerplate.go.txt paths="./$api/..."
	"${CONTROLLER_GEN[@]}" crd:maxDescLen=512 paths="./$api/..." output:crd:artifacts:config="$crds"
}

if [ "${1:-}" != "--check" ]; then
	generate
	exit 0
fi

# --check: generate, compare with what was there, and put the old files back.
backup=$(mktemp -d)
trap 'rm -rf "$backup"' EXIT
mkdir -p "$backup/crds"
cp "$crds"/gefyra.dev_*.yaml "$backup/crds/" 2>/dev/null || true
for f in "${generated[@]}"; do [ -f "$f" ] && cp "$f" "$backup/$(basename "$f")"; done
generate
stale=0
for f in "$crds"/gefyra.dev_*.yaml; do
	if ! cmp -s "$f" "$backup/crds/$(basename "$f")"; then echo "stale: $f" >&2; stale=1; fi
done
for f in "$backup"/crds/*.yaml; do
	[ -e "$f" ] || continue
	[ -f "$crds/$(basename "$f")" ] || { echo "stale: $crds/$(basename "$f") is no longer generated" >&2; stale=1; }
done
for f in "${generated[@]}"; do
	if ! cmp -s "$f" "$backup/$(basename "$f")"; then echo "stale: $f" >&2; stale=1; fi
done
if [ "$stale" = 1 ]; then
	rm -f "$crds"/gefyra.dev_*.yaml
	cp "$backup"/crds/*.yaml "$crds/" 2>/dev/null || true
	for f in "${generated[@]}"; do
		if [ -f "$backup/$(basename "$f")" ]; then cp "$backup/$(basename "$f")" "$f"; else rm -f "$f"; fi
	done
	echo "generated files are stale: run controlplane/generate.sh" >&2
	exit 1
fi
echo "generated files are up to date"

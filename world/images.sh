#!/usr/bin/env bash
# images.sh builds every container image of the project FROM scratch (no
# daemon, no registry, nothing from the network) as docker-archive
# tarballs that both `docker load` and `ctr -n k8s.io images import`
# accept:
#
#   gefyra.dev/carrier:VERSION       carrier's one binary at /carrier and a
#                                    link to it at every path the operator
#                                    counts on (internal/carrierimage)
#   gefyra.dev/stowaway:VERSION      static, user 65532, read-only root
#   gefyra.dev/controlplane:VERSION  static, user 65532, read-only root
#   and the demo's images (demo/images.sh)
#
# Usage: world/images.sh [OUTDIR]   (default: $GEFYRA_CACHE/images)
# VERSION (default 0.1.0) is the tag and what the binaries report.
#
# Each image is rebuilt only when its content changed (world/lib/images.sh),
# so a second run takes seconds. The last line on stdout is OUTDIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/world/versions.sh"

out=${1:-$GEFYRA_CACHE/images}
version=${VERSION:-0.1.0}
nonroot=65532:65532
. "$root/world/lib/images.sh"

# One build at a time: the staging directories are shared.
exec 9<"$0"
flock 9
images_setup
work=$images_work/components
mkdir -p "$work/bin"
out=$(cd "$out" && pwd)

# Static, reproducible binaries that report the version.
(
	cd "$root"
	for cmd in carrier stowaway controlplane; do
		CGO_ENABLED=0 go build -trimpath -buildvcs=false -tags grpcnotrace \
			-ldflags="-s -w -X gefyra.dev/gefyra/internal/version.Version=$version" \
			-o "$work/bin/$cmd" "./$cmd"
	done
)

# carrier writes its own tree and names its own environment, from the same
# list the operator checks a container against before swapping images.
layout=$work/carrier-root
rm -rf "$layout"
"$work/bin/carrier" -image-layout "$layout"
carrier_env=()
while IFS= read -r kv; do
	carrier_env+=(-env "$kv")
done < <("$work/bin/carrier" -image-env)

# The user keeps Pods with runAsNonRoot and no runAsUser starting; /tmp is
# there for the probes that expect it.
image carrier-$version.tar gefyra.dev/carrier:$version \
	-add "$layout:/" -mkdir /tmp:1777 -entrypoint /carrier "${carrier_env[@]}" \
	-user $nonroot

image stowaway-$version.tar gefyra.dev/stowaway:$version \
	-add "$work/bin/stowaway:/usr/local/bin/stowaway" \
	-entrypoint /usr/local/bin/stowaway \
	-port 51820/udp -port 8833 -port 9090 -user $nonroot

image controlplane-$version.tar gefyra.dev/controlplane:$version \
	-add "$work/bin/controlplane:/usr/local/bin/controlplane" \
	-entrypoint /usr/local/bin/controlplane \
	-port 18000 -port 9090 -user $nonroot

# The demo's images, under the lock demo/story takes for them.
flock "$root/demo/images.sh" "$root/demo/images.sh" "$out" >/dev/null

echo "$out"

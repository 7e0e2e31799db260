#!/usr/bin/env bash
# images.sh builds the demo's container images FROM scratch (no daemon, no
# registry, nothing from the network) as docker-archive tarballs that both
# `docker load` and `ctr -n k8s.io images import` accept:
#
#   gefyra.dev/oauth2-demo:0.1.0      the backend with the tutorial's bug (static)
#   gefyra.dev/oauth2-demo-dev:0.1.0  Go toolchain + jwt/v5 in an offline module
#                                     cache + Delve + devloop, source in /app
#   gefyra.dev/oidc:0.1.0             the demo's OpenID Connect provider
#   gefyra.dev/oauth2-proxy:v7.15.6   the real oauth2-proxy, built by world/build.sh
#
# Usage: demo/images.sh [OUTDIR]   (default: $GEFYRA_CACHE/images)
# world/images.sh builds these and gefyra's own images in one go.
#
# Each image is rebuilt only when its content changed (a key over the
# binaries' hashes, the trees' listings and the image settings), so a second
# run takes seconds. Needs world/build.sh oauth2proxy delve (run here if
# missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/world/versions.sh"

out=${1:-$GEFYRA_CACHE/images}
work=$GEFYRA_CACHE/demo-images-work
. "$root/world/lib/images.sh"
images_setup
mkdir -p "$work/bin"
log() { images_log "$@"; }

demo_version=0.1.0
nonroot=65532:65532

# Third-party binaries, built once per version.
"$root/world/build.sh" oauth2proxy delve
oauth2proxy=$("$root/world/build.sh" --dir oauth2proxy)/oauth2-proxy
dlv=$("$root/world/build.sh" --dir delve)/dlv

# Our binaries: static, reproducible; go build is incremental.
(
	cd "$root"
	for cmd in app:oauth2-demo oidc:oidc devloop:devloop; do
		CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$work/bin/${cmd#*:}" "./demo/${cmd%%:*}"
	done
)

# The development image's Go toolchain: /usr/local/go without what building
# a program does not need (tests, docs, the toolchain's own sources).
goroot=$(go env GOROOT)
goversion=$(go env GOVERSION)
toolchain=$work/toolchain-$goversion
if [ ! -f "$toolchain/.complete" ]; then
	log "staging the Go toolchain $goversion"
	rm -rf "$toolchain"
	mkdir -p "$toolchain"
	cp -al "$goroot" "$toolchain/go" 2>/dev/null || cp -a "$goroot" "$toolchain/go"
	(
		cd "$toolchain/go"
		rm -rf api doc misc test src/cmd lib/fips140 lib/wasm lib/hg \
			pkg/tool/*/fix pkg/tool/*/preprofile pkg/tool/*/cover pkg/tool/*/vet
		find src -type d -name testdata -prune -exec rm -rf {} +
	)
	touch "$toolchain/.complete"
fi

# The offline module cache: jwt/v5 only, and the module files the
# development loop overlays onto a /app that has none.
modcache=$work/gomod
moddir=$work/devloop-module
rm -rf "$modcache" "$moddir"
mkdir -p "$modcache/cache/download/github.com/golang-jwt/jwt/v5/@v" "$modcache/github.com/golang-jwt/jwt" "$moddir"
hostmod=$(go env GOMODCACHE)
jwt=v5.3.1
(cd "$root" && go mod download github.com/golang-jwt/jwt/v5@$jwt)
for ext in info mod zip ziphash; do
	cp "$hostmod/cache/download/github.com/golang-jwt/jwt/v5/@v/$jwt.$ext" "$modcache/cache/download/github.com/golang-jwt/jwt/v5/@v/"
done
cp -a "$hostmod/github.com/golang-jwt/jwt/v5@$jwt" "$modcache/github.com/golang-jwt/jwt/"
printf 'module gefyra.dev/oauth2-demo\n\ngo 1.26\n\nrequire github.com/golang-jwt/jwt/v5 %s\n' "$jwt" >"$moddir/go.mod"
grep "^github.com/golang-jwt/jwt/v5 $jwt[ /]" "$root/go.sum" >"$moddir/go.sum"
[ "$(wc -l <"$moddir/go.sum")" -eq 2 ] || { log "go.sum lacks jwt/v5 $jwt"; exit 1; }
# The default source in /app: the shipped, buggy backend.
appsrc=$work/app-src
rm -rf "$appsrc"
mkdir -p "$appsrc"
find "$root/demo/app" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$appsrc/" \;

image oauth2-demo-$demo_version.tar gefyra.dev/oauth2-demo:$demo_version \
	-add "$work/bin/oauth2-demo:/usr/local/bin/oauth2-demo" \
	-entrypoint /usr/local/bin/oauth2-demo \
	-env PORT=8155 -port 8155 -user $nonroot

image oauth2-demo-dev-$demo_version.tar gefyra.dev/oauth2-demo-dev:$demo_version \
	-add "$toolchain/go:/usr/local/go" \
	-add "$modcache:/usr/local/lib/go-mod" \
	-add "$moddir:/usr/local/lib/devloop" \
	-add "$work/bin/devloop:/usr/local/bin/devloop" \
	-add "$dlv:/usr/local/bin/dlv" \
	-add "$appsrc:/app" \
	-mkdir /tmp:1777 \
	-env PATH=/usr/local/go/bin:/usr/local/bin \
	-env HOME=/tmp -env GOPATH=/tmp/go -env GOCACHE=/tmp/go-cache \
	-env GOMODCACHE=/usr/local/lib/go-mod -env GOFLAGS=-mod=mod -env GOPROXY=off \
	-env GOTOOLCHAIN=local -env CGO_ENABLED=0 -env PORT=8155 \
	-workdir /app -cmd /usr/local/bin/devloop \
	-port 8155 -port 5678 -user $nonroot

image oidc-$demo_version.tar gefyra.dev/oidc:$demo_version \
	-add "$work/bin/oidc:/usr/local/bin/oidc" \
	-entrypoint /usr/local/bin/oidc \
	-port 8080 -user $nonroot

image oauth2-proxy-$OAUTH2_PROXY_VERSION.tar gefyra.dev/oauth2-proxy:$OAUTH2_PROXY_VERSION \
	-add "$oauth2proxy:/bin/oauth2-proxy" \
	-entrypoint /bin/oauth2-proxy \
	-port 4180 -user $nonroot

echo "$out"

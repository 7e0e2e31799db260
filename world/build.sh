#!/usr/bin/env bash
# build.sh builds the binaries of the test world (Kubernetes, etcd, containerd,
# runc, CNI plugins, CoreDNS) and the third-party tools the demo needs
# (oauth2-proxy, Delve), once per version, into $GEFYRA_CACHE. A second run
# finds them and returns at once. Usage: world/build.sh [component...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"

log() { printf '[world] %s\n' "$*" >&2; }

# build NAME DIR CMD...: runs CMD with GOBIN set to a temporary directory and
# moves the result to DIR only when it succeeded, so an interrupted build
# never leaves a half-filled cache entry behind.
build() {
	local name=$1 dir=$2; shift 2
	if [ -f "$dir/.complete" ]; then return 0; fi
	log "building $name into $dir (first time only; this takes a few minutes)"
	local tmp
	tmp=$(mktemp -d "$GEFYRA_CACHE/.build-XXXXXX")
	local start=$SECONDS
	if ! GOBIN=$tmp "$@"; then
		rm -rf "$tmp"
		log "building $name failed"
		return 1
	fi
	touch "$tmp/.complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	log "built $name in $((SECONDS - start))s"
}

k8s_ldflags() {
	local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
	local p
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
			"$p" "$K8S_VERSION" "$p" "$p" "$minor" "$p"
	done
	printf -- '-s -w'
}

build_k8s() {
	(cd "$here/tools/k8s" && CGO_ENABLED=0 go install -trimpath -ldflags "$(k8s_ldflags)" tool)
}
build_etcd() {
	# go names the binary of go.etcd.io/etcd/server/v3 after the element
	# before the major version suffix: "server".
	(cd "$here/tools/etcd" && CGO_ENABLED=0 go install -trimpath -ldflags '-s -w' tool && mv "$GOBIN/server" "$GOBIN/etcd")
}
build_containerd() {
	local m=github.com/containerd/containerd/v2/cmd
	CGO_ENABLED=0 go install -trimpath -ldflags '-s -w' -tags 'no_btrfs no_devmapper no_zfs' \
		"$m/containerd@$CONTAINERD_VERSION" "$m/containerd-shim-runc-v2@$CONTAINERD_VERSION" "$m/ctr@$CONTAINERD_VERSION"
}
build_runc() {
	CGO_ENABLED=1 go install -trimpath -ldflags '-s -w' -tags seccomp "github.com/opencontainers/runc@$RUNC_VERSION"
}
build_cni() {
	local m=github.com/containernetworking/plugins/plugins
	CGO_ENABLED=0 go install -trimpath -ldflags '-s -w' \
		"$m/main/bridge@$CNI_VERSION" "$m/main/loopback@$CNI_VERSION" \
		"$m/ipam/host-local@$CNI_VERSION" "$m/meta/portmap@$CNI_VERSION"
}
build_oauth2proxy() {
	CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$OAUTH2_PROXY_VERSION" \
		"github.com/oauth2-proxy/oauth2-proxy/v7@$OAUTH2_PROXY_VERSION"
}
build_delve() {
	CGO_ENABLED=0 go install -trimpath "github.com/go-delve/delve/cmd/dlv@$DELVE_VERSION"
}
build_coredns() {
	CGO_ENABLED=0 go install -trimpath -ldflags '-s -w' "github.com/coredns/coredns@$COREDNS_VERSION"
}

# dir COMPONENT prints the cache directory of a component's binaries.
dir() {
	case $1 in
	k8s) echo "$GEFYRA_CACHE/k8s-$K8S_VERSION" ;;
	etcd) echo "$GEFYRA_CACHE/etcd-$ETCD_VERSION" ;;
	containerd) echo "$GEFYRA_CACHE/containerd-$CONTAINERD_VERSION" ;;
	runc) echo "$GEFYRA_CACHE/runc-$RUNC_VERSION" ;;
	cni) echo "$GEFYRA_CACHE/cni-$CNI_VERSION" ;;
	oauth2proxy) echo "$GEFYRA_CACHE/oauth2-proxy-$OAUTH2_PROXY_VERSION" ;;
	delve) echo "$GEFYRA_CACHE/delve-$DELVE_VERSION" ;;
	coredns) echo "$GEFYRA_CACHE/coredns-$COREDNS_VERSION" ;;
	*) log "unknown component $1"; return 1 ;;
	esac
}

if [ "${1:-}" = "--dir" ]; then dir "$2"; exit; fi

mkdir -p "$GEFYRA_CACHE"
command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(k8s etcd containerd runc cni oauth2proxy delve coredns)
for c in "${components[@]}"; do
	build "$c" "$(dir "$c")" "build_$c"
done

#!/usr/bin/env bash
# world.sh runs the test world: a real single-node Kubernetes (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, containerd + runc +
# the bridge CNI, kubelet, kube-proxy, and CoreDNS as the cluster DNS) built
# from source by build.sh, with the whole node inside a network namespace of
# its own (gefyra-world) joined to the host by a veth pair:
#
#	host 10.250.0.1 <-> node 10.250.0.2   Pods 10.244.0.0/24   Services 10.96.0.0/16
#	cluster DNS 10.96.0.10 (kube-system/kube-dns), domain cluster.local
#
# The host routes the Pod and Service ranges to the node, so tests on the
# host call ClusterIPs, Pod IPs and NodePorts directly (and may ask the
# cluster DNS); the node has no route anywhere else, and the cluster DNS
# forwards nothing.
#
# Usage: world/world.sh COMMAND
#	up               build (cached), start everything, wait for a Ready node that runs a Pod
#	                 and for the cluster DNS to answer
#	down             stop everything and undo every change `up` made to the machine
#	status           what runs (exit 0 when the world is up, 3 when not)
#	load IMAGE.tar…  import docker-archive tarballs into the cluster's containerd
#	kubeconfig       print the path of the admin kubeconfig
#	env              print `export` lines for KUBECONFIG and the world's paths
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"
# shellcheck source=lib/proc.sh
. "$here/lib/proc.sh"
# shellcheck source=lib/node.sh
. "$here/lib/node.sh"
# shellcheck source=lib/config.sh
. "$here/lib/config.sh"
# shellcheck source=lib/dns.sh
. "$here/lib/dns.sh"

COMPONENTS=(etcd kube-apiserver containerd kube-controller-manager kube-scheduler kubelet kube-proxy)

# lock: one `up` or `down` at a time (the second waits). The processes the
# world starts do not inherit it (see start).
lock() {
	mkdir -p "$GEFYRA_CACHE"
	exec 9>>"$GEFYRA_CACHE/.world.lock"
	if ! flock -w 1 9; then
		log "waiting for another world.sh up/down to finish"
		flock -w 900 9 || die "another world.sh up/down still holds $GEFYRA_CACHE/.world.lock"
	fi
}

api_ready() { kc get --raw /readyz >/dev/null 2>&1; }

world_up_and_ready() {
	local c
	for c in "${COMPONENTS[@]}"; do running "$c" || return 1; done
	api_ready
}

# leftovers: does anything of an earlier world remain?
leftovers() {
	[ -d "$RUN" ] || [ -d "$STATE" ] || netns_exists || ip link show "$HOST_IF" >/dev/null 2>&1
}

# pause_image: builds the sandbox image once per source version.
pause_image() {
	local key dir
	key=$(cat "$here/pause/main.go" "$here/mkimage/main.go" "$here/../internal/ociimage/ociimage.go" | sha256sum | cut -c1-16)
	dir=$GEFYRA_CACHE/world-pause-$key
	PAUSE_TAR=$dir/pause.tar
	[ -f "$dir/.complete" ] && return 0
	log "building the pause image"
	local tmp
	tmp=$(mktemp -d "$GEFYRA_CACHE/.build-XXXXXX")
	(
		cd "$here/.."
		CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$tmp/pause" ./world/pause
		go run ./world/mkimage -o "$tmp/pause.tar" -tag "$PAUSE_IMAGE" -add "$tmp/pause:/pause" -entrypoint /pause >/dev/null
	) || { rm -rf "$tmp"; die "building the pause image failed"; }
	rm -f "$tmp/pause"
	touch "$tmp/.complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
}

ctr_() { "$CTR" --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

import_images() {
	local tar
	for tar in "$@"; do
		[ -f "$tar" ] || die "no such image archive: $tar"
		local out
		out=$(ctr_ images import "$tar" 2>&1) || die "importing $tar failed: $out"
	done
}

# check_pod: a Pod (the pause image, nothing pulled) must reach Ready.
check_pod() {
	kc apply -f - >/dev/null <<-EOF
		apiVersion: v1
		kind: Pod
		metadata:
		  name: world-check
		  namespace: default
		spec:
		  terminationGracePeriodSeconds: 0
		  automountServiceAccountToken: true
		  containers:
		  - name: pause
		    image: $PAUSE_IMAGE
		    imagePullPolicy: Never
	EOF
	kc wait --for=condition=Ready pod/world-check --timeout=60s >/dev/null ||
		{ kc describe pod world-check >&2 || true; die "the check Pod did not become Ready (logs in $LOGS)"; }
	kc delete pod world-check --wait=true --timeout=60s >/dev/null
}

cmd_up() {
	lock
	local start=$SECONDS
	bins
	if world_up_and_ready; then
		log "the world is already up (kubeconfig: $KUBECONFIG_ADMIN)"
		dns_tools
		# shellcheck disable=SC2016 # the backticks are for the reader
		dns_answers || log 'warning: its cluster DNS does not answer (an older world? `world/world.sh down` and `up` again)'
		return 0
	fi
	if leftovers; then
		log "tearing down what is left of an earlier world"
		do_down
	fi
	# shellcheck disable=SC2016 # the backticks are for the reader
	trap '[ $? = 0 ] || log "up failed; the logs are in $LOGS, and \`world/world.sh down\` removes what it started"' EXIT
	log "building (cached)"
	"$here/build.sh" k8s etcd containerd runc cni coredns
	pause_image
	dns_tools
	log "binaries ready after $((SECONDS - start))s"

	mkdir -p "$STATE" "$RUN" "$PIDS" "$LOGS"
	rm -f "$LOGS"/*.log
	foreign_note
	sysctls_save
	net_up
	cgroups_up
	pki_up
	configs_up

	local pki=$PKI
	start etcd "$ETCD" --name "$NODE_NAME" --data-dir "$STATE/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --listen-metrics-urls '' \
		--unsafe-no-fsync --log-level warn
	start containerd "$CONTAINERD_DIR/containerd" --config "$STATE/conf/containerd.toml" --log-level warn
	start kube-apiserver "$K8S/kube-apiserver" \
		--etcd-servers http://127.0.0.1:2379 \
		--bind-address 0.0.0.0 --secure-port "$API_PORT" --advertise-address "$NODE_IP" \
		--service-cluster-ip-range "$SERVICE_CIDR" \
		--client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
		--kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
		--authorization-mode Node,RBAC --allow-privileged=true --profiling=false \
		--cert-dir "$STATE/apiserver"

	wait_for "the API server" 60 api_ready || die "the API server did not become ready (see $LOGS/kube-apiserver.log)"
	log "API server ready after $((SECONDS - start))s"
	# The cluster DNS goes in now, so its Pod is scheduled as soon as the
	# node is Ready.
	dns_apply
	start kube-controller-manager "$K8S/kube-controller-manager" \
		--kubeconfig "$STATE/conf/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$STATE/conf/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$STATE/conf/controller-manager.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
		--service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
		--cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
		--cert-dir "$STATE/controller-manager" --profiling=false
	start kube-scheduler "$K8S/kube-scheduler" \
		--kubeconfig "$STATE/conf/scheduler.kubeconfig" \
		--authentication-kubeconfig "$STATE/conf/scheduler.kubeconfig" \
		--authorization-kubeconfig "$STATE/conf/scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --leader-elect=false --cert-dir "$STATE/scheduler" --profiling=false

	wait_for "containerd" 30 ctr_ version || die "containerd did not start (see $LOGS/containerd.log)"
	import_images "$PAUSE_TAR" "$COREDNS_TAR"
	start kubelet "$K8S/kubelet" --config "$STATE/conf/kubelet.yaml" \
		--kubeconfig "$STATE/conf/kubelet.kubeconfig" --root-dir "$STATE/kubelet" \
		--hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
	start kube-proxy "$K8S/kube-proxy" --config "$STATE/conf/kube-proxy.yaml"

	wait_for "node $NODE_NAME to register" 60 kc get node "$NODE_NAME" || die "kubelet did not register (see $LOGS/kubelet.log)"
	kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=60s >/dev/null || die "node $NODE_NAME is not Ready (see $LOGS/kubelet.log)"
	log "node Ready after $((SECONDS - start))s"
	wait_for "the default ServiceAccount" 30 kc get serviceaccount default -n default || die "no default ServiceAccount (see $LOGS/kube-controller-manager.log)"
	check_pod
	log "a Pod ran after $((SECONDS - start))s"
	dns_wait
	log "cluster DNS answers at $DNS_SERVICE_IP after $((SECONDS - start))s"
	trap - EXIT
	log "the world is up after $((SECONDS - start))s: export KUBECONFIG=$KUBECONFIG_ADMIN (logs in $LOGS)"
}

# shim_sockets: the sockets the running shims listen on (outside RUN, under
# /run/containerd/s), read from their bundles while those still exist.
shim_sockets() {
	local f
	for f in "$RUN"/containerd/io.containerd.runtime.v2.task/*/*/address "$RUN"/containerd/io.containerd.runtime.v2.task/*/*/bootstrap.json; do
		[ -f "$f" ] || continue
		grep -o 'unix://[^"]*' "$f" | sed 's|^unix://||'
	done 2>/dev/null | sort -u
}

do_down() {
	local start=$SECONDS
	bins
	stop kube-controller-manager
	stop kube-scheduler
	if running kube-apiserver && running kubelet && api_ready; then
		# kubelet stops every container and tears down every Pod network.
		kc delete pods --all --all-namespaces --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1 ||
			log "not every Pod went away; killing what remains"
	fi
	stop kubelet
	stop kube-proxy
	local sockets ids id
	sockets=$(shim_sockets)
	ids=$(ls "$RUN/containerd/io.containerd.runtime.v2.task/k8s.io" 2>/dev/null || true)
	if running containerd; then
		ids="$ids $(ctr_ containers list -q 2>/dev/null || true)"
		for id in $(ctr_ tasks list -q 2>/dev/null); do
			ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctr_ tasks list -q 2>/dev/null); do
			ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctr_ containers list -q 2>/dev/null); do
			ctr_ containers delete "$id" >/dev/null 2>&1 || true
		done
	fi
	stop containerd
	# Whatever survived: the shims containerd started and every process in
	# the world's cgroups.
	local pid
	for _ in $(seq 50); do
		local left
		left=$( { pids_running "$CONTAINERD_DIR/containerd-shim-runc-v2"; cgroup_pids; } | sort -u)
		[ -n "$left" ] || break
		for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
		sleep 0.1
	done
	stop kube-apiserver
	stop etcd
	local s
	for s in $sockets; do
		case $s in /run/containerd/s/*) rm -f "$s" ;; esac
	done
	# CNI's result cache (outside the world's directories) of sandboxes
	# that never got their network torn down.
	for id in $ids; do
		rm -f /var/lib/cni/results/"$NETNS-$id"-* /var/lib/cni/results/cni-loopback-"$id"-*
	done
	unmount_all
	cgroups_down
	net_down
	foreign_clean
	sysctls_restore
	if [ -z "$(world_mounts)" ]; then
		rm -rf "$STATE" "$RUN"
	else
		log "left $STATE and $RUN in place: something is still mounted there"
	fi
	log "the world is down ($((SECONDS - start))s)"
}

cmd_down() {
	lock
	do_down
}

cmd_status() {
	bins
	local c pid up=1
	for c in "${COMPONENTS[@]}"; do
		if pid=$(pid_of "$c"); then
			printf '%-24s running (pid %s)\n' "$c" "$pid"
		else
			printf '%-24s stopped\n' "$c"
			up=
		fi
	done
	if netns_exists; then echo "network namespace $NETNS exists"; else echo "no network namespace $NETNS"; up=; fi
	if [ -n "$up" ] && api_ready; then
		kc get nodes -o wide 2>/dev/null || true
		dns_tools
		if dns_answers; then echo "cluster DNS answers at $DNS_SERVICE_IP"; else echo "cluster DNS does not answer at $DNS_SERVICE_IP"; fi
		echo "kubeconfig: $KUBECONFIG_ADMIN"
		return 0
	fi
	echo "the world is not up"
	return 3
}

cmd_load() {
	[ $# -gt 0 ] || die "usage: world.sh load IMAGE.tar..."
	bins
	running containerd || die "the world is not up: run \`make cluster-up\` (world/world.sh up)"
	import_images "$@"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
load) shift; cmd_load "$@" ;;
kubeconfig)
	[ -f "$KUBECONFIG_ADMIN" ] || die "the world is not up: run \`make cluster-up\` (world/world.sh up)"
	echo "$KUBECONFIG_ADMIN"
	;;
env)
	[ -f "$WORLD_ENV" ] || die "the world is not up: run \`make cluster-up\` (world/world.sh up)"
	sed 's/^/export /' "$WORLD_ENV"
	;;
*)
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
	exit 2
	;;
esac

# common.sh: names, addresses, paths and small helpers shared by the world's
# scripts. Sourced, never run.

# The node: one network namespace, joined to the host by a veth pair.
NETNS=gefyra-world
NETNS_PATH=/run/netns/$NETNS
NODE_NAME=gefyra-world
HOST_IF=gfyw-host          # host end of the veth pair
NODE_IF=gfyw-node          # node end, inside the namespace
POD_BRIDGE=gfyw-pods       # the CNI bridge, inside the namespace
HOST_IP=10.250.0.1
NODE_IP=10.250.0.2
LINK_PREFIX=30
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10  # kube-system/kube-dns, served by CoreDNS
CLUSTER_DOMAIN=cluster.local
API_PORT=6443
API_URL=https://$NODE_IP:$API_PORT

# Where the world keeps its things. Everything below STATE and RUN is removed
# by `down`; LOGS stays for a post-mortem and is emptied by the next `up`.
STATE=${GEFYRA_WORLD_STATE:-/var/lib/gefyra-world}
RUN=${GEFYRA_WORLD_RUN:-/run/gefyra-world}
LOGS=${GEFYRA_WORLD_LOGS:-/var/log/gefyra-world}
PKI=$STATE/pki
PIDS=$RUN/pids
KUBECONFIG_ADMIN=$RUN/kubeconfig
WORLD_ENV=$RUN/world.env
CONTAINERD_SOCK=$RUN/containerd/containerd.sock
CGROUP_PARENT=gefyra-world # kubelet's cgroupRoot, in every cgroup v1 hierarchy

# Paths outside STATE and RUN that the components insist on (hard-coded in
# them). `up` notes which of them already existed; `down` removes the world's
# entries in them and removes the directories it created.
FOREIGN_DIRS=(/run/netns /var/lib/cni /var/log/containers /run/containerd /var/lib/kubelet)
# The kernel settings kubelet rewrites; saved by `up`, restored by `down`.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# The images the world imports itself.
PAUSE_IMAGE=gefyra.dev/world/pause:1
COREDNS_IMAGE=gefyra.dev/world-coredns:$COREDNS_VERSION

log() { printf '[world] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# bins sets the paths of the built binaries (build.sh --dir knows where).
bins() {
	K8S=$("$here/build.sh" --dir k8s)
	ETCD=$("$here/build.sh" --dir etcd)/etcd
	CONTAINERD_DIR=$("$here/build.sh" --dir containerd)
	RUNC=$("$here/build.sh" --dir runc)/runc
	CNI_BIN=$("$here/build.sh" --dir cni)
	KUBECTL=$K8S/kubectl
	CTR=$CONTAINERD_DIR/ctr
}

# in_node CMD...: runs CMD in the node's network namespace only. Not `ip netns
# exec`: that also makes a new mount namespace for every call, and kubelet and
# containerd must see each other's mounts.
in_node() { nsenter --net="$NETNS_PATH" -- "$@"; }

# kc ARGS...: kubectl as the cluster admin.
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# wait_for WHAT SECONDS CMD...: runs CMD every 0.2 s until it succeeds, for at
# most SECONDS; says what it waits for when that takes longer than 2 s.
wait_for() {
	local what=$1 secs=$2; shift 2
	local start=$SECONDS said=
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - start >= secs)); then
			log "gave up waiting for $what after ${secs}s"
			return 1
		fi
		if [ -z "$said" ] && ((SECONDS - start >= 2)); then
			log "waiting for $what"
			said=1
		fi
		sleep 0.2
	done
}

# node.sh: the machine-level pieces of the world (network namespace, veth,
# routes, host iptables rules, cgroups, kernel settings, directories the
# components hard-code) and their exact undoing. Sourced, never run.
# Every function here is safe to run twice, and the *_down ones also after a
# half-finished `up`.

netns_exists() { [ -e "$NETNS_PATH" ] && ip netns list | grep -qx "$NETNS\( (id: [0-9]*)\)\?"; }

# Host iptables: one chain per table, jumped to from the top of FORWARD and
# POSTROUTING, so `down` removes exactly what `up` added.
#   filter GEFYRA-WORLD: anything may be forwarded into the node (Docker's
#     FORWARD policy is DROP); from the node only replies come out.
#   nat GEFYRA-WORLD: forwarded traffic into the node (e.g. from a Docker
#     container) leaves with the host's address on the link, so the node
#     needs no route back to anything but the link itself.
WORLD_CHAIN=GEFYRA-WORLD

net_up() {
	if ! netns_exists; then
		ip netns add "$NETNS"
	fi
	if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
		ip link add "$HOST_IF" type veth peer name "$NODE_IF" netns "$NETNS"
	fi
	sysctl -qw "net.ipv6.conf.$HOST_IF.disable_ipv6=1" || true
	ip addr replace "$HOST_IP/$LINK_PREFIX" dev "$HOST_IF"
	ip link set "$HOST_IF" up

	in_node sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 || true
	in_node ip link set lo up
	in_node ip addr replace "$NODE_IP/$LINK_PREFIX" dev "$NODE_IF"
	in_node ip link set "$NODE_IF" up
	# Nothing in the node has a route beyond the link and the Pod bridge, so
	# nothing can leave through the machine's own interface. kube-proxy
	# rewrites the Service IPs it knows before routing; any other one is
	# answered at once with "unreachable" instead of going anywhere.
	in_node ip route replace unreachable "$SERVICE_CIDR"
	# Per-namespace settings: forwarding between the link and the Pods, and
	# iptables seeing bridged Pod-to-Pod traffic (kube-proxy needs that for
	# Pod -> ClusterIP -> Pod on the same bridge).
	in_node sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

	ip route replace "$POD_CIDR" via "$NODE_IP" dev "$HOST_IF"
	ip route replace "$SERVICE_CIDR" via "$NODE_IP" dev "$HOST_IF"

	iptables -w -N "$WORLD_CHAIN" 2>/dev/null || iptables -w -F "$WORLD_CHAIN"
	iptables -w -A "$WORLD_CHAIN" -o "$HOST_IF" -j ACCEPT
	iptables -w -A "$WORLD_CHAIN" -i "$HOST_IF" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
	iptables -w -A "$WORLD_CHAIN" -i "$HOST_IF" -j DROP
	iptables -w -C FORWARD -j "$WORLD_CHAIN" 2>/dev/null || iptables -w -I FORWARD 1 -j "$WORLD_CHAIN"
	iptables -w -t nat -N "$WORLD_CHAIN" 2>/dev/null || iptables -w -t nat -F "$WORLD_CHAIN"
	iptables -w -t nat -A "$WORLD_CHAIN" -o "$HOST_IF" ! -s "$HOST_IP" -j MASQUERADE
	iptables -w -t nat -C POSTROUTING -j "$WORLD_CHAIN" 2>/dev/null || iptables -w -t nat -I POSTROUTING 1 -j "$WORLD_CHAIN"
}

net_down() {
	local t
	for t in filter nat; do
		local hook=FORWARD
		[ "$t" = nat ] && hook=POSTROUTING
		while iptables -w -t "$t" -D "$hook" -j "$WORLD_CHAIN" 2>/dev/null; do :; done
		iptables -w -t "$t" -F "$WORLD_CHAIN" 2>/dev/null || true
		iptables -w -t "$t" -X "$WORLD_CHAIN" 2>/dev/null || true
	done
	# Deleting the host end removes its peer and the host routes through it.
	ip link del "$HOST_IF" 2>/dev/null || true
	if netns_exists; then
		ip netns del "$NETNS"
	fi
}

# The cgroup v1 (and hybrid v2) hierarchies of the machine.
cgroup_roots() { awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo; }

cgroups_up() {
	local root
	for root in $(cgroup_roots); do
		mkdir -p "$root/$CGROUP_PARENT"
		if [ -f "$root/cpuset.cpus" ]; then
			# A new cpuset is empty (and useless) until told its CPUs and nodes.
			[ -s "$root/$CGROUP_PARENT/cpuset.cpus" ] || cat "$root/cpuset.cpus" >"$root/$CGROUP_PARENT/cpuset.cpus"
			[ -s "$root/$CGROUP_PARENT/cpuset.mems" ] || cat "$root/cpuset.mems" >"$root/$CGROUP_PARENT/cpuset.mems"
		fi
	done
}

# cgroup_pids: every process in the world's cgroups (the containers).
cgroup_pids() {
	local root
	for root in $(cgroup_roots); do
		[ -d "$root/$CGROUP_PARENT" ] || continue
		find "$root/$CGROUP_PARENT" -name cgroup.procs -exec cat {} + 2>/dev/null
	done | sort -un
}

cgroups_down() {
	local root
	for root in $(cgroup_roots); do
		[ -d "$root/$CGROUP_PARENT" ] || continue
		find "$root/$CGROUP_PARENT" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[ -d "$root/$CGROUP_PARENT" ] && log "could not remove cgroup $root/$CGROUP_PARENT (still in use?)"
	done
	return 0
}

sysctls_save() {
	[ -s "$RUN/sysctls" ] && return 0 # kept from an `up` that never got its `down`
	local k
	for k in "${SYSCTLS[@]}"; do
		printf '%s=%s\n' "$k" "$(sysctl -n "$k")"
	done >"$RUN/sysctls.tmp"
	mv "$RUN/sysctls.tmp" "$RUN/sysctls"
}

sysctls_restore() {
	[ -s "$RUN/sysctls" ] || return 0
	local kv
	while read -r kv; do
		sysctl -qw "$kv" || log "could not restore $kv"
	done <"$RUN/sysctls"
	rm -f "$RUN/sysctls"
}

# foreign_note: remembers which of FOREIGN_DIRS existed (and were mount
# points) before the world first touched them.
foreign_note() {
	[ -s "$RUN/foreign" ] && return 0
	local d
	for d in "${FOREIGN_DIRS[@]}"; do
		if [ -e "$d" ]; then
			if mountpoint -q "$d"; then echo "$d mounted"; else echo "$d existed"; fi
		else
			echo "$d absent"
		fi
	done >"$RUN/foreign.tmp"
	mv "$RUN/foreign.tmp" "$RUN/foreign"
}

# foreign_clean: removes the world's entries from FOREIGN_DIRS, and the
# directories (and the /run/netns mount `ip netns` makes) that were not there
# before, when nothing else uses them.
foreign_clean() {
	local f
	# kubelet's container log links point into its Pod log directory.
	for f in /var/log/containers/*; do
		[ -L "$f" ] || continue
		case $(readlink "$f") in "$STATE"/*) rm -f "$f" ;; esac
	done
	# CNI's result cache, by network name.
	rm -f /var/lib/cni/results/"$NETNS"-* 2>/dev/null || true
	[ -s "$RUN/foreign" ] || return 0
	local d how
	while read -r d how; do
		# `ip netns add` turns /run/netns into a mount point of its own.
		if [ "$how" != mounted ] && [ "$d" = /run/netns ] && mountpoint -q "$d" && [ -z "$(ls -A "$d")" ]; then
			umount "$d" || true
		fi
		# kubelet's device plugin socket ignores --root-dir.
		if [ "$how" = absent ] && [ "$d" = /var/lib/kubelet ]; then
			rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
		fi
		if [ "$how" = absent ] && [ -d "$d" ]; then
			# Remove empty directories bottom-up; leave anything still in use.
			find "$d" -depth -type d -empty -delete 2>/dev/null || true
		fi
	done <"$RUN/foreign"
	return 0
}

# world_mounts: mount points below STATE and RUN, deepest first.
world_mounts() {
	awk -v a="$STATE" -v b="$RUN" '
		index($5, a "/") == 1 || $5 == a || index($5, b "/") == 1 || $5 == b { print $5 }
	' /proc/self/mountinfo | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

unmount_all() {
	local m tries
	for tries in 1 2 3; do
		[ -n "$(world_mounts)" ] || return 0
		for m in $(world_mounts); do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done
	done
	[ -z "$(world_mounts)" ] || log "still mounted: $(world_mounts | tr '\n' ' ')"
}

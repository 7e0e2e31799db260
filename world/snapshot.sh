#!/usr/bin/env bash
# snapshot.sh prints a normalized picture of everything on this machine that
# the test world could change: links and their addresses, routes, network
# namespaces, mounts, the host's iptables rules (without counters), the
# kernel settings kubelet rewrites, the world's cgroups, the directories the
# components hard-code, and processes running from the world's binaries or
# directories. Take one before `world.sh up` and one after `world.sh down`:
# they must be the same.
#
#	world/snapshot.sh >before; world/world.sh up; ...; world/world.sh down
#	world/snapshot.sh >after; diff -u before after
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
# shellcheck source=lib/common.sh
. "$here/lib/common.sh"

section() { printf '\n## %s\n' "$1"; }

section links
ip -o link show | awk '{ sub(/@.*/, "", $2); print $2 }' | tr -d ':' | sort

# IPv6 link-local addresses come and go with a link's carrier (docker0 gets
# one when its first container starts): they say nothing about the world.
section addresses
ip -o addr show | awk '{ print $2, $3, $4 }' | grep -v ' fe80::' | sort

section routes
ip route show table all | grep -v '^\(local\|broadcast\|multicast\|fe80::/64\) ' | sed 's/ \(linkdown\|expires [0-9]*sec\)//g' | sort

section "network namespaces"
ip netns list | awk '{ print $1 }' | sort

section mounts
awk '{ print $5, $9 }' /proc/self/mountinfo | sort

section iptables
iptables-save | grep -v '^#' | sed 's/ \[[0-9]*:[0-9]*\]$//'

section sysctls
for k in "${SYSCTLS[@]}" net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.netfilter.nf_conntrack_max; do
	printf '%s=%s\n' "$k" "$(sysctl -n "$k" 2>/dev/null || echo '?')"
done

section cgroups
awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo | while read -r root; do
	if [ -d "$root/$CGROUP_PARENT" ]; then echo "$root/$CGROUP_PARENT"; fi
done | sort

section files
for d in "$STATE" "$RUN" /run/netns /var/lib/cni /var/log/containers /var/log/pods /run/containerd /var/lib/kubelet /etc/cni /opt/cni /opt/containerd /var/run/kubernetes /var/run/nri /etc/cdi /var/run/cdi; do
	if [ -e "$d" ]; then
		echo "$d"
		find "$d" -mindepth 1 -maxdepth 2 2>/dev/null | sort | sed 's/^/  /'
	fi
done

# Processes running the world's binaries (not the other tools in the cache,
# which tests run on their own) or anything from the world's directories.
section processes
dirs=("$STATE" "$RUN")
for c in k8s etcd containerd runc cni coredns; do dirs+=("$("$here/build.sh" --dir "$c")"); done
for p in /proc/[0-9]*; do
	exe=$(readlink "$p/exe" 2>/dev/null) || continue
	for d in "${dirs[@]}"; do
		case $exe in "$d"/*) tr '\0' ' ' <"$p/cmdline"; echo; break ;; esac
	done
done | sort

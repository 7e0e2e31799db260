#!/usr/bin/env bash
# docker.sh starts Debian's Docker Engine (dockerd) for the local side of the
# tests and the demo, and stops it again leaving the machine as it was:
# the nftables/iptables ruleset, the docker0 bridge and ip_forward are restored.
# A Docker Engine that was already running is used as it is and never stopped.
# Usage: world/docker.sh up|down|status
set -euo pipefail
state=/run/gefyra-docker
log() { printf '[docker] %s\n' "$*" >&2; }

running() { docker info >/dev/null 2>&1; }

up() {
	if running; then
		log "Docker Engine is running"
		return 0
	fi
	command -v dockerd >/dev/null || { log "dockerd is not installed: apt-get install docker.io"; return 1; }
	[ "$(id -u)" = 0 ] || { log "starting dockerd needs root"; return 1; }
	mkdir -p "$state"
	nft list ruleset >"$state/ruleset.before"
	cat /proc/sys/net/ipv4/ip_forward >"$state/ip_forward.before"
	if ip link show docker0 >/dev/null 2>&1; then echo yes; else echo no; fi >"$state/docker0.before"
	log "starting dockerd (log: $state/dockerd.log)"
	setsid dockerd --pidfile "$state/dockerd.pid" >"$state/dockerd.log" 2>&1 </dev/null &
	echo $! >"$state/started.pid"
	for _ in $(seq 1 120); do
		if running; then
			log "Docker Engine is up"
			return 0
		fi
		if ! kill -0 "$(cat "$state/started.pid")" 2>/dev/null; then
			log "dockerd exited; last lines of its log:"
			tail -n 20 "$state/dockerd.log" >&2
			down
			return 1
		fi
		sleep 0.5
	done
	log "dockerd did not answer within 60s; see $state/dockerd.log"
	down
	return 1
}

down() {
	[ -f "$state/started.pid" ] || { log "no Docker Engine started by gefyra"; return 0; }
	local pid
	pid=$(cat "$state/started.pid")
	if kill -0 "$pid" 2>/dev/null; then
		# Containers left by a failed test would keep the daemon busy.
		docker ps -aq --filter label=dev.gefyra.test 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
		kill -TERM "$pid"
		for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
		kill -0 "$pid" 2>/dev/null && { log "dockerd did not stop; killing it"; kill -KILL "$pid"; }
	fi
	if [ "$(cat "$state/docker0.before" 2>/dev/null)" = no ] && ip link show docker0 >/dev/null 2>&1; then
		ip link delete docker0
	fi
	# Docker leaves its chains behind when it stops: put back the ruleset
	# (iptables and ip6tables alike, both are nftables here) as it was.
	if [ -f "$state/ruleset.before" ]; then
		nft flush ruleset
		nft -f "$state/ruleset.before" 2>&1 | grep -v "^# Warning" >&2 || true
	fi
	[ -f "$state/ip_forward.before" ] && cat "$state/ip_forward.before" >/proc/sys/net/ipv4/ip_forward
	rm -rf "$state"
	log "Docker Engine stopped, machine restored"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) if running; then echo "Docker Engine: running"; else echo "Docker Engine: not running"; fi ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

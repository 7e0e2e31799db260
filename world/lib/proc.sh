# proc.sh: starting and stopping the world's processes by the PIDs recorded
# when they started. Sourced, never run.

# The PATH every component gets: the shim next to containerd, runc, and the
# machine's iptables/mount tools; nothing from the caller's environment.
component_path() {
	printf '%s' "$CONTAINERD_DIR:$(dirname "$RUNC"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

# start NAME BINARY ARGS...: starts BINARY in the node's network namespace, in
# a session of its own, logging to $LOGS/NAME.log, and records "PID BINARY"
# in $PIDS/NAME. The recording happens in the process itself right before it
# becomes BINARY, so the PID is exact whether or not setsid had to fork. It
# does not inherit world.sh's lock (fd 9), or it would hold it for its life.
start() {
	local name=$1; shift
	local pidfile=$PIDS/$name
	rm -f "$pidfile"
	env -i PATH="$(component_path)" HOME=/root LANG=C.UTF-8 \
		nsenter --net="$NETNS_PATH" -- setsid bash -c 'echo "$$ $1" >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
		</dev/null >"$LOGS/$name.log" 2>&1 9<&- &
	local i
	for i in $(seq 50); do
		[ -s "$pidfile" ] && return 0
		sleep 0.05
	done
	die "$name did not start (see $LOGS/$name.log)"
}

# pid_of NAME: prints the PID of NAME if that process still runs the binary it
# was started as (a recycled PID is never taken for it).
pid_of() {
	local pidfile=$PIDS/$1 pid bin exe
	[ -s "$pidfile" ] || return 1
	read -r pid bin <"$pidfile" || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[ "$exe" = "$bin" ] || return 1
	echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# stop NAME [SECONDS]: SIGTERM, then SIGKILL after SECONDS (default 10).
stop() {
	local name=$1 secs=${2:-10} pid i
	if pid=$(pid_of "$name"); then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq $((secs * 10))); do
			running "$name" || break
			sleep 0.1
		done
		if running "$name"; then
			log "$name (pid $pid) ignored SIGTERM for ${secs}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		fi
	fi
	rm -f "$PIDS/$name"
}

# pids_running EXE: the PIDs of all processes whose executable is EXE.
pids_running() {
	local want=$1 p
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/exe" 2>/dev/null)" = "$want" ] && echo "${p#/proc/}"
	done
	return 0
}

#!/usr/bin/env bash
# Jaeger for Ferry's tracing tests: builds Jaeger once from the tools module
# (tools/go.mod) into a cache outside the repo, runs it with every port on
# 127.0.0.1, and stops it.
#
#   scripts/jaeger.sh build    build the binary unless cached; print its path
#   scripts/jaeger.sh start    build if needed, start (or reuse a running one),
#                              wait until the query API answers, and print
#                              the environment tests read, for eval:
#                                eval "$(scripts/jaeger.sh start)"
#   scripts/jaeger.sh stop     stop the Jaeger that start started
#   scripts/jaeger.sh env      print that environment again
#
# The first build compiles ~300 modules: about 9 minutes on a cold machine
# (2 cores), seconds once the binary is cached. Cache: $FERRY_CACHE, default
# ~/.cache/ferry. Jaeger keeps traces in memory only; its log is
# $FERRY_CACHE/run/jaeger.log.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${FERRY_CACHE:-$HOME/.cache/ferry}"
run="$cache/run"
version="$(awk '$1 == "github.com/jaegertracing/jaeger" { print $2 }' "$root/tools/go.mod")"
bin="$cache/jaeger-$version"
pidfile="$run/jaeger.pid"
log="$run/jaeger.log"

host=127.0.0.1
query_port=16686
otlp_grpc_port=4317
otlp_http_port=4318
query_url="http://$host:$query_port"

say() { echo "jaeger: $*" >&2; }

# require exits with one line naming the programs this needs that are not on
# PATH (flock and setsid are util-linux's; Debian/Ubuntu: apt-get install
# curl util-linux).
require() {
	local missing=()
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		say "needs ${missing[*]} on PATH (Debian/Ubuntu: apt-get install curl util-linux; Go from https://go.dev/dl)"
		exit 1
	fi
}

build() {
	require flock go
	if [ -x "$bin" ]; then
		echo "$bin"
		return
	fi
	mkdir -p "$cache"
	# One build at a time: a second caller waits for the first's binary.
	exec 9>"$cache/jaeger.lock"
	flock 9
	if [ ! -x "$bin" ]; then
		say "building github.com/jaegertracing/jaeger/cmd/jaeger $version into $bin (about 9 minutes the first time)"
		local start=$SECONDS
		(cd "$root/tools" && go build -trimpath -ldflags='-s -w' -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
		mv "$bin.tmp" "$bin"
		say "built in $((SECONDS - start))s"
	fi
	flock -u 9
	echo "$bin"
}

answers() { curl -fsS -o /dev/null --max-time 2 "$query_url/api/services" 2>/dev/null; }

running_pid() {
	local pid
	pid="$(cat "$pidfile" 2>/dev/null)" || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

print_env() {
	echo "export FERRY_JAEGER_QUERY=$query_url"
	echo "export FERRY_OTLP_ENDPOINT=$host:$otlp_grpc_port"
	echo "export FERRY_OTLP_HTTP_ENDPOINT=http://$host:$otlp_http_port"
}

start() {
	require curl flock setsid go
	build >/dev/null
	mkdir -p "$run"
	if pid="$(running_pid)" && answers; then
		say "already running (pid $pid)"
		print_env
		return
	fi
	if answers; then
		say "something else answers on $query_url; stop it first"
		exit 1
	fi
	# Every listener on 127.0.0.1: the receivers, health check, metrics
	# and sampling through JAEGER_LISTEN_HOST, the query API by flags.
	JAEGER_LISTEN_HOST=$host setsid "$bin" \
		--set=extensions.jaeger_query.http.endpoint=$host:$query_port \
		--set=extensions.jaeger_query.grpc.endpoint=$host:16685 \
		</dev/null >"$log" 2>&1 &
	local pid=$!
	echo "$pid" >"$pidfile"
	local deadline=$((SECONDS + 60))
	until answers; do
		if ! kill -0 "$pid" 2>/dev/null; then
			say "exited at start; its log ($log):"
			tail -n 30 "$log" >&2
			exit 1
		fi
		if [ $SECONDS -ge $deadline ]; then
			say "query API did not answer within 60s; log: $log"
			exit 1
		fi
		sleep 0.2
	done
	say "started (pid $pid): query $query_url, OTLP gRPC $host:$otlp_grpc_port, OTLP HTTP http://$host:$otlp_http_port"
	print_env
}

stop() {
	local pid
	if ! pid="$(running_pid)"; then
		say "not running"
		rm -f "$pidfile"
		return
	fi
	kill "$pid"
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$pidfile"
	say "stopped (pid $pid)"
}

case "${1:-}" in
build) build ;;
start) start ;;
stop) stop ;;
env) print_env ;;
*)
	echo "usage: $0 build|start|stop|env" >&2
	exit 2
	;;
esac

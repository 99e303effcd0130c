#!/usr/bin/env bash
# CPU per message and memory of each process of a broker node, on each data
# plane between the core and its plugins, in one run:
#
#   scripts/boundary-cpu.sh [REPS]        (default 3 reps, interleaved)
#
# For each rep and each data plane (ring, grpc) it starts `ferry run` on a
# file-store broker (flush async) with its plugins in their own processes,
# reads every process's RSS when idle, drives it from a separate process
# (`ferry bench produce --mode async`, 256 in flight, then `consume`), and
# prints, per workload and process, the CPU time it used per message (from
# /proc/PID/stat) and its RSS at the end. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
go build -o bin/ferry ./cmd/ferry
tmp=$(mktemp -d)
trap 'pkill -f "ferry run $tmp/" 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$((20000 + RANDOM % 20000))
hz=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

run() { # dataplane rep
	local dp=$1 rep=$2 dir="$tmp/$1-$2"
	mkdir -p "$dir"
	cat >"$dir/p.yaml" <<EOF
name: boundary
node:
  data_dir: $dir/data
plugins:
  data_plane: $dp
  storage:
    type: file
    config:
      flush: async
  transport:
    type: grpc
    config:
      listen: 127.0.0.1:$port
topics:
  - name: orders
    queues: 4
EOF
	bin/ferry run "$dir/p.yaml" >"$dir/log" 2>&1 &
	local core=$!
	for _ in $(seq 100); do
		bin/ferry bench produce --broker 127.0.0.1:$port --topic orders --count 1 >/dev/null 2>&1 && break
		sleep 0.1
	done
	sleep 2
	local storage transport
	storage=$(pgrep -P "$core" -f "plugin serve storage")
	transport=$(pgrep -P "$core" -f "plugin serve transport")
	local names=(core storage transport) pids=("$core" "$storage" "$transport")
	local line="rep $rep  $dp  idle RSS:"
	for i in 0 1 2; do line+=" ${names[$i]} $(($(rss_kib "${pids[$i]}") / 1024)) MiB"; done
	echo "$line"
	for w in produce consume; do
		local before=() n
		for p in "${pids[@]}"; do before+=("$(cpu_ticks "$p")"); done
		if [ "$w" = produce ]; then
			out=$(bin/ferry bench produce --broker 127.0.0.1:$port --topic orders --mode async --inflight 256 --duration 5s --json)
		else
			out=$(bin/ferry bench consume --broker 127.0.0.1:$port --topic orders --count 200000 --no-preload --json)
		fi
		n=$(echo "$out" | tr ',' '\n' | awk -F: '/"messages"/ {print $2; exit}')
		rate=$(echo "$out" | tr ',' '\n' | awk -F: '/"msgs_per_sec"/ {printf "%d", $2; exit}')
		line="rep $rep  $dp  $w: $n msgs, $rate msgs/s; CPU µs/msg:"
		local total=0
		for i in 0 1 2; do
			local us=$(( ( $(cpu_ticks "${pids[$i]}") - ${before[$i]} ) * 1000000 / hz ))
			total=$((total + us))
			line+=" ${names[$i]} $(awk -v u="$us" -v n="$n" 'BEGIN {printf "%.1f", u / n}')"
		done
		line+=" all $(awk -v u="$total" -v n="$n" 'BEGIN {printf "%.1f", u / n}')"
		line+="; RSS MiB:"
		for i in 0 1 2; do line+=" ${names[$i]} $(($(rss_kib "${pids[$i]}") / 1024))"; done
		echo "$line"
	done
	kill "$core"
	wait "$core" 2>/dev/null || true
}

for rep in $(seq "$reps"); do
	if [ $((rep % 2)) = 1 ]; then order="ring grpc"; else order="grpc ring"; fi
	for dp in $order; do run "$dp" "$rep"; done
done

#!/usr/bin/env bash
# CPU per message and memory of each process of a broker node, on each data
# plane between the core and its plugins, in one run:
#
#   scripts/boundary-cpu.sh [REPS]        (default 3 reps, interleaved)
#   PLANES=ring BINS="old=/tmp/ferry-old new=/tmp/ferry-new" scripts/boundary-cpu.sh 3
#
# PLANES are the data planes to run (default "ring grpc"; "inprocess": the
# plugins linked into the node, one process); WORKLOADS the
# workloads, in order (default "produce consume"; also "sync16": 16 sync
# producers; "sync1": one; consume reads what produce stored); BINS the ferry
# binaries to compare, as name=path (default: bin/ferry, built from this
# tree), each driving a node of its own build. For each rep, data plane and
# binary (the order reversed on every rep) it starts `ferry run` on a
# file-store broker (flush async) with its plugins in their own processes,
# reads every process's RSS when idle, drives it from a separate process
# (`ferry bench produce --mode async`, 256 in flight, then `consume`), and
# prints, per workload and process, the CPU time it used per message (from
# /proc/PID/stat; "client" is the bench process) and its RSS at the end.
# Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
planes=${PLANES:-ring grpc}
if [ -z "${BINS:-}" ]; then
	go build -o bin/ferry ./cmd/ferry
	BINS="ferry=bin/ferry"
fi
tmp=$(mktemp -d)
trap 'pkill -f " run $tmp/" 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$((20000 + RANDOM % 20000))
hz=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# context switches of every thread of a process (voluntary: it slept)
ctx_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s + 0}'; }

run() { # dataplane rep name binary
	local dp=$1 rep=$2 name=$3 ferry=$4 dir="$tmp/$1-$2-$3"
	local mode=subprocess plane=$dp
	[ "$dp" = inprocess ] && mode=inprocess plane=ring
	mkdir -p "$dir"
	cat >"$dir/p.yaml" <<EOF
name: boundary
node:
  data_dir: $dir/data
plugins:
  mode: $mode
  data_plane: $plane
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
	"$ferry" run "$dir/p.yaml" >"$dir/log" 2>&1 &
	local core=$!
	for _ in $(seq 100); do
		"$ferry" bench produce --broker 127.0.0.1:$port --topic orders --count 1 >/dev/null 2>&1 && break
		sleep 0.1
	done
	sleep 2
	local storage transport names pids
	if [ "$mode" = inprocess ]; then
		names=(node) pids=("$core")
	else
		storage=$(pgrep -P "$core" -f "plugin serve storage")
		transport=$(pgrep -P "$core" -f "plugin serve transport")
		names=(core storage transport) pids=("$core" "$storage" "$transport")
	fi
	local line="rep $rep  $name $dp  idle RSS:"
	for i in "${!pids[@]}"; do line+=" ${names[$i]} $(($(rss_kib "${pids[$i]}") / 1024)) MiB"; done
	echo "$line"
	local stored=0
	for w in ${WORKLOADS:-produce consume}; do
		local before=() csbefore=() n
		for p in "${pids[@]}"; do before+=("$(cpu_ticks "$p")"); csbefore+=("$(ctx_switches "$p")"); done
		if [ "$w" = sync1 ]; then
			out=$(/usr/bin/time -f 'clientcpu %U %S' -o "$dir/time" "$ferry" bench produce --broker 127.0.0.1:$port --topic orders --mode sync --producers 1 --duration 5s --json)
		elif [ "$w" = sync16 ]; then
			out=$(/usr/bin/time -f 'clientcpu %U %S' -o "$dir/time" "$ferry" bench produce --broker 127.0.0.1:$port --topic orders --mode sync --producers 16 --duration 5s --json)
		elif [ "$w" = produce ]; then
			out=$(/usr/bin/time -f 'clientcpu %U %S' -o "$dir/time" "$ferry" bench produce --broker 127.0.0.1:$port --topic orders --mode async --inflight 256 --duration 5s --json)
		else
			# what the produce run stored, at most 200k (a slow run may store fewer)
			out=$(/usr/bin/time -f 'clientcpu %U %S' -o "$dir/time" "$ferry" bench consume --broker 127.0.0.1:$port --topic orders --count $((stored < 200000 ? stored : 200000)) --no-preload --json)
		fi
		n=$(echo "$out" | tr ',' '\n' | awk -F: '/"messages"/ {print $2; exit}')
		rate=$(echo "$out" | tr ',' '\n' | awk -F: '/"msgs_per_sec"/ {printf "%d", $2; exit}')
		[ "$w" = produce ] && stored=$n
		line="rep $rep  $name $dp  $w: $n msgs, $rate msgs/s; CPU µs/msg:"
		local total=0
		for i in "${!pids[@]}"; do
			local us=$(( ( $(cpu_ticks "${pids[$i]}") - ${before[$i]} ) * 1000000 / hz ))
			total=$((total + us))
			line+=" ${names[$i]} $(awk -v u="$us" -v n="$n" 'BEGIN {printf "%.1f", u / n}')"
		done
		line+=" all $(awk -v u="$total" -v n="$n" 'BEGIN {printf "%.1f", u / n}')"
		line+=" client $(awk -v n="$n" '/^clientcpu/ {printf "%.1f", ($2 + $3) * 1000000 / n}' "$dir/time")"
		line+="; sleeps/msg:"
		for i in "${!pids[@]}"; do line+=" ${names[$i]} $(awk -v a="$(ctx_switches "${pids[$i]}")" -v b="${csbefore[$i]}" -v n="$n" 'BEGIN {printf "%.2f", (a - b) / n}')"; done
		line+="; p50 $(echo "$out" | tr ',' '\n' | awk -F: '/"p50_us"/ {printf "%d", $2; exit}') µs"
		line+="; RSS MiB:"
		for i in "${!pids[@]}"; do line+=" ${names[$i]} $(($(rss_kib "${pids[$i]}") / 1024))"; done
		echo "$line"
	done
	kill "$core"
	wait "$core" 2>/dev/null || true
}

runs=()
for dp in $planes; do
	for b in $BINS; do runs+=("$dp ${b%%=*} ${b#*=}"); done
done
for rep in $(seq "$reps"); do
	order=("${runs[@]}")
	if [ $((rep % 2)) = 0 ]; then
		order=()
		for ((i = ${#runs[@]} - 1; i >= 0; i--)); do order+=("${runs[$i]}"); done
	fi
	for r in "${order[@]}"; do
		read -r dp name ferry <<<"$r"
		run "$dp" "$rep" "$name" "$ferry"
	done
done

#!/usr/bin/env bash
# What tracing costs in CPU per message, per process, in one run: the async
# producer of scripts/trace-overhead.sh (`ferry bench produce --embedded`,
# 256 in flight, plugins in their own processes, file store with async
# flush, exporting to a real Jaeger from scripts/jaeger.sh) with tracing
# off, at 1 % and at 100 %, sending a fixed --count, for one or more ferry
# binaries. Throughput on a shared machine says little; the CPU time each
# process used per message (from /proc/PID/stat, polled every 0.1 s until
# the process exits; "node" is the bench process: the client and the
# broker core) says more. Reps interleave binaries and settings, the order
# reversed on every rep; the medians are printed.
#
#   scripts/trace-cpu.sh [REPS]                       (default 3)
#   BINS="old=/tmp/ferry-old new=/tmp/ferry-new" COUNT=100000 scripts/trace-cpu.sh 3
#   SETTINGS="0.01 1" WORKLOAD=sync scripts/trace-cpu.sh
#
# Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
count=${COUNT:-100000}
settings=(${SETTINGS:-off 0.01 1})
workload=${WORKLOAD:-async}
if [ -z "${BINS:-}" ]; then
	go build -o bin/ferry ./cmd/ferry
	BINS="ferry=bin/ferry"
fi
eval "$(scripts/jaeger.sh start)"
: "${FERRY_OTLP_ENDPOINT:?scripts/jaeger.sh start did not say where Jaeger listens}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hz=$(getconf CLK_TCK)

pipeline() { # setting → file
	local s=$1 f="$tmp/$1.yaml"
	{
		cat <<EOP
name: trace-cpu
plugins:
  mode: subprocess
  storage:
    type: file
    config:
      flush: async
  transport:
    type: grpc
topics:
  - name: orders
    queues: 4
EOP
		if [ "$s" != off ]; then
			cat <<EOP
tracing:
  exporter: otlp
  endpoint: $FERRY_OTLP_ENDPOINT
  sample_ratio: $s
  service_name: ferry-cpu-$s
EOP
		fi
	} >"$f"
	echo "$f"
}

# poll PID DIR: until PID exits, writes each of PID's and its children's
# CPU ticks (utime + stime) to DIR/<role> (node, storage, transport).
poll() {
	local pid=$1 dir=$2
	while [ -e "/proc/$pid/stat" ]; do
		awk '{print $14 + $15}' "/proc/$pid/stat" >"$dir/node.tmp" 2>/dev/null && mv "$dir/node.tmp" "$dir/node"
		for c in $(pgrep -P "$pid" 2>/dev/null); do
			local role
			case "$({ tr '\0' ' ' <"/proc/$c/cmdline"; } 2>/dev/null)" in
			*"serve storage"*) role=storage ;;
			*"serve transport"*) role=transport ;;
			*) continue ;;
			esac
			awk '{print $14 + $15}' "/proc/$c/stat" >"$dir/$role.tmp" 2>/dev/null && mv "$dir/$role.tmp" "$dir/$role"
		done
		sleep 0.1
	done
}

run() { # name binary setting rep → "node storage transport all" µs/msg
	local name=$1 ferry=$2 s=$3 rep=$4 dir="$tmp/$1-$3-$4"
	mkdir -p "$dir"
	local args=(--mode async --inflight 256)
	[ "$workload" = sync ] && args=(--mode sync --producers 1)
	"$ferry" bench produce --embedded "$(pipeline "$s")" "${args[@]}" --count "$count" --json --progress never >"$dir/out" 2>"$dir/err" &
	local pid=$!
	poll "$pid" "$dir" &
	local poller=$!
	wait "$pid" || { echo "bench failed ($name, tracing $s):" >&2; cat "$dir/err" >&2; exit 1; }
	wait "$poller" || true
	local n
	n=$(tr ',' '\n' <"$dir/out" | awk -F: '/"messages"/ {print $2; exit}')
	local line="" total=0
	for r in node storage transport; do
		local t
		t=$(cat "$dir/$r" 2>/dev/null || echo 0)
		total=$((total + t))
		line+="$(awk -v t="$t" -v hz="$hz" -v n="$n" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}') "
	done
	line+="$(awk -v t="$total" -v hz="$hz" -v n="$n" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')"
	echo "$line"
}

runs=()
for b in $BINS; do
	for s in "${settings[@]}"; do runs+=("${b%%=*} ${b#*=} $s"); done
done
declare -A got
for rep in $(seq "$reps"); do
	order=("${runs[@]}")
	if [ $((rep % 2)) = 0 ]; then
		order=()
		for ((i = ${#runs[@]} - 1; i >= 0; i--)); do order+=("${runs[$i]}"); done
	fi
	for r in "${order[@]}"; do
		read -r name ferry s <<<"$r"
		got[$name,$s,$rep]=$(run "$name" "$ferry" "$s" "$rep")
		echo "rep $rep  $name  tracing $s: CPU µs/msg node storage transport all: ${got[$name,$s,$rep]}" >&2
	done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
printf '%-8s %-8s %8s %8s %9s %8s   (CPU µs/msg, medians of %d, %d msgs, %s)\n' binary tracing node storage transport all "$reps" "$count" "$workload"
for b in $BINS; do
	name=${b%%=*}
	for s in "${settings[@]}"; do
		line=$(printf '%-8s %-8s' "$name" "$s")
		for col in 1 2 3 4; do
			m=$(for rep in $(seq "$reps"); do echo "${got[$name,$s,$rep]}" | awk -v c=$col '{print $c}'; done | median)
			line+=$(printf ' %8s' "$m")
		done
		echo "$line"
	done
done

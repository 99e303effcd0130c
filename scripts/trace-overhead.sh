#!/usr/bin/env bash
# What tracing costs, in one run: async and sync producers against a node
# with its plugins in their own processes (file store, flush async), with
# tracing off, at 1 % and at 100 % sampling, exporting to a real Jaeger
# (scripts/jaeger.sh). Each workload runs `ferry bench produce --embedded`
# (the client in the node's process, as in bench/cmd/ferry-vs-jetstream; its
# producer.send spans are sampled at the pipeline's ratio, every later hop
# follows the message's decision); reps interleave the three settings, the
# order reversed on every rep, and the medians of the rates and of their
# ratios to tracing off in the same rep are printed.
#
#   scripts/trace-overhead.sh [REPS]          (default 3)
#   DURATION=5s WORKLOADS="async sync" scripts/trace-overhead.sh 3
#
# Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
duration=${DURATION:-5s}
workloads=${WORKLOADS:-async sync}
go build -o bin/ferry ./cmd/ferry
eval "$(scripts/jaeger.sh start)"
: "${FERRY_OTLP_ENDPOINT:?scripts/jaeger.sh start did not say where Jaeger listens}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pipeline() { # setting → file
	local s=$1 f="$tmp/$1.yaml"
	{
		cat <<EOP
name: trace-overhead
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
		case $s in
		off) ;;
		*)
			cat <<EOP
tracing:
  exporter: otlp
  endpoint: $FERRY_OTLP_ENDPOINT
  sample_ratio: $s
  service_name: ferry-overhead-$s
EOP
			;;
		esac
	} >"$f"
	echo "$f"
}

rate() { # pipeline workload
	local args=(--mode async --inflight 256)
	[ "$2" = sync ] && args=(--mode sync --producers 1)
	bin/ferry bench produce --embedded "$1" "${args[@]}" --duration "$duration" --json --progress never |
		tr ',' '\n' | awk -F: '/"msgs_per_sec"/ {printf "%d", $2; exit}'
}

settings=(off 0.01 1)
declare -A got
for rep in $(seq "$reps"); do
	order=("${settings[@]}")
	if [ $((rep % 2)) = 0 ]; then order=(1 0.01 off); fi
	for w in $workloads; do
		for s in "${order[@]}"; do
			got[$w,$s,$rep]=$(rate "$(pipeline "$s")" "$w")
			echo "rep $rep  $w  tracing $s: ${got[$w,$s,$rep]} msgs/s" >&2
		done
	done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for w in $workloads; do
	for s in "${settings[@]}"; do
		m=$(for rep in $(seq "$reps"); do echo "${got[$w,$s,$rep]}"; done | median)
		r=$(for rep in $(seq "$reps"); do awk -v a="${got[$w,$s,$rep]}" -v b="${got[$w,off,$rep]}" 'BEGIN {printf "%.3f\n", a / b}'; done | median)
		printf '%-6s tracing %-5s median %8d msgs/s  ×off %s\n' "$w" "$s" "$m" "$r"
	done
done

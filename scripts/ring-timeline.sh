#!/usr/bin/env bash
# Where one sync send's time goes between a node's processes: builds ferry
# with the ring timeline (-tags ferry_timeline: every ring record published
# and read is stamped), runs a file-store broker (flush async) with its
# plugins in their own processes on the ring data plane, drives it with one
# sync producer from a separate process, and prints the median time of each
# hop of a produce: transport -> core, the core's routing, core -> storage,
# the store's append, storage -> core, the core's answer, core -> transport,
# and the rest of the round trip (gRPC to the client and back).
#
#   scripts/ring-timeline.sh [MESSAGES]     (default 31000; at least 30001)
#
# Environment for the node (GOMAXPROCS, FERRY_RING_*) is passed through.
# Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-31000}
tmp=$(mktemp -d)
trap 'pkill -f " run $tmp/" 2>/dev/null || true; rm -rf "$tmp"' EXIT
go build -tags ferry_timeline -o "$tmp/ferry" ./cmd/ferry
port=$((20000 + RANDOM % 20000))
cat >"$tmp/p.yaml" <<YAML
name: timeline
node:
  data_dir: $tmp/data
plugins:
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
YAML
FERRY_RING_TIMELINE="$tmp/events" "$tmp/ferry" run "$tmp/p.yaml" >"$tmp/log" 2>&1 &
for _ in $(seq 100); do
	"$tmp/ferry" bench produce --broker 127.0.0.1:$port --topic orders --count 1 >/dev/null 2>&1 && break
	sleep 0.1
done
"$tmp/ferry" bench produce --broker 127.0.0.1:$port --topic orders --mode sync --count "$count" | tail -1
# Each process writes its events once it has recorded 60,000.
for _ in $(seq 100); do
	[ "$(ls "$tmp"/events.* 2>/dev/null | wc -l)" -ge 3 ] && break
	sleep 0.1
done
python3 - "$tmp" <<'PY'
import glob, statistics, sys
events = []
for f in glob.glob(sys.argv[1] + "/events.*"):
    for line in open(f):
        at, kind = line.split()
        events.append((int(at), int(kind)))
events.sort()
# A produce: TransportFrame up (16), Append down (1) and its answer up (1),
# CoreFrame down (17); a read is the negated kind.
chain = [16, -16, 1, -1, 1, -1, 17, -17, 16]
hops = ["transport -> core (the core's wake-up)", "core: route the produce",
        "core -> storage (the store's wake-up)", "storage: append",
        "storage -> core", "core: answer the produce",
        "core -> transport (the transport's wake-up)",
        "transport -> client -> transport (gRPC)"]
evs = [e for e in events if abs(e[1]) in (1, 16, 17)]
runs, i = [], 0
while i + len(chain) <= len(evs):
    if all(evs[i + j][1] == chain[j] for j in range(len(chain))):
        runs.append([evs[i + j][0] for j in range(len(chain))])
        i += len(chain) - 1
    else:
        i += 1
if not runs:
    sys.exit("no complete produce in the timeline")
print(f"{len(runs)} sends; median µs per hop:")
for j, hop in enumerate(hops):
    print(f"  {hop:45s} {statistics.median((r[j + 1] - r[j]) / 1000 for r in runs):7.1f}")
print(f"  {'round trip':45s} {statistics.median((r[-1] - r[0]) / 1000 for r in runs):7.1f}")
PY

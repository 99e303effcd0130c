#!/usr/bin/env bash
# What TLS plus authentication and authorization cost, in one run: `ferry
# bench --embedded` against the same pipeline (file store, async flush,
# plugins in their own processes) open, and with the grpc transport
# speaking TLS and a security section whose normal user (not super, so
# every call is authenticated and its ACL entries are checked) has Pub and
# Sub on the topic and Sub on the bench's groups. Workloads: async produce
# (4 producers, 256 in flight each), one sync producer (its p50), and pull
# consume (each run's node is new: what it consumes is produced first,
# untimed). A third setting, tls, has TLS and no users: what TLS alone
# costs. Reps interleave the settings (and the binaries of BINS), the order
# reversed on every rep; the medians and each setting ÷ open are printed.
# Besides the rate, each run's CPU time per message is read from
# /proc/PID/stat of the bench process (client and broker core: "node") and
# its storage and transport plugins, polled every 0.1 s: on a loaded
# machine it says more than the rate. A consume run's CPU includes the
# untimed produce before it.
# The target (issue 14): secure ≥ 0.85 × open.
#
#   scripts/security-bench.sh [REPS]                 (default 3)
#   COUNT=200000 BIN=/tmp/ferry scripts/security-bench.sh 5
#   BINS="old=/tmp/ferry-old new=/tmp/ferry-new" WORKLOADS=produce scripts/security-bench.sh 5
#
# Needs go, openssl, python3, pgrep and getconf on PATH. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
for p in go openssl python3 pgrep getconf; do command -v "$p" >/dev/null || missing="$missing $p"; done
if [ -n "$missing" ]; then
	echo "security-bench: needs$missing on PATH" >&2
	exit 2
fi
reps=${1:-3}
count=${COUNT:-100000}
workloads=(${WORKLOADS:-produce sync1 consume})
for w in "${workloads[@]}"; do
	case $w in produce | sync1 | consume) ;; *)
		echo "security-bench: WORKLOADS: unknown workload $w (produce, sync1, consume)" >&2
		exit 2
		;;
	esac
done
if [ -z "${BINS:-}" ]; then
	bin=${BIN:-}
	if [ -z "$bin" ]; then
		go build -o bin/ferry ./cmd/ferry
		bin=bin/ferry
	fi
	BINS="ferry=$bin"
fi
names=()
declare -A bins
for b in $BINS; do
	if [ "${b#*=}" = "$b" ] || [ ! -x "${b#*=}" ]; then
		echo "security-bench: BINS: $b is not NAME=EXECUTABLE" >&2
		exit 2
	fi
	names+=("${b%%=*}")
	bins[${b%%=*}]=${b#*=}
done
bin=${bins[${names[0]}]}
hz=$(getconf CLK_TCK)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A CA and the broker's certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=bench-ca -keyout "$tmp/ca-key.pem" -out "$tmp/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=broker \
	-keyout "$tmp/broker-key.pem" -out "$tmp/broker.csr" 2>/dev/null
openssl x509 -req -in "$tmp/broker.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca-key.pem" -days 2 \
	-extfile <(printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') \
	-out "$tmp/broker.pem" 2>/dev/null
head -c 18 /dev/urandom | base64 >"$tmp/password"
hash=$("$bin" user hash <"$tmp/password")

pipeline() { # setting → the pipeline on stdout
	cat <<EOP
name: security-bench
plugins:
  mode: subprocess
  storage: {type: file, config: {flush: async}}
EOP
	if [ "$1" = open ]; then
		echo "  transport: {type: grpc}"
	else
		cat <<EOP
  transport:
    type: grpc
    config: {tls: {cert_file: "$tmp/broker.pem", key_file: "$tmp/broker-key.pem"}}
EOP
	fi
	if [ "$1" = secure ]; then
		cat <<EOP
security:
  users:
    - name: app
      password_hash: "$hash"
      policies:
        - {resources: ["Topic:orders"], actions: [Pub, Sub]}
        - {resources: ["Group:bench*"], actions: [Sub]}
EOP
	fi
	echo "topics:"
	echo "  - {name: orders, queues: 4}"
}
pipeline open >"$tmp/open.yaml"
pipeline tls >"$tmp/tls.yaml"
pipeline secure >"$tmp/secure.yaml"
"$bin" validate "$tmp/open.yaml" "$tmp/tls.yaml" "$tmp/secure.yaml" >/dev/null

# poll PID OUT: until PID exits, writes the CPU ticks (utime + stime) of
# PID and of its storage and transport plugins to OUT ("node storage
# transport").
poll() {
	local pid=$1 out=$2 node=0 storage=0 transport=0 t
	while [ -e "/proc/$pid/stat" ]; do
		t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) && node=$t
		for c in $(pgrep -P "$pid" 2>/dev/null); do
			t=$(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null) || continue
			case "$({ tr '\0' ' ' <"/proc/$c/cmdline"; } 2>/dev/null)" in
			*"serve storage"*) storage=$t ;;
			*"serve transport"*) transport=$t ;;
			esac
		done
		echo "$node $storage $transport" >"$out"
		sleep 0.1
	done
}

run() { # binary setting workload out → one JSON result in out.json, CPU ticks in out.cpu
	local b=${bins[$1]} s=$2 w=$3 out=$4 args=()
	case $s in
	tls) args=(--tls-ca "$tmp/ca.pem") ;;
	secure) args=(--tls-ca "$tmp/ca.pem" --user app --password-file "$tmp/password") ;;
	esac
	case $w in
	produce) "$b" bench produce --embedded "$tmp/$s.yaml" --mode async --producers 4 --count "$count" --json --progress never "${args[@]}" >"$out.json" &;;
	sync1) "$b" bench produce --embedded "$tmp/$s.yaml" --mode sync --producers 1 --count $((count / 20)) --json --progress never "${args[@]}" >"$out.json" &;;
	consume) "$b" bench consume --embedded "$tmp/$s.yaml" --count "$count" --delivery pull --json --progress never "${args[@]}" >"$out.json" &;;
	esac
	local pid=$!
	poll "$pid" "$out.cpu" &
	local poller=$!
	if ! wait "$pid"; then
		echo "security-bench: the $w bench of $1 ($s) failed" >&2
		exit 1
	fi
	wait "$poller" || true
}

# The control: the secure node must refuse a client without TLS and
# credentials, or its column would measure nothing of either.
if "$bin" bench produce --embedded "$tmp/secure.yaml" --count 10 --progress never >/dev/null 2>&1; then
	echo "security-bench: the secure pipeline served a client without TLS or credentials" >&2
	exit 1
fi
if "$bin" bench produce --embedded "$tmp/secure.yaml" --count 10 --progress never --tls-ca "$tmp/ca.pem" >/dev/null 2>&1; then
	echo "security-bench: the secure pipeline served a client without credentials" >&2
	exit 1
fi
echo "load before: $(uptime)"
runs=()
for n in "${names[@]}"; do
	for s in open tls secure; do runs+=("$n $s"); done
done
for ((r = 1; r <= reps; r++)); do
	order=("${runs[@]}")
	if [ $((r % 2)) = 0 ]; then
		order=()
		for ((i = ${#runs[@]} - 1; i >= 0; i--)); do order+=("${runs[$i]}"); done
	fi
	for w in "${workloads[@]}"; do
		for x in "${order[@]}"; do
			read -r n s <<<"$x"
			run "$n" "$s" "$w" "$tmp/$w-$n-$s-$r"
		done
	done
done
echo "load after: $(uptime)"

python3 - "$tmp" "$reps" "$hz" "${workloads[*]}" "${names[@]}" <<'EOP'
import json, statistics, sys
d, reps, hz, workloads, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(), sys.argv[5:]
def res(w, n, s, r):
    x = json.load(open("%s/%s-%s-%s-%d.json" % (d, w, n, s, r)))["results"][0]
    try:
        ticks = [int(v) for v in open("%s/%s-%s-%s-%d.cpu" % (d, w, n, s, r)).read().split()]
    except (OSError, ValueError):
        ticks = [0, 0, 0]
    x["cpu"] = [t * 1e6 / hz / max(x["messages"], 1) for t in ticks]
    return x
med = statistics.median
print("%-8s %-7s %-7s %10s %8s %7s  %s" % ("workload", "binary", "setting", "msgs/s", "p50 µs", "failed",
      "CPU µs/msg node storage transport all"))
for w in workloads:
    for n in names:
        got = {}
        for s in ("open", "tls", "secure"):
            rs = [res(w, n, s, r) for r in range(1, reps + 1)]
            rate = med(x["msgs_per_sec"] for x in rs)
            p50 = med((x.get("latency") or {}).get("p50_us", 0) for x in rs)
            cpu = [med(x["cpu"][i] for x in rs) for i in range(3)] + [med(sum(x["cpu"]) for x in rs)]
            failed = sum(sum(v for k, v in x["statuses"].items() if k not in ("OK", "SENT")) for x in rs)
            got[s] = (rate, p50, cpu)
            print("%-8s %-7s %-7s %10.0f %8.0f %7d  %s   runs: %s" % (w, n, s, rate, p50, failed,
                  " ".join("%.2f" % c for c in cpu), " ".join("%.0f" % x["msgs_per_sec"] for x in rs)))
        for s in ("tls", "secure"):
            ratio = got[s][0] / got["open"][0]
            line = "%-8s %-7s %s ÷ open: rate %.3f" % (w, n, s, ratio)
            if got["open"][1]:
                line += ", p50 %.3f" % (got[s][1] / got["open"][1])
            if got["open"][2][3]:
                line += ", CPU/msg %.3f" % (got[s][2][3] / got["open"][2][3])
            if s == "secure":
                line += "  (target ≥ 0.85: %s)" % ("met" if ratio >= 0.85 else "NOT met")
            print(line)
EOP

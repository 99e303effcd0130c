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
# costs. Reps interleave the settings, the order reversed on every rep;
# the medians and each setting ÷ open are printed.
# The target (issue 14): secure ≥ 0.85 × open.
#
#   scripts/security-bench.sh [REPS]                 (default 3)
#   COUNT=200000 BIN=/tmp/ferry scripts/security-bench.sh 5
#
# Needs go, openssl and python3 on PATH. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=""
for p in go openssl python3; do command -v "$p" >/dev/null || missing="$missing $p"; done
if [ -n "$missing" ]; then
	echo "security-bench: needs$missing on PATH" >&2
	exit 2
fi
reps=${1:-3}
count=${COUNT:-100000}
bin=${BIN:-}
if [ -z "$bin" ]; then
	go build -o bin/ferry ./cmd/ferry
	bin=bin/ferry
fi
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

run() { # setting workload → one JSON result on stdout
	local s=$1 w=$2 args=()
	case $s in
	tls) args=(--tls-ca "$tmp/ca.pem") ;;
	secure) args=(--tls-ca "$tmp/ca.pem" --user app --password-file "$tmp/password") ;;
	esac
	case $w in
	produce) "$bin" bench produce --embedded "$tmp/$s.yaml" --mode async --producers 4 --count "$count" --json --progress never "${args[@]}" ;;
	sync1) "$bin" bench produce --embedded "$tmp/$s.yaml" --mode sync --producers 1 --count $((count / 20)) --json --progress never "${args[@]}" ;;
	consume) "$bin" bench consume --embedded "$tmp/$s.yaml" --count "$count" --delivery pull --json --progress never "${args[@]}" ;;
	esac
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
order=(open tls secure)
for ((r = 1; r <= reps; r++)); do
	for w in produce sync1 consume; do
		for s in "${order[@]}"; do
			run "$s" "$w" >"$tmp/$w-$s-$r.json"
		done
	done
	order=("${order[2]}" "${order[1]}" "${order[0]}")
done
echo "load after: $(uptime)"

python3 - "$tmp" "$reps" <<'EOP'
import json, statistics, sys
d, reps = sys.argv[1], int(sys.argv[2])
def res(w, s, r):
    return json.load(open("%s/%s-%s-%d.json" % (d, w, s, r)))["results"][0]
print("%-8s %-7s %12s %12s %10s" % ("workload", "setting", "msgs/s", "p50 µs", "failed"))
for w in ("produce", "sync1", "consume"):
    med = {}
    for s in ("open", "tls", "secure"):
        rs = [res(w, s, r) for r in range(1, reps + 1)]
        rate = statistics.median(x["msgs_per_sec"] for x in rs)
        p50 = statistics.median((x.get("latency") or {}).get("p50_us", 0) for x in rs)
        failed = sum(sum(v for k, v in x["statuses"].items() if k not in ("OK", "SENT")) for x in rs)
        med[s] = (rate, p50)
        print("%-8s %-7s %12.0f %12.0f %10d   runs: %s" % (w, s, rate, p50, failed,
              " ".join("%.0f" % x["msgs_per_sec"] for x in rs)))
    for s in ("tls", "secure"):
        ratio = med[s][0] / med["open"][0]
        line = "%-8s %s ÷ open: rate %.3f" % (w, s, ratio)
        if med["open"][1]:
            line += ", p50 %.3f" % (med[s][1] / med["open"][1])
        if s == "secure":
            line += "  (target ≥ 0.85: %s)" % ("met" if ratio >= 0.85 else "NOT met")
        print(line)
EOP

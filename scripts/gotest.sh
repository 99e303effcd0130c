#!/usr/bin/env bash
# go test -race -count=1 of every package, as `make check` runs it, in two
# streams side by side: cmd/ferry's cluster, fault and verify tests (real
# node processes that mostly wait on elections, timeouts and restarts: the
# long pole) in one, every other package and the rest of cmd/ferry's tests in
# the other. A run's CPU was about half of two cores with one stream; two
# finish in about two thirds of the time. The exit status is 1 if either
# stream failed; the cluster stream's output is printed after the other's.
set -uo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
cluster='^Test(Fault|Cluster|Raft|MasterSlave|Verify|Secure)'
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$GO" test -race -count=1 -timeout 20m -run "$cluster" ./cmd/ferry/ >"$out" 2>&1 &
stream=$!
status=0
# shellcheck disable=SC2046 # one argument per package
"$GO" test -race -count=1 -timeout 20m $("$GO" list ./... | grep -v '/cmd/ferry$') || status=1
"$GO" test -race -count=1 -timeout 20m -skip "$cluster" ./cmd/ferry/ || status=1
wait "$stream" || status=1
echo "-- cmd/ferry, ${cluster#^} tests:"
cat "$out"
exit "$status"

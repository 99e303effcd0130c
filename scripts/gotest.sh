#!/usr/bin/env bash
# go test -race -count=1 of every package, as `make check` runs it, in three
# streams side by side: cmd/ferry's cluster and fault tests, cmd/ferry's
# verify tests (both real node processes that mostly wait on elections,
# timeouts and restarts: the long poles), and every other package followed
# by the rest of cmd/ferry's tests. One stream used about half of two cores.
# The exit status is 1 if any stream failed; the cluster and verify streams'
# output is printed after the other's.
set -uo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
cluster='^Test(Fault|Cluster|Raft|MasterSlave|Secure)'
verify='^TestVerify'
cout=$(mktemp)
vout=$(mktemp)
trap 'rm -f "$cout" "$vout"' EXIT
"$GO" test -race -count=1 -timeout 20m -run "$cluster" ./cmd/ferry/ >"$cout" 2>&1 &
cpid=$!
"$GO" test -race -count=1 -timeout 20m -run "$verify" ./cmd/ferry/ >"$vout" 2>&1 &
vpid=$!
status=0
# shellcheck disable=SC2046 # one argument per package
"$GO" test -race -count=1 -timeout 20m $("$GO" list ./... | grep -v '/cmd/ferry$') || status=1
"$GO" test -race -count=1 -timeout 20m -skip "${cluster%)}|Verify)" ./cmd/ferry/ || status=1
wait "$cpid" || status=1
wait "$vpid" || status=1
echo "-- cmd/ferry, ${cluster#^} tests:"
cat "$cout"
echo "-- cmd/ferry, ${verify#^}* tests:"
cat "$vout"
exit "$status"

#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a bounded time each (their seed
# corpora already run as ordinary tests in `go test`):
#
#   scripts/fuzz.sh [FUZZTIME]     (default 5s per target; `make check` runs it)
#
# A failing input is written under the package's testdata/fuzz/ by go test;
# commit it with the fix so that it runs as a regression test from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-${FUZZTIME:-5s}}
n=0
while IFS=: read -r file name; do
	pkg="./$(dirname "$file")"
	echo "== fuzz $pkg $name ($fuzztime)"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
	n=$((n + 1))
done < <(grep -rHo --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+' --exclude-dir=bench --exclude-dir=tools . | sed 's#^\./##; s#:func #:#' | sort)
echo "fuzzed $n targets"

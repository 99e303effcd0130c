#!/usr/bin/env bash
# Runs every Go fuzz target of the module (func FuzzXxx in a _test.go file)
# for a bounded time each, one at a time: default 20s (much less can end
# before the fuzzer has run its seeds on a loaded machine, "context deadline
# exceeded"); `scripts/fuzz.sh 1m` for longer. Their seed corpora also run as ordinary tests in `go test`.
# A failing input is written under the package's testdata/fuzz/ (commit it:
# it then runs as a regression test).
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
time="${1:-20s}"
git ls-files '*_test.go' | grep -v '^bench/' | while read -r file; do
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		pkg="./$(dirname "$file")"
		echo "== fuzz $pkg $target ($time)"
		"$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" -parallel 1 "$pkg"
	done
done

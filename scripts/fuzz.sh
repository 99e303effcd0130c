#!/usr/bin/env bash
# Runs every Go fuzz target of the module (func FuzzXxx in a _test.go file),
# one at a time, each for a bounded number of executions: the counts below,
# sized to about 20 s each on a 2-core machine. Counts, not durations: with
# a duration, Go 1.26's fuzz coordinator can fail a clean run with "context
# deadline exceeded" at the deadline (golang/go#75804, fixed in Go 1.27), and
# it did in CI on this machine. `scripts/fuzz.sh 1m` runs each target for a
# duration instead (longer local runs). Each target is bounded by -timeout,
# so an input that hangs fails the run. Their seed corpora also run as
# ordinary tests in `go test`. A failing input is written under the
# package's testdata/fuzz/ (commit it: it then runs as a regression test).
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
budget() { # target -> -fuzztime
	if [ -n "${1:-}" ] && [ -n "${duration:-}" ]; then
		echo "$duration"
		return
	fi
	case "$1" in
	FuzzRead) echo 50000x ;;
	FuzzDecodeRecord | FuzzRequest) echo 20000x ;;
	FuzzLoadBytes) echo 10000x ;;
	FuzzAuthenticate) echo 20000x ;;
	FuzzRecovery) echo 500x ;; # each execution opens, damages and recovers a store
	*) echo 5000x ;;
	esac
}
duration="${1:-}"
git ls-files '*_test.go' | grep -v '^bench/' | while read -r file; do
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		pkg="./$(dirname "$file")"
		n=$(budget "$target")
		echo "== fuzz $pkg $target ($n)"
		"$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$n" -fuzzminimizetime 100x -parallel 1 -timeout 5m "$pkg"
	done
done

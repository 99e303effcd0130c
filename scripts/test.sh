#!/usr/bin/env bash
# The whole test run (`make test`, and CI through .ci/run): builds and starts
# Jaeger for the tracing tests (cached after the first build), then `make
# check`: gofmt, go vet, ferry validate pipelines/, go test -race ./... .
#
# Jaeger's first build takes ~7 minutes and keeps about one core busy, so it
# runs beside the compilation of this module's test binaries (-exec true:
# compiled, not run); once cached, both take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
# What the run needs besides Go: make and git (make check lists the files to
# gofmt with git), curl, flock and setsid (scripts/jaeger.sh).
missing=()
for c in "$GO" make git curl flock setsid; do
	command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "make test: needs ${missing[*]} on PATH (Debian/Ubuntu: apt-get install make git curl util-linux; Go 1.26 from https://go.dev/dl)" >&2
	exit 1
fi
scripts/jaeger.sh build >/dev/null &
jaeger_build=$!
"$GO" test -race -count=1 -exec true ./... >/dev/null 2>&1 || true
wait "$jaeger_build"
eval "$(scripts/jaeger.sh start)"
trap 'scripts/jaeger.sh stop' EXIT
make check

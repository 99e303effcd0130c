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
scripts/jaeger.sh build >/dev/null &
jaeger_build=$!
"$GO" test -race -count=1 -exec true ./... >/dev/null 2>&1 || true
wait "$jaeger_build"
eval "$(scripts/jaeger.sh start)"
trap 'scripts/jaeger.sh stop' EXIT
make check

#!/bin/sh
# Regenerates the Python message modules under gen/ (or the directory given) from Ferry's .proto
# files (needs protoc, e.g. Debian's protobuf-compiler). The services are
# served with grpc's generic handlers, so no gRPC code generator is needed.
set -eu
out=$(realpath -m "${1:-$(dirname "$0")/gen}")
cd "$(dirname "$0")"
proto=../../../core/proto
rm -rf "$out"
mkdir -p "$out"
protoc -I "$proto" --python_out="$out" ferry/v1/message.proto ferry/v1/plugin.proto ferry/v1/stage.proto
protoc -I "$proto/thirdparty/go-plugin" --python_out="$out" grpc_controller.proto
protoc -I "$proto/thirdparty/grpc/health/v1" --python_out="$out" health.proto

#!/bin/sh
# Regenerates the Python message modules under gen/ (or the directory given)
# from Ferry's .proto files (needs protoc, e.g. Debian's protobuf-compiler).
# The .proto files are this checkout's core/proto, or those of the directory
# FERRY_PROTO names: a plugin copied out of the repository sets it to a
# checkout's core/proto. The services are served with grpc's generic
# handlers, so no gRPC code generator is needed.
set -eu
out=$(realpath -m "${1:-$(dirname "$0")/gen}")
proto=$(realpath -m "${FERRY_PROTO:-$(dirname "$0")/../../../core/proto}")
if [ ! -f "$proto/ferry/v1/plugin.proto" ]; then
	echo "gen.sh: no ferry/v1/plugin.proto under $proto: set FERRY_PROTO to the core/proto directory of a Ferry checkout" >&2
	exit 1
fi
rm -rf "$out"
mkdir -p "$out"
protoc -I "$proto" --python_out="$out" ferry/v1/message.proto ferry/v1/plugin.proto ferry/v1/storage.proto
protoc -I "$proto/thirdparty/go-plugin" --python_out="$out" grpc_controller.proto
protoc -I "$proto/thirdparty/grpc/health/v1" --python_out="$out" health.proto

// Package proto holds Ferry's plugin contract: the .proto files under ferry/v1
// and, in ferryv1, the Go code generated from them.
//
// Regenerate after editing a .proto file (needs protoc, e.g. Debian's
// protobuf-compiler; the Go generators are pinned as tools in go.mod). Besides
// protobuf-go's code, planetscale/vtprotobuf generates fast, reflection-free
// Size, Marshal and Unmarshal methods (*_vtproto.pb.go), which the plugin
// data plane and Ferry's gRPC codec use (core/sdk/codec.go):
//
//	go generate ./core/proto
//
// then the data plane's typed UTF-8 checks, which are made from the
// compiled descriptors (core/sdk/internal/genutf8; a test fails while they
// are stale):
//
//	go generate ./core/sdk
package proto

//go:generate sh -c "protoc -I . --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=module=github.com/ferrymq/ferry/core/proto --go-grpc_out=. --go-grpc_opt=module=github.com/ferrymq/ferry/core/proto --plugin=protoc-gen-go-vtproto=$(go tool -n protoc-gen-go-vtproto) --go-vtproto_out=. --go-vtproto_opt=module=github.com/ferrymq/ferry/core/proto,features=marshal+unmarshal+size+unmarshal_unsafe ferry/v1/*.proto"

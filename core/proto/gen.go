// Package proto holds Ferry's plugin contract: the .proto files under ferry/v1
// and, in ferryv1, the Go code generated from them.
//
// Regenerate after editing a .proto file (needs protoc, e.g. Debian's
// protobuf-compiler; the Go generators are pinned as tools in go.mod):
//
//	go generate ./core/proto
package proto

//go:generate sh -c "protoc -I . --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=module=github.com/ferrymq/ferry/core/proto --go-grpc_out=. --go-grpc_opt=module=github.com/ferrymq/ferry/core/proto ferry/v1/*.proto"

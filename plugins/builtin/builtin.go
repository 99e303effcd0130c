// Package builtin registers the plugins compiled into the ferry binary.
package builtin

import (
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/replication/masterslave"
	"github.com/ferrymq/ferry/plugins/replication/raft"
	"github.com/ferrymq/ferry/plugins/storage/file"
	"github.com/ferrymq/ferry/plugins/storage/memory"
	grpctransport "github.com/ferrymq/ferry/plugins/transport/grpc"
	httptransport "github.com/ferrymq/ferry/plugins/transport/http"
)

// Registry returns the registry of built-in plugins.
func Registry() *pluginhost.Registry {
	r := pluginhost.NewRegistry()
	r.Register(sdk.KindStorage, "memory", func() sdk.Plugin { return memory.New() })
	r.Register(sdk.KindStorage, "file", func() sdk.Plugin { return file.New() })
	r.Register(sdk.KindTransport, "grpc", func() sdk.Plugin { return grpctransport.New() })
	r.Register(sdk.KindTransport, "http", func() sdk.Plugin { return httptransport.New() })
	r.Register(sdk.KindReplication, masterslave.ModeAsync, func() sdk.Plugin { return masterslave.New(masterslave.ModeAsync) })
	r.Register(sdk.KindReplication, masterslave.ModeSync, func() sdk.Plugin { return masterslave.New(masterslave.ModeSync) })
	r.Register(sdk.KindReplication, "raft", func() sdk.Plugin { return raft.New() })
	return r
}

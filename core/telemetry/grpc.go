package telemetry

import (
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// GRPCServerOptions trace the RPCs a gRPC server answers, as children of
// its callers' spans (otelgrpc's stats handler), when this process traces;
// with tracing off they are empty and cost nothing. The plugin side of
// go-plugin adds them to its server (sdk), after SetupFromEnv.
func GRPCServerOptions() []grpc.ServerOption {
	if !Enabled() {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithFilter(TracedRPC)))}
}

// GRPCDialOptions trace a gRPC client's calls and send the caller's trace
// context with them, when this process traces. The host side of go-plugin
// adds them to its dial options (pluginhost), after Setup.
func GRPCDialOptions() []grpc.DialOption {
	if !Enabled() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithFilter(TracedRPC)))}
}

// TracedRPC is the filter of the gRPC handlers above: whether an RPC
// between a node and its plugins gets a span.
//
// The long-lived streams never do (a span for the life of a plugin says
// nothing); the batches on them get their own spans (storage.append,
// transport.receive, …), parented through the trace context each batch
// carries. The plugin plumbing (go-plugin's stdio, controller and broker
// streams, health checks, Validate, Configure and Health, the offset
// lookups and commits, replication status) gets a span only when the
// pipeline asks for it with tracing.debug_plumbing: true; otherwise such
// calls, which go on while a node sits idle, would fill the service's
// operation list with one-span traces.
func TracedRPC(info *stats.RPCTagInfo) bool {
	m := info.FullMethodName
	if longStreams[m] {
		return false
	}
	return debugPlumbing.Load() || !IsPlumbing(m)
}

// longStreams carry a plugin's data plane over gRPC.
var longStreams = map[string]bool{
	"/ferry.v1.Storage/Append":                                  true,
	"/ferry.v1.Storage/Read":                                    true,
	"/ferry.v1.Transport/Connect":                               true,
	"/ferry.v1.Replication/Replicate":                           true,
	"/ferry.v1.Replication/Connect":                             true,
	"/ferry.v1.ReplicaLink/Follow":                              true,
	"/ferry.v1.Broker/Produce":                                  true,
	"/plugin.GRPCStdio/StreamStdio":                             true, // also plumbing; never worth a span
	"/plugin.GRPCBroker/StartStream":                            true,
	"/grpc.health.v1.Health/Watch":                              true,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": true,
}

// IsPlumbing reports whether a gRPC method (its full name,
// "/package.Service/Method") is plugin plumbing rather than a message's
// hop.
func IsPlumbing(fullMethod string) bool {
	if plumbingMethods[fullMethod] {
		return true
	}
	for _, p := range plumbingServices {
		if strings.HasPrefix(fullMethod, p) {
			return true
		}
	}
	return false
}

// plumbingServices are whole services of plumbing: go-plugin's own, gRPC
// health, and Ferry's plugin lifecycle (Validate, Configure, Health).
var plumbingServices = []string{
	"/plugin.",
	"/grpc.health.",
	"/grpc.reflection.",
	"/ferry.v1.Plugin/",
}

// plumbingMethods are the calls of the data services that are lookups and
// bookkeeping, not a message's hop.
var plumbingMethods = map[string]bool{
	"/ferry.v1.Storage/GetOffsets":           true,
	"/ferry.v1.Storage/CommitOffsets":        true,
	"/ferry.v1.Replication/Status":           true,
	"/ferry.v1.Replication/ReplicateOffsets": true,
	"/ferry.v1.ReplicaLink/Status":           true,
}

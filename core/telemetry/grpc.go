package telemetry

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"google.golang.org/grpc"
)

// GRPCServerOptions trace the RPCs a gRPC server answers, as children of
// its callers' spans (otelgrpc's stats handler), when this process traces;
// with tracing off they are empty and cost nothing. The plugin side of
// go-plugin adds them to its server (sdk), after SetupFromEnv.
func GRPCServerOptions() []grpc.ServerOption {
	if !Enabled() {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithFilter(shortCalls)))}
}

// GRPCDialOptions trace a gRPC client's calls and send the caller's trace
// context with them, when this process traces. The host side of go-plugin
// adds them to its dial options (pluginhost), after Setup.
func GRPCDialOptions() []grpc.DialOption {
	if !Enabled() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithFilter(shortCalls)))}
}

// shortCalls leaves out the long-lived streams (a span for the life of a
// plugin says nothing); the batches on them get their own spans
// (storage.append, transport.receive, …), parented through the trace
// context each batch carries.
var shortCalls = filters.None(
	filters.FullMethodName("/ferry.v1.Storage/Append"),
	filters.FullMethodName("/ferry.v1.Storage/Read"),
	filters.FullMethodName("/ferry.v1.Transport/Connect"),
	filters.FullMethodName("/ferry.v1.Replication/Replicate"),
	filters.FullMethodName("/ferry.v1.Broker/Produce"),
)

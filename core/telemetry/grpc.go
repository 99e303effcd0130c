package telemetry

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
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
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler())}
}

// GRPCDialOptions trace a gRPC client's calls and send the caller's trace
// context with them, when this process traces. The host side of go-plugin
// adds them to its dial options (pluginhost), after Setup.
func GRPCDialOptions() []grpc.DialOption {
	if !Enabled() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler())}
}

package telemetry

import (
	"context"
	"fmt"
	"net"
	"testing"

	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

type nullCollector struct {
	coltracepb.UnimplementedTraceServiceServer
}

func (nullCollector) Export(context.Context, *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// BenchmarkOTLPExportHopSpans: the exporter's CPU for 1,024 of a batch
// hop's message spans (Ferry's own spans), to a collector that decodes
// nothing worth counting; ns/span includes the collector's decoding (the
// profile of the exporter alone: -cpuprofile, focus otlpExporter).
//
//	go test -run '^$' -bench OTLPExport -benchmem ./core/telemetry
func BenchmarkOTLPExportHopSpans(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, nullCollector{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	exp, err := newOTLPExporter(context.Background(), lis.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	col := &collectProc{}
	install(noop.NewTracerProvider(), nil, stateOn, &spanSink{proc: col, res: resource.Default()})
	defer install(noop.NewTracerProvider(), nil, stateOff, nil)
	msgs := make([]*ferryv1.Message, 256)
	for i := range msgs {
		msgs[i] = &ferryv1.Message{Id: fmt.Sprintf("p1-%d", i), Headers: map[string]string{HeaderTraceparent: fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e%04x-00f067aa0ba902b7-01", i+1)}}
	}
	for range 4 {
		h := StartHop(context.Background(), Tracer(ComponentStorage), SpanStorageAppend, msgs, Sampled(msgs), trace.WithAttributes(AttrTopic.String("orders")))
		h.SetOffsets(make([]int64, 256))
		h.End()
	}
	spans := col.spans
	for b.Loop() {
		if err := exp.ExportSpans(context.Background(), spans); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(spans)), "ns/span")
}

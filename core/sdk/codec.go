package sdk

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// codec is gRPC's proto codec with its buffers taken from bufferPool instead
// of gRPC's default pool. gRPC's codec marshals into, and gathers a received
// multi-frame message into, buffers of mem.DefaultBufferPool, which clears
// each one on Get whatever the options say: with batches of hundreds of KiB
// that clearing was 12 to 20% of each process's CPU time under async
// produce. Marshal fills its buffer completely and Unmarshal copies what it
// keeps (proto.Unmarshal does not alias its input), so nothing stale escapes.
// Marshal and Unmarshal use vtprotobuf's code where the message has it (every
// message of core/proto); Unmarshal decodes a copy of its own of the pooled
// bytes, as the data plane decodes a ring frame (unmarshalFrame).
type codec struct{}

var _ encoding.CodecV2 = codec{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("failed to marshal, message is %T, want proto.Message", v)
	}
	if fr, ok := m.(*ferryv1.FetchResponse); ok {
		if raw, ok := encodedOnly(fr); ok {
			// A fetch answer forwarded as the core encoded it
			// (EncodedFetcher): its bytes are its encoding, sent without
			// a copy (the frame they are part of is never reused).
			return mem.BufferSlice{mem.SliceBuffer(raw)}, nil
		}
	}
	if vt, ok := m.(vtMessage); ok {
		// vtprotobuf's encoder (see vtMessage): the same bytes, 3 to 4
		// times faster.
		size := vt.SizeVT()
		if mem.IsBelowBufferPoolingThreshold(size) {
			b := make([]byte, size)
			if _, err := vt.MarshalToSizedBufferVT(b); err != nil {
				return nil, err
			}
			return mem.BufferSlice{mem.SliceBuffer(b)}, nil
		}
		buf := sharedBufferPool.Get(size)
		*buf = (*buf)[:size]
		if _, err := vt.MarshalToSizedBufferVT(*buf); err != nil {
			sharedBufferPool.Put(buf)
			return nil, err
		}
		return mem.BufferSlice{mem.NewBuffer(buf, sharedBufferPool)}, nil
	}
	size := proto.Size(m)
	// UseCachedSize: the size was just computed by proto.Size above.
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := sharedBufferPool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		sharedBufferPool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, sharedBufferPool)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m := messageOf(v)
	if m == nil {
		return fmt.Errorf("failed to unmarshal, message is %T, want proto.Message", v)
	}
	if _, ok := m.(vtMessage); ok {
		// A copy of the message's bytes of its own (gRPC's buffers go back
		// to the pool), decoded as a ring frame is: bytes fields (bodies)
		// alias the copy, strings are checked and copied out. One
		// allocation for a batch's bodies instead of one each, and
		// vtprotobuf's decoder instead of reflection.
		return unmarshalFrame(data.Materialize(), m)
	}
	buf := data.MaterializeToBuffer(sharedBufferPool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

func messageOf(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	case protoadapt.MessageV2:
		return v
	}
	return nil
}

// GRPCBufferServerOptions make a gRPC server take its buffers, its codec's
// included, from a pool that does not zero them (see codec). For any Ferry
// gRPC server that carries batches: the plugins' and the grpc transport's.
func GRPCBufferServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{experimental.BufferPool(sharedBufferPool), grpc.ForceServerCodecV2(codec{})}
}

// GRPCBufferDialOptions are GRPCBufferServerOptions for a client connection:
// the host's to its plugins, the Go client's to brokers.
func GRPCBufferDialOptions() []grpc.DialOption {
	return []grpc.DialOption{experimental.WithBufferPool(sharedBufferPool), grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec{}))}
}

// GRPCCodec is the codec of GRPCBufferServerOptions, for a server that wraps
// it (the grpc transport answers undecodable strings with InvalidArgument).
func GRPCCodec() encoding.CodecV2 { return codec{} }

package sdk

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// The frames of the data plane, each with every field set.
func sampleFrames() []proto.Message {
	msg := func(i int) *ferryv1.Message {
		return &ferryv1.Message{Id: fmt.Sprintf("id-%d", i), Topic: "orders", Queue: 2, Key: fmt.Sprintf("key-%d", i),
			Headers: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "h": "é"},
			Body:    []byte(strings.Repeat("b", 100+i)), BornUnixNano: 1, Offset: int64(i), StoredUnixNano: 3}
	}
	msgs := []*ferryv1.Message{msg(1), msg(2), msg(3)}
	return []proto.Message{
		&ferryv1.AppendRequest{Seq: 9, Messages: msgs, Trace: map[string]string{"traceparent": "x"}, TimeoutNanos: 5},
		&ferryv1.AppendResponse{Seq: 9, Offsets: []int64{1, 2, 3}, Status: ferryv1.Status_STATUS_OK},
		&ferryv1.ReadRequest{Id: 4, Topic: "orders", Queue: 1, Offset: 7, MaxMessages: 100},
		&ferryv1.ReadResponse{Id: 4, Messages: msgs, Error: &ferryv1.Error{Code: "corrupt", Message: "bad"}},
		&ferryv1.TransportFrame{Id: 3, Request: &ferryv1.TransportFrame_Produce{Produce: &ferryv1.ProduceRequest{Messages: msgs}}},
		&ferryv1.CoreFrame{Id: 3, Response: &ferryv1.CoreFrame_Fetch{Fetch: &ferryv1.FetchResponse{Messages: msgs}}},
		&ferryv1.ReplicateRequest{Seq: 2, Messages: msgs},
		&ferryv1.ReplicationFrame{Id: 5, Request: &ferryv1.ReplicationFrame_Apply{Apply: &ferryv1.ApplyRequest{Messages: msgs}}},
		&ferryv1.CommitOffsetsRequest{Group: "billing", Offsets: []*ferryv1.GroupOffset{{Topic: "orders", Queue: 1, Offset: 4}}},
	}
}

// The data plane's fast codec (vtprotobuf) is protobuf: what it encodes
// protobuf-go decodes to the same message, and the other way round.
func TestFrameCodecIsProtobuf(t *testing.T) {
	for _, m := range sampleFrames() {
		b, buf, err := encodeFrame(m)
		if err != nil {
			t.Fatal(err)
		}
		back := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(b, back); err != nil || !proto.Equal(m, back) {
			t.Errorf("%T: encoded by encodeFrame, decoded by protobuf-go: %v, equal %v", m, err, proto.Equal(m, back))
		}
		sharedBufferPool.Put(buf)
		std, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := unmarshalFrame(std, got); err != nil || !proto.Equal(m, got) {
			t.Errorf("%T: encoded by protobuf-go, decoded by unmarshalFrame: %v, equal %v", m, err, proto.Equal(m, got))
		}
	}
}

// A decoded frame's strings have memory of their own (a kept id must not
// hold the whole frame); its bodies alias the frame (copied once, out of
// the ring).
func TestFrameStringsOwnBodiesAlias(t *testing.T) {
	m := sampleFrames()[0].(*ferryv1.AppendRequest)
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got := &ferryv1.AppendRequest{}
	if err := unmarshalFrame(b, got); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'Z' // the frame's memory, overwritten
	}
	g := got.Messages[0]
	if g.Id != "id-1" || g.Key != "key-1" || g.Topic != "orders" || g.Headers["h"] != "é" || got.Trace["traceparent"] != "x" {
		t.Errorf("strings changed with the frame's memory: %q %q %q %v %v", g.Id, g.Key, g.Topic, g.Headers, got.Trace)
	}
	if g.Body[0] != 'Z' {
		t.Errorf("body does not alias the frame (copied again)")
	}
}

// Every string of a frame, at any depth, is checked for UTF-8 as
// protobuf-go's decoder checks it: a frame with invalid UTF-8 in any one of
// them is refused by both (protobuf-go is the control).
func TestFrameInvalidUTF8Refused(t *testing.T) {
	cases := 0
	for _, m := range sampleFrames() {
		for _, path := range stringPaths(m.ProtoReflect(), "") {
			bad := proto.Clone(m)
			spoil(bad.ProtoReflect(), path)
			b, err := bad.(vtMessage).(interface{ MarshalVT() ([]byte, error) }).MarshalVT() // vtprotobuf does not check
			if err != nil {
				t.Fatal(err)
			}
			if err := proto.Unmarshal(b, m.ProtoReflect().New().Interface()); err == nil {
				t.Fatalf("%T %s: protobuf-go decoded invalid UTF-8 (the control failed)", m, path)
			}
			if err := unmarshalFrame(b, m.ProtoReflect().New().Interface()); err == nil {
				t.Errorf("%T %s: invalid UTF-8 decoded without an error", m, path)
			}
			cases++
		}
	}
	if cases < 20 {
		t.Fatalf("only %d string fields found in the sample frames", cases)
	}
}

// stringPaths lists the set string fields of m, depth first: "f", "f.g",
// "f#1.g" (a list's element), "f#1" (a string list's), "f{key}" (a map
// key), "f[key]" (a map value).
func stringPaths(m protoreflect.Message, prefix string) []string {
	var out []string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := prefix + string(fd.Name())
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapKey().Kind() == protoreflect.StringKind {
					out = append(out, name+"{"+k.String()+"}")
				}
				if fd.MapValue().Kind() == protoreflect.StringKind {
					out = append(out, name+"["+k.String()+"]")
				}
				return true
			})
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			for i := range v.List().Len() {
				out = append(out, stringPaths(v.List().Get(i).Message(), fmt.Sprintf("%s#%d.", name, i))...)
			}
		case fd.IsList() && fd.Kind() == protoreflect.StringKind:
			for i := range v.List().Len() {
				out = append(out, fmt.Sprintf("%s#%d", name, i))
			}
		case fd.Kind() == protoreflect.MessageKind:
			out = append(out, stringPaths(v.Message(), name+".")...)
		case fd.Kind() == protoreflect.StringKind:
			out = append(out, name)
		}
		return true
	})
	return out
}

// spoil makes the string at path (from stringPaths) invalid UTF-8.
func spoil(m protoreflect.Message, path string) {
	const bad = "\xff\xfe"
	head, rest, _ := strings.Cut(path, ".")
	if i := strings.IndexAny(head, "{["); i >= 0 && rest == "" {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(head[:i]))
		key := head[i+1 : len(head)-1]
		mp := m.Mutable(fd).Map()
		k := protoreflect.ValueOfString(key).MapKey()
		if head[i] == '{' {
			v := mp.Get(k)
			mp.Clear(k)
			mp.Set(protoreflect.ValueOfString(key+bad).MapKey(), v)
		} else {
			mp.Set(k, protoreflect.ValueOfString(bad))
		}
		return
	}
	name, idx, list := strings.Cut(head, "#")
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
	if rest == "" && list {
		var i int
		fmt.Sscan(idx, &i)
		m.Mutable(fd).List().Set(i, protoreflect.ValueOfString(bad))
		return
	}
	if rest == "" {
		m.Set(fd, protoreflect.ValueOfString(bad))
		return
	}
	if list {
		var i int
		fmt.Sscan(idx, &i)
		spoil(m.Mutable(fd).List().Get(i).Message(), rest)
		return
	}
	spoil(m.Mutable(fd).Message(), rest)
}

// BenchmarkFrameCodec compares the data plane's codec with protobuf-go's on
// batches of 1 KiB messages.
func BenchmarkFrameCodec(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		req := &ferryv1.AppendRequest{Seq: 7}
		body := make([]byte, 1024)
		for i := range n {
			req.Messages = append(req.Messages, &ferryv1.Message{Id: fmt.Sprintf("p6cadc7192b-%d", i), Topic: "orders", Queue: 2, Key: fmt.Sprintf("key-%d", i), Body: body})
		}
		enc, _ := proto.Marshal(req)
		b.Run(fmt.Sprintf("batch=%d/encode/protobuf-go", n), func(b *testing.B) {
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				buf := sharedBufferPool.Get(proto.Size(req))
				_, _ = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], req)
				sharedBufferPool.Put(buf)
			}
		})
		b.Run(fmt.Sprintf("batch=%d/encode/frame", n), func(b *testing.B) {
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				_, buf, _ := encodeFrame(req)
				sharedBufferPool.Put(buf)
			}
		})
		b.Run(fmt.Sprintf("batch=%d/decode/protobuf-go", n), func(b *testing.B) {
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				_ = proto.Unmarshal(enc, &ferryv1.AppendRequest{})
			}
		})
		b.Run(fmt.Sprintf("batch=%d/decode/grpc-codec", n), func(b *testing.B) {
			b.SetBytes(int64(len(enc)))
			data := mem.BufferSlice{mem.SliceBuffer(enc)}
			for b.Loop() {
				_ = codec{}.Unmarshal(data, &ferryv1.AppendRequest{})
			}
		})
		b.Run(fmt.Sprintf("batch=%d/decode/frame", n), func(b *testing.B) {
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				_ = unmarshalFrame(enc, &ferryv1.AppendRequest{})
			}
		})
	}
}

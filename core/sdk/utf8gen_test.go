package sdk

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk/internal/genutf8"
)

// utf8_gen.go is what the generator makes of today's protocol: a field added
// to a .proto without `go generate ./core/sdk` fails here.
func TestUTF8GenUpToDate(t *testing.T) {
	want, err := genutf8.Generate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("utf8_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("utf8_gen.go is stale: run go generate ./core/sdk")
	}
}

// protocolMessages are every message of Ferry's protocol (not map entries).
func protocolMessages() []protoreflect.MessageDescriptor {
	var out []protoreflect.MessageDescriptor
	var walk func(protoreflect.MessageDescriptors)
	walk = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			if md := ms.Get(i); !md.IsMapEntry() {
				out = append(out, md)
				walk(md.Messages())
			}
		}
	}
	for _, f := range []protoreflect.FileDescriptor{ferryv1.File_ferry_v1_message_proto, ferryv1.File_ferry_v1_storage_proto,
		ferryv1.File_ferry_v1_broker_proto, ferryv1.File_ferry_v1_transport_proto, ferryv1.File_ferry_v1_replication_proto,
		ferryv1.File_ferry_v1_plugin_proto} {
		walk(f.Messages())
	}
	return out
}

// populated returns samples of a message kind with every string field set at
// every depth (to 3), one sample per member of each of its top-level oneofs
// (nested oneofs: their first member).
func populated(md protoreflect.MessageDescriptor) []proto.Message {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		panic(err)
	}
	choices := []protoreflect.FieldDescriptor{nil}
	for i := range md.Oneofs().Len() {
		if o := md.Oneofs().Get(i); !o.IsSynthetic() {
			choices = nil
			for j := range o.Fields().Len() {
				choices = append(choices, o.Fields().Get(j))
			}
			break // one oneof per frame in the protocol
		}
	}
	var out []proto.Message
	for _, c := range choices {
		m := mt.New()
		fill(m, c, 0)
		out = append(out, m.Interface())
	}
	return out
}

func fill(m protoreflect.Message, choice protoreflect.FieldDescriptor, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
			want := o.Fields().Get(0)
			if depth == 0 && choice != nil {
				want = choice
			}
			if fd != want {
				continue
			}
		}
		name := string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() == protoreflect.StringKind && fd.MapValue().Kind() == protoreflect.StringKind {
				m.Mutable(fd).Map().Set(protoreflect.ValueOfString("k-"+name).MapKey(), protoreflect.ValueOfString("v-"+name))
			}
		case fd.Kind() == protoreflect.StringKind && fd.IsList():
			l := m.Mutable(fd).List()
			l.Append(protoreflect.ValueOfString("a-" + name))
			l.Append(protoreflect.ValueOfString("b-" + name))
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("s-"+name))
		case fd.Kind() == protoreflect.BytesKind && !fd.IsList():
			m.Set(fd, protoreflect.ValueOfBytes([]byte("bytes")))
		case fd.Kind() == protoreflect.MessageKind && depth < 3:
			if fd.IsList() {
				l := m.Mutable(fd).List()
				for range 2 {
					e := l.NewElement()
					fill(e.Message(), nil, depth+1)
					l.Append(e)
				}
			} else {
				fill(m.Mutable(fd).Message(), nil, depth+1)
			}
		}
	}
}

// Every string of every message of the protocol, at any depth and in every
// oneof member, is refused by the typed checks when it is not UTF-8, as by
// protobuf-go (the control), naming a field; and after a decode every
// string has memory of its own: overwriting the frame leaves them all as
// they were. The negative control of the second: the fast decoder alone
// leaves them changed.
func TestTypedUTF8ChecksEveryMessage(t *testing.T) {
	cases, kinds := 0, 0
	for _, md := range protocolMessages() {
		for _, m := range populated(md) {
			if ok, _ := ownStrings(m.ProtoReflect().New().Interface()); !ok {
				t.Fatalf("%s: no typed check", md.FullName())
			}
			kinds++
			paths := stringPaths(m.ProtoReflect(), "")
			for _, path := range paths {
				bad := proto.Clone(m)
				spoil(bad.ProtoReflect(), path)
				b, err := bad.(interface{ MarshalVT() ([]byte, error) }).MarshalVT()
				if err != nil {
					t.Fatal(err)
				}
				if err := proto.Unmarshal(b, m.ProtoReflect().New().Interface()); err == nil {
					t.Fatalf("%s %s: protobuf-go decoded invalid UTF-8 (the control failed)", md.FullName(), path)
				}
				err = unmarshalFrame(b, m.ProtoReflect().New().Interface())
				if err == nil {
					t.Errorf("%s %s: invalid UTF-8 decoded without an error", md.FullName(), path)
				} else if u, ok := err.(interface{ InvalidUTF8() bool }); !ok || !u.InvalidUTF8() {
					t.Errorf("%s %s: %v is not an InvalidUTF8 error", md.FullName(), path, err)
				}
				cases++
			}
			if len(paths) == 0 {
				continue
			}
			before := stringValues(m.ProtoReflect())
			b, err := m.(interface{ MarshalVT() ([]byte, error) }).MarshalVT()
			if err != nil {
				t.Fatal(err)
			}
			got, raw := m.ProtoReflect().New().Interface(), m.ProtoReflect().New().Interface()
			if err := unmarshalFrame(b, got); err != nil {
				t.Fatalf("%s: %v", md.FullName(), err)
			}
			b2 := append([]byte(nil), b...)
			if err := raw.(vtMessage).UnmarshalVTUnsafe(b2); err != nil {
				t.Fatal(err)
			}
			for i := range b {
				b[i], b2[i] = 'Z', 'Z'
			}
			if after := stringValues(got.ProtoReflect()); after != before {
				t.Errorf("%s: strings changed with the frame's memory:\n%s\nwant\n%s", md.FullName(), after, before)
			}
			if stringValues(raw.ProtoReflect()) == before {
				t.Errorf("%s: the fast decoder alone kept the strings: this check proves nothing", md.FullName())
			}
		}
	}
	t.Logf("%d string fields in %d samples", cases, kinds)
	if cases < 200 || kinds < 80 {
		t.Fatalf("only %d string fields in %d samples", cases, kinds)
	}
}

// stringValues is every string of m with its path, in a stable order.
func stringValues(m protoreflect.Message) string {
	var b bytes.Buffer
	var walk func(m protoreflect.Message, prefix string)
	walk = func(m protoreflect.Message, prefix string) {
		fields := m.Descriptor().Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if !m.Has(fd) {
				continue
			}
			v, name := m.Get(fd), prefix+string(fd.Name())
			switch {
			case fd.IsMap():
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					fmt.Fprintf(&b, "%s{%s}=%v\n", name, k.String(), mv.Interface())
					return true
				})
			case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
				for j := range v.List().Len() {
					walk(v.List().Get(j).Message(), fmt.Sprintf("%s#%d.", name, j))
				}
			case fd.IsList() && fd.Kind() == protoreflect.StringKind:
				for j := range v.List().Len() {
					fmt.Fprintf(&b, "%s#%d=%s\n", name, j, v.List().Get(j).String())
				}
			case fd.Kind() == protoreflect.MessageKind:
				walk(v.Message(), name+".")
			case fd.Kind() == protoreflect.StringKind:
				fmt.Fprintf(&b, "%s=%s\n", name, v.String())
			}
		}
	}
	walk(m, "")
	return b.String()
}

// BenchmarkFrameStrings: the checks of one small frame (a sync send's
// produce, with its trace context and one message), typed and by
// reflection.
func BenchmarkFrameStrings(b *testing.B) {
	f := &ferryv1.TransportFrame{Id: 3, TimeoutNanos: 5e9,
		Trace:   map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		Request: &ferryv1.TransportFrame_Produce{Produce: &ferryv1.ProduceRequest{Seq: 9, Messages: []*ferryv1.Message{{Id: "p6cadc7192b-1", Topic: "orders", Key: "k", Body: make([]byte, 1024)}}}}}
	enc, err := f.MarshalVT()
	if err != nil {
		b.Fatal(err)
	}
	for _, typed := range []bool{true, false} {
		b.Run(fmt.Sprintf("typed=%v", typed), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var m ferryv1.TransportFrame
				if err := m.UnmarshalVTUnsafe(enc); err != nil {
					b.Fatal(err)
				}
				if typed {
					err = ownFrameStrings(&m)
				} else {
					err = checkUTF8(m.ProtoReflect())
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

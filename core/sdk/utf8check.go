package sdk

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/telemetry"
)

//go:generate go run ./internal/genutf8/cmd/genutf8 utf8_gen.go

// ownFrameStrings reports the first string field of m (at any depth) that
// is not valid UTF-8, which protobuf-go's decoder would have refused, and
// gives every string memory of its own: it backs the fast decoder of the
// data plane (vtprotobuf's), which checks nothing and leaves strings
// aliasing the frame. Ferry's own messages are checked by typed code
// generated from the protocol (utf8_gen.go); any other by reflection.
func ownFrameStrings(m proto.Message) error {
	if ok, err := ownStrings(m); ok {
		return err
	}
	return checkUTF8(m.ProtoReflect())
}

// ownString checks *s and gives it memory of its own.
func ownString(s *string, field string) error {
	if !utf8.ValidString(*s) {
		return errInvalidUTF8(field)
	}
	if *s != "" {
		*s = strings.Clone(*s)
	}
	return nil
}

// ownStringList is ownString of each of l.
func ownStringList(l []string, field string) error {
	for i := range l {
		if err := ownString(&l[i], field); err != nil {
			return err
		}
	}
	return nil
}

// ownStringMap checks a map<string, string>'s keys and values and rebuilds
// it with copies of them.
func ownStringMap(mp *map[string]string, field string) error {
	if len(*mp) == 0 {
		return nil
	}
	fresh := make(map[string]string, len(*mp))
	for k, v := range *mp {
		if !utf8.ValidString(k) {
			return errInvalidUTF8(field + " (a key)")
		}
		if !utf8.ValidString(v) {
			return errInvalidUTF8(field + " (a value)")
		}
		fresh[strings.Clone(k)] = strings.Clone(v)
	}
	*mp = fresh
	return nil
}

// checkUTF8 is ownFrameStrings by reflection, for messages the generated
// code does not know. The bulk of a frame, its Messages, is checked by
// typed code (messagesUTF8) here too.
func checkUTF8(m protoreflect.Message) error {
	if msg, ok := m.Interface().(*ferryv1.Message); ok {
		return messageUTF8(msg)
	}
	sf := stringFieldsOf(m.Descriptor())
	for _, fd := range sf.strings {
		v := m.Get(fd).String()
		if !utf8.ValidString(v) {
			return errInvalidUTF8(string(fd.FullName()))
		}
		if v != "" {
			m.Set(fd, protoreflect.ValueOfString(strings.Clone(v)))
		}
	}
	for _, fd := range sf.stringLists {
		l := m.Get(fd).List()
		for i := range l.Len() {
			v := l.Get(i).String()
			if !utf8.ValidString(v) {
				return errInvalidUTF8(string(fd.FullName()))
			}
			l.Set(i, protoreflect.ValueOfString(strings.Clone(v)))
		}
	}
	for _, fd := range sf.maps {
		if err := mapUTF8(m, fd); err != nil {
			return err
		}
	}
	for _, fd := range sf.messages {
		if !m.Has(fd) {
			continue
		}
		if err := checkUTF8(m.Get(fd).Message()); err != nil {
			return err
		}
	}
	for _, fd := range sf.messageLists {
		if fd.Message().FullName() == messageName && fd.Name() == "messages" {
			// A batch: its messages as a typed slice, without reflection on
			// each (every batch carrier has the generated getter).
			if g, ok := m.Interface().(interface{ GetMessages() []*ferryv1.Message }); ok {
				if err := messagesUTF8(g.GetMessages()); err != nil {
					return err
				}
				continue
			}
		}
		l := m.Get(fd).List()
		if fd.Message().FullName() == messageName && l.Len() > 0 {
			ms := make([]*ferryv1.Message, l.Len())
			for i := range ms {
				ms[i] = l.Get(i).Message().Interface().(*ferryv1.Message)
			}
			if err := messagesUTF8(ms); err != nil {
				return err
			}
			continue
		}
		for i := range l.Len() {
			if err := checkUTF8(l.Get(i).Message()); err != nil {
				return err
			}
		}
	}
	return nil
}

var messageName = (&ferryv1.Message{}).ProtoReflect().Descriptor().FullName()

// messagesUTF8 is messageUTF8 of a frame's messages, with one allocation for
// the ids, topics, keys and header values of them all (a run of messages of
// one topic shares one copy of its name) instead of one a string: a kept id
// then holds that small buffer, not the frame with its bodies. A message's
// headers stay in the map the decoder made, each entry given its key and
// value anew (a map assignment to a present string key stores the new key
// too), so headers cost no map of their own; a traceparent header, which
// every message of a traced pipeline carries, is not even iterated over.
func messagesUTF8(ms []*ferryv1.Message) error {
	n, topic := 0, ""
	for _, m := range ms {
		if err := scalarsUTF8(m); err != nil {
			return err
		}
		n += len(m.Id) + len(m.Key)
		if m.Topic != topic {
			topic = m.Topic
			n += len(topic)
		}
		if len(m.Headers) == 0 {
			continue
		}
		if tp, ok := onlyTraceparent(m.Headers); ok {
			if !utf8.ValidString(tp) {
				return errInvalidUTF8("ferry.v1.Message.headers")
			}
			n += len(tp)
			continue
		}
		for k, v := range m.Headers {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return errInvalidUTF8("ferry.v1.Message.headers")
			}
			n += len(k) + len(v)
		}
	}
	buf := make([]byte, 0, n) // never grown: the strings below stay valid
	own := func(s string) string {
		if s == "" {
			return ""
		}
		start := len(buf)
		buf = append(buf, s...)
		return unsafe.String(&buf[start], len(s))
	}
	var from, to string
	for _, m := range ms {
		m.Id, m.Key = own(m.Id), own(m.Key)
		if m.Topic != from || to == "" {
			from = m.Topic
			to = own(m.Topic)
		}
		m.Topic = to
		m.Body = capped(m.Body)
		if len(m.Headers) > 0 {
			ownHeaders(m.Headers, own)
		}
	}
	return nil
}

// onlyTraceparent returns the value of h's traceparent header when that is
// h's one header.
func onlyTraceparent(h map[string]string) (string, bool) {
	if len(h) != 1 {
		return "", false
	}
	v, ok := h[telemetry.HeaderTraceparent]
	return v, ok
}

// ownHeaders gives h's keys and values (checked already) memory of their
// own from own, in place: assigning to a key that is present stores the
// key given as well as the value (strings are keys whose storage the
// runtime updates), so no entry keeps the frame's bytes.
func ownHeaders(h map[string]string, own func(string) string) {
	if tp, ok := onlyTraceparent(h); ok {
		h[telemetry.HeaderTraceparent] = own(tp)
		return
	}
	type kv struct{ k, v string }
	var small [8]kv
	kvs := small[:0]
	for k, v := range h {
		kvs = append(kvs, kv{k, v})
	}
	for _, e := range kvs {
		h[own(e.k)] = own(e.v)
	}
}

// messageUTF8 is checkUTF8 of a Message, every string field of which it
// names (TestMessageUTF8CoversEveryStringField keeps it so). It also gives
// the strings memory of their own: the fast decoder leaves them aliasing the
// frame, which a kept id or key (a de-duplication window, an index) would
// then hold whole; the body, which the store copies or keeps anyway, stays
// aliased.
func messageUTF8(m *ferryv1.Message) error {
	if err := scalarsUTF8(m); err != nil {
		return err
	}
	m.Id, m.Topic, m.Key = strings.Clone(m.Id), strings.Clone(m.Topic), strings.Clone(m.Key)
	m.Body = capped(m.Body)
	return headersUTF8(m)
}

// capped is b with no room beyond its length: a body aliasing its frame
// must not be appended to over the next message's bytes.
func capped(b []byte) []byte { return b[:len(b):len(b)] }

// scalarsUTF8 checks a message's id, topic and key.
func scalarsUTF8(m *ferryv1.Message) error {
	switch {
	case !utf8.ValidString(m.Id):
		return errInvalidUTF8("ferry.v1.Message.id")
	case !utf8.ValidString(m.Topic):
		return errInvalidUTF8("ferry.v1.Message.topic")
	case !utf8.ValidString(m.Key):
		return errInvalidUTF8("ferry.v1.Message.key")
	}
	return nil
}

// headersUTF8 checks a message's headers and gives them memory of their own.
func headersUTF8(m *ferryv1.Message) error {
	if len(m.Headers) > 0 {
		h := make(map[string]string, len(m.Headers))
		for k, v := range m.Headers {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return errInvalidUTF8("ferry.v1.Message.headers")
			}
			h[strings.Clone(k)] = strings.Clone(v)
		}
		m.Headers = h
	}
	return nil
}

// mapUTF8 checks a map field's string keys and values and gives them memory
// of their own (rebuilding the map); message values are checked in place.
func mapUTF8(m protoreflect.Message, fd protoreflect.FieldDescriptor) error {
	mp := m.Get(fd).Map()
	if mp.Len() == 0 {
		return nil
	}
	strKey, strVal := fd.MapKey().Kind() == protoreflect.StringKind, fd.MapValue().Kind() == protoreflect.StringKind
	type kv struct {
		k protoreflect.MapKey
		v protoreflect.Value
	}
	var pairs []kv
	var err error
	mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		if strKey {
			if !utf8.ValidString(k.String()) {
				err = errInvalidUTF8(string(fd.FullName()) + " (a key)")
				return false
			}
			k = protoreflect.ValueOfString(strings.Clone(k.String())).MapKey()
		}
		switch {
		case strVal:
			if !utf8.ValidString(v.String()) {
				err = errInvalidUTF8(string(fd.FullName()) + " (a value)")
				return false
			}
			v = protoreflect.ValueOfString(strings.Clone(v.String()))
		case fd.MapValue().Kind() == protoreflect.MessageKind:
			if err = checkUTF8(v.Message()); err != nil {
				return false
			}
		}
		pairs = append(pairs, kv{k, v})
		return true
	})
	if err != nil || !strKey && !strVal {
		return err
	}
	m.Clear(fd)
	fresh := m.Mutable(fd).Map()
	for _, p := range pairs {
		fresh.Set(p.k, p.v)
	}
	return nil
}

func errInvalidUTF8(field string) error { return invalidUTF8Error(field) }

// invalidUTF8Error is the decoders' error for a string that is not UTF-8.
// Like protobuf-go's, it says so through InvalidUTF8 (the grpc transport
// answers such requests InvalidArgument).
type invalidUTF8Error string

func (e invalidUTF8Error) Error() string {
	return fmt.Sprintf("string field %s contains invalid UTF-8", string(e))
}

func (invalidUTF8Error) InvalidUTF8() bool { return true }

// stringFields are the fields of a message kind checkUTF8 must look at.
type stringFields struct {
	strings, stringLists, maps, messages, messageLists []protoreflect.FieldDescriptor
}

var stringFieldsCache sync.Map // protoreflect.FullName → *stringFields

func stringFieldsOf(md protoreflect.MessageDescriptor) *stringFields {
	if v, ok := stringFieldsCache.Load(md.FullName()); ok {
		return v.(*stringFields)
	}
	sf := &stringFields{}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			sf.maps = append(sf.maps, fd)
		case fd.Kind() == protoreflect.StringKind && fd.IsList():
			sf.stringLists = append(sf.stringLists, fd)
		case fd.Kind() == protoreflect.StringKind:
			sf.strings = append(sf.strings, fd)
		case (fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind) && fd.IsList():
			sf.messageLists = append(sf.messageLists, fd)
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			sf.messages = append(sf.messages, fd)
		}
	}
	stringFieldsCache.Store(md.FullName(), sf)
	return sf
}

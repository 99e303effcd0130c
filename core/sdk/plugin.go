// Package sdk is the one package a Ferry plugin author imports. A plugin
// implements one of the small interfaces below (Storage, Transport) and calls
// Serve from its main; the SDK hides the go-plugin handshake, the gRPC
// services of core/proto and the mapping of errors across the boundary.
//
//	func main() { sdk.Serve(sdk.ServeOpts{Storage: mystore.New()}) }
//
// Every method takes a context first; deadlines and trace context cross the
// process boundary.
package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// Types of the contract, re-exported so that a Go plugin needs no other import.
type (
	Message               = ferryv1.Message
	Status                = ferryv1.Status
	Environment           = ferryv1.Environment
	QueueRef              = ferryv1.QueueRef
	QueueOffsets          = ferryv1.QueueOffsets
	GroupOffset           = ferryv1.GroupOffset
	ReadRequest           = ferryv1.ReadRequest
	ReadResponse          = ferryv1.ReadResponse
	ProduceRequest        = ferryv1.ProduceRequest
	ProduceResponse       = ferryv1.ProduceResponse
	FetchRequest          = ferryv1.FetchRequest
	FetchResponse         = ferryv1.FetchResponse
	CommitOffsetsRequest  = ferryv1.CommitOffsetsRequest
	GetOffsetsRequest     = ferryv1.GetOffsetsRequest
	GetOffsetsResponse    = ferryv1.GetOffsetsResponse
	MetadataRequest       = ferryv1.MetadataRequest
	MetadataResponse      = ferryv1.MetadataResponse
	HeartbeatRequest      = ferryv1.HeartbeatRequest
	HeartbeatResponse     = ferryv1.HeartbeatResponse
	CreateTopicRequest    = ferryv1.CreateTopicRequest
	CreateTopicResponse   = ferryv1.CreateTopicResponse
	AlterTopicRequest     = ferryv1.AlterTopicRequest
	AlterTopicResponse    = ferryv1.AlterTopicResponse
	DeleteTopicRequest    = ferryv1.DeleteTopicRequest
	DeleteTopicResponse   = ferryv1.DeleteTopicResponse
	ListGroupsRequest     = ferryv1.ListGroupsRequest
	ListGroupsResponse    = ferryv1.ListGroupsResponse
	DescribeGroupRequest  = ferryv1.DescribeGroupRequest
	DescribeGroupResponse = ferryv1.DescribeGroupResponse
	ResetOffsetsRequest   = ferryv1.ResetOffsetsRequest
	ResetOffsetsResponse  = ferryv1.ResetOffsetsResponse
	DeleteGroupRequest    = ferryv1.DeleteGroupRequest
	DeleteGroupResponse   = ferryv1.DeleteGroupResponse
)

// Plugin is what every plugin implements, whatever its kind.
type Plugin interface {
	// Validate checks a config section, given as JSON, without applying it
	// and without touching disks or sockets. It returns every problem
	// found, each with its key path inside the section. Called by
	// `ferry validate` and before Configure; may be called concurrently.
	Validate(config []byte) Problems
	// Configure applies a config section and starts the plugin: it opens
	// files and binds listeners, so that such errors surface here. Called
	// once, before any call of the plugin's kind.
	Configure(ctx context.Context, config []byte, env *Environment) error
	// Close releases everything; called once when the plugin stops. A store
	// flushes what it holds.
	Close() error
}

// DecodeConfig decodes a JSON config section into dst (a pointer to a struct
// with json tags) strictly: every unknown key and every value of the wrong
// type or form is a problem with its key path ("retention.max_age"); all are
// reported, not just the first. Keys left out or null keep dst's values (its
// defaults).
func DecodeConfig(config []byte, dst any) Problems {
	config = bytes.TrimSpace(config)
	if len(config) == 0 || string(config) == "null" {
		return nil
	}
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("sdk.DecodeConfig: dst must be a pointer to a struct, got %T", dst))
	}
	return decodeStruct("", config, v.Elem())
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

func decodeStruct(path string, data []byte, v reflect.Value) Problems {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Problems{{Path: path, Message: "must be a mapping"}}
	}
	fields := map[string]int{}
	var names []string
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = i
		names = append(names, name)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ps Problems
	for _, k := range keys {
		kpath := k
		if path != "" {
			kpath = path + "." + k
		}
		i, ok := fields[k]
		if !ok {
			sort.Strings(names)
			ps = append(ps, Problem{Path: kpath, Message: "unknown key (valid keys: " + strings.Join(names, ", ") + ")"})
			continue
		}
		val := bytes.TrimSpace(raw[k])
		if string(val) == "null" {
			continue
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && !reflect.PointerTo(fv.Type()).Implements(unmarshalerType) {
			ps = append(ps, decodeStruct(kpath, val, fv)...)
			continue
		}
		if err := json.Unmarshal(val, fv.Addr().Interface()); err != nil {
			ps = append(ps, Problem{Path: kpath, Message: decodeMessage(err, val)})
		}
	}
	return ps
}

// decodeMessage words a JSON decoding error for a person.
func decodeMessage(err error, val []byte) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("must be %s, got %s", jsonTypeName(te.Type.Kind().String()), val)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func jsonTypeName(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "slice", "array":
		return "a list"
	case "map", "struct":
		return "a mapping"
	}
	return kind
}

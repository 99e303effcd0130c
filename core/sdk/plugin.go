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
	"io"
	"strings"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// Types of the contract, re-exported so that a Go plugin needs no other import.
type (
	Message              = ferryv1.Message
	Status               = ferryv1.Status
	Environment          = ferryv1.Environment
	QueueRef             = ferryv1.QueueRef
	QueueOffsets         = ferryv1.QueueOffsets
	GroupOffset          = ferryv1.GroupOffset
	ReadRequest          = ferryv1.ReadRequest
	ReadResponse         = ferryv1.ReadResponse
	ProduceRequest       = ferryv1.ProduceRequest
	ProduceResponse      = ferryv1.ProduceResponse
	FetchRequest         = ferryv1.FetchRequest
	FetchResponse        = ferryv1.FetchResponse
	CommitOffsetsRequest = ferryv1.CommitOffsetsRequest
	GetOffsetsRequest    = ferryv1.GetOffsetsRequest
	GetOffsetsResponse   = ferryv1.GetOffsetsResponse
	MetadataRequest      = ferryv1.MetadataRequest
	MetadataResponse     = ferryv1.MetadataResponse
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

// DecodeConfig decodes a JSON config section into dst strictly: unknown keys
// and wrong types are problems with their key paths. An empty section leaves
// dst as it is (its defaults).
func DecodeConfig(config []byte, dst any) Problems {
	if len(bytes.TrimSpace(config)) == 0 || string(bytes.TrimSpace(config)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if dec.Decode(new(any)) != io.EOF {
			return Problems{{Message: "trailing data after the config object"}}
		}
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return Problems{{Path: te.Field, Message: fmt.Sprintf("must be %s, got %s", jsonTypeName(te.Type.Kind().String()), te.Value)}}
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return Problems{{Path: strings.Trim(msg, `"`), Message: "unknown key"}}
	}
	return Problems{{Message: err.Error()}}
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

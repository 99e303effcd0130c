package config

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// This file decodes the merged key tree onto the Pipeline struct: a strict
// type hook, error translation, and the defaults of list elements and of keys
// derived from other keys.

var (
	durationType = reflect.TypeFor[time.Duration]()
	rootTypeName = reflect.TypeFor[Pipeline]().String()
)

const durationHint = `must be a duration such as "10s", "500ms" or "1m30s"`

// strictTypes is the decoder's hook, called for every value before it is
// stored. It refuses what weak typing would convert ("four" into an int, 10
// into a duration of 10ns, 4.5 into 4) and turns duration strings into
// time.Duration. An integer where a number is expected is fine.
func strictTypes(from, to reflect.Value) (any, error) {
	data := from.Interface()
	t := to.Type()
	if t == durationType {
		s, ok := data.(string)
		if !ok {
			return nil, fmt.Errorf("%s, got %s", durationHint, describe(data))
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%s, got %q", durationHint, s)
		}
		return d, nil
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := data.(string); !ok {
			return nil, fmt.Errorf("must be a string, got %s", describe(data))
		}
	case reflect.Int:
		switch v := data.(type) {
		case int, int64:
		case uint64:
			return nil, fmt.Errorf("must be an integer that fits in 64 bits, got %d", v)
		case float64:
			if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
				return nil, fmt.Errorf("must be a whole number, got %s", describe(data))
			}
			return int(v), nil
		default:
			return nil, fmt.Errorf("must be an integer, got %s", describe(data))
		}
	case reflect.Bool:
		if _, ok := data.(bool); !ok {
			return nil, fmt.Errorf("must be true or false, got %s", describe(data))
		}
	case reflect.Float64:
		switch data.(type) {
		case int, int64, uint64, float64:
		default:
			return nil, fmt.Errorf("must be a number, got %s", describe(data))
		}
	case reflect.Struct, reflect.Map:
		if _, ok := data.(map[string]any); !ok {
			return nil, fmt.Errorf("must be a mapping of keys, got %s", describe(data))
		}
	case reflect.Slice:
		if _, ok := data.([]any); !ok {
			return nil, fmt.Errorf("must be a list, got %s", describe(data))
		}
	}
	return data, nil
}

// describe names a decoded YAML value for a problem message.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", truncate(v, 40))
	case bool:
		return strconv.FormatBool(v)
	case int, int64, uint64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return "number " + strconv.FormatFloat(v, 'g', -1, 64)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case time.Time:
		return "timestamp " + v.Format(time.RFC3339) + " (quote it to make it a string)"
	}
	return fmt.Sprintf("%v", v)
}

// decodeProblems translates the decoder's (joined, nested) errors into
// problems with key paths. The paths are the decoder's field names, which use
// the same "flows[0].sink.type" form as Problem.Path.
func decodeProblems(err error) []Problem {
	var ps []Problem
	var walk func(error)
	walk = func(err error) {
		if de, ok := err.(*mapstructure.DecodeError); ok {
			inner := de.Unwrap()
			name := de.Name()
			if name == rootTypeName {
				name = "" // mapstructure names the root by its type
			}
			var nested *mapstructure.DecodeError
			if errors.As(inner, &nested) {
				walk(inner)
				return
			}
			// mapstructure reports ErrorUnused as one error per mapping.
			if keys, ok := strings.CutPrefix(inner.Error(), "has invalid keys: "); ok {
				for _, k := range strings.Split(keys, ", ") {
					ps = append(ps, Problem{Path: joinPath(name, k), Message: unknownKey(name)})
				}
				return
			}
			ps = append(ps, Problem{Path: name, Message: inner.Error()})
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if u := errors.Unwrap(err); u != nil {
			walk(u)
			return
		}
		ps = append(ps, Problem{Message: err.Error()})
	}
	walk(err)
	return ps
}

func unknownKey(parent string) string {
	keys := keysOf(typeAt(parent))
	if len(keys) == 0 {
		return "unknown key"
	}
	msg := "unknown key; known keys here: " + strings.Join(keys, ", ")
	if stageAt.MatchString(parent) {
		// The timeout stage's after and a plugin stage's timeout are
		// easily put beside type.
		msg += " (a stage's settings go under config, such as a timeout stage's config.after or a plugin stage's config.timeout)"
	}
	return msg
}

// stageAt matches the key path of one stage of a flow's chain.
var stageAt = regexp.MustCompile(`^flows\[\d+\]\.stages\[\d+\]$`)

// typeAt returns the Go type of the value at a key path of Pipeline, or nil
// when the path is not in the schema.
func typeAt(path string) reflect.Type {
	t := reflect.TypeFor[Pipeline]()
	for _, seg := range strings.Split(path, ".") {
		if seg == "" {
			continue
		}
		name, _, _ := strings.Cut(seg, "[")
		if t = fieldType(t, name); t == nil {
			return nil
		}
		for range strings.Count(seg, "[") {
			if t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
		}
	}
	return t
}

// fieldType returns the type of the field of struct type t tagged key, or nil.
func fieldType(t reflect.Type, key string) reflect.Type {
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	for f := range t.Fields() {
		if f.IsExported() && f.Tag.Get("koanf") == key {
			return f.Type
		}
	}
	return nil
}

// keysOf lists the keys of struct type t in declaration order.
func keysOf(t reflect.Type) []string {
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for f := range t.Fields() {
		if tag := f.Tag.Get("koanf"); f.IsExported() && tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	return keys
}

// seedLists gives p one default element for each element of the lists in
// raw, so that the decoder fills in only the keys an element sets.
func seedLists(p *Pipeline, raw map[string]any) {
	p.Topics = seed(raw["topics"], defaultTopic)
	p.Generators = seed(raw["generators"], defaultGenerator)
	p.Flows = seed(raw["flows"], defaultFlow)
}

func seed[T any](v any, def func() T) []T {
	l, ok := v.([]any)
	if !ok {
		return nil
	}
	s := make([]T, len(l))
	for i := range s {
		s[i] = def()
	}
	return s
}

// applyDerivedDefaults fills in the keys whose defaults come from other keys,
// where they are not given.
func applyDerivedDefaults(p *Pipeline, src *source) {
	if !src.present["node.data_dir"] {
		p.Node.DataDir = filepath.Join("data", p.Name)
	}
	if !src.present["tracing.service_name"] {
		p.Tracing.ServiceName = "ferry-" + p.Node.ID
	}
	for i := range p.Flows {
		if !src.present[indexPath("flows", i)+".group"] {
			p.Flows[i].Group = p.Flows[i].Name
		}
	}
}

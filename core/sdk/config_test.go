package sdk

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

type testConfig struct {
	Flush     string   `json:"flush"`
	Segment   Bytes    `json:"segment_bytes"`
	Interval  Duration `json:"flush_interval"`
	Count     int      `json:"count"`
	Retention struct {
		MaxAge Duration `json:"max_age"`
		Bytes  Bytes    `json:"bytes"`
	} `json:"retention"`
}

func TestDecodeConfig(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Problems
	}{
		{"empty keeps defaults", ``, nil},
		{"null keeps defaults", `null`, nil},
		{"good", `{"flush":"sync","segment_bytes":"64MiB","flush_interval":"250ms","count":3,"retention":{"max_age":"1h","bytes":4096}}`, nil},
		{"every problem with its path", `{"segment_bytes":"lots","flush_interval":"soon","count":"three","bogus":1,"retention":{"max_age":5,"nope":true}}`, Problems{
			{Path: "bogus", Message: "unknown key (valid keys: count, flush, flush_interval, retention, segment_bytes)"},
			{Path: "count", Message: `must be an integer, got "three"`},
			{Path: "flush_interval", Message: `must be a duration such as "250ms" or "2s", got "soon"`},
			{Path: "retention.max_age", Message: `must be a duration such as "250ms" or "2s", got 5`},
			{Path: "retention.nope", Message: "unknown key (valid keys: bytes, max_age)"},
			{Path: "segment_bytes", Message: `must be a size such as 4096, "64MiB" or "1GB", got "lots"`},
		}},
		{"not a mapping", `[1,2]`, Problems{{Message: "must be a mapping"}}},
		{"negative size", `{"segment_bytes":-1}`, Problems{{Path: "segment_bytes", Message: "must not be negative, got -1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c testConfig
			c.Flush = "default"
			got := DecodeConfig([]byte(tt.in), &c)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
			if got != nil && !errors.Is(got, ErrConfig) {
				t.Error("Problems does not match ErrConfig")
			}
		})
	}
	var c testConfig
	c.Flush = "default"
	if ps := DecodeConfig([]byte(`{"segment_bytes":"1KiB","flush_interval":"2s","retention":{"max_age":"90m"}}`), &c); ps != nil {
		t.Fatal(ps)
	}
	if c.Flush != "default" || c.Segment != 1024 || time.Duration(c.Interval) != 2*time.Second || time.Duration(c.Retention.MaxAge) != 90*time.Minute {
		t.Fatalf("decoded %+v", c)
	}
}

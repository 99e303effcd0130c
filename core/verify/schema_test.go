package verify

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/invopop/jsonschema"
)

// schemaPath is the documented schema of results.json.
var schemaPath = filepath.Join("..", "..", "docs", "verify-results.schema.json")

// The documented schema of results.json is the one the Report type makes:
// FERRY_UPDATE_SCHEMA=1 go test ./core/verify rewrites it after a change.
func TestResultsSchemaIsCurrent(t *testing.T) {
	r := &jsonschema.Reflector{DoNotReference: true, ExpandedStruct: true}
	s := r.Reflect(&Report{})
	s.ID = "https://github.com/ferrymq/ferry/docs/verify-results.schema.json"
	s.Title = "ferry verify results.json"
	s.Description = "The whole report of a ferry verify run (core/verify.Report); durations and times are nanoseconds."
	want, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if os.Getenv("FERRY_UPDATE_SCHEMA") != "" {
		if err := os.WriteFile(schemaPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not the schema of verify.Report: run FERRY_UPDATE_SCHEMA=1 go test ./core/verify", schemaPath)
	}
}

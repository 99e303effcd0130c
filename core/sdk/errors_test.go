package sdk

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Every sentinel survives both encodings (in-stream and gRPC status), wrapped
// or not, and keeps its message.
func TestSentinelsCrossTheBoundary(t *testing.T) {
	for _, s := range sentinels {
		err := fmt.Errorf("queue 3: %w", s.err)
		for name, back := range map[string]error{
			"proto":  ErrorFromProto(ErrorToProto(err)),
			"status": ErrorFromStatus(ErrorToStatus(err)),
		} {
			if !errors.Is(back, s.err) {
				t.Errorf("%s: %s: errors.Is(%v) = false", s.name, name, back)
			}
			if back.Error() != err.Error() {
				t.Errorf("%s: %s: message %q, want %q", s.name, name, back.Error(), err.Error())
			}
		}
	}
}

func TestTransportFailuresAreUnavailable(t *testing.T) {
	err := ErrorFromStatus(status.Error(codes.Unavailable, "connection reset"))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("%v is not ErrUnavailable", err)
	}
	// An RPC the other side does not serve (a plugin written before it).
	if err := ErrorFromStatus(status.Error(codes.Unimplemented, "unknown method ReplicateOffsets")); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("%v is not errors.ErrUnsupported", err)
	}
	if err := ErrorFromStatus(status.Error(codes.Canceled, "x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("%v is not context.Canceled", err)
	}
	if ErrorToProto(nil) != nil || ErrorFromProto(nil) != nil || ErrorToStatus(nil) != nil || ErrorFromStatus(nil) != nil {
		t.Fatal("nil did not stay nil")
	}
	unknown := ErrorFromProto(ErrorToProto(errors.New("disk on fire")))
	if unknown == nil || unknown.Error() != "disk on fire" || errors.Is(unknown, ErrUnavailable) {
		t.Fatalf("unknown error came back as %v", unknown)
	}
}

func TestProblemsAreConfigErrors(t *testing.T) {
	ps := Problems{{Path: "a.b", Message: "bad"}, {Message: "worse"}}
	if !errors.Is(ps, ErrConfig) || ps.Error() != "a.b: bad; worse" {
		t.Fatalf("%v", ps)
	}
	back := ErrorFromStatus(ErrorToStatus(ps))
	if !errors.Is(back, ErrConfig) {
		t.Fatalf("%v lost ErrConfig", back)
	}
}

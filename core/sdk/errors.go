package sdk

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// Sentinel errors. A plugin returns them (wrapped with %w as it likes); they
// cross the process boundary and errors.Is matches them on the host. Each says
// what the broker does on receipt.
var (
	// ErrInvalidArgument: the request is malformed (empty topic, bad
	// queue, message too large). Not retried; reported to the client.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the topic, queue or group does not exist. Not retried.
	ErrNotFound = errors.New("not found")
	// ErrFlushTimeout: the data was written but the flush did not finish
	// before the deadline. The producer gets status FLUSH_TIMEOUT.
	ErrFlushTimeout = errors.New("flush timeout")
	// ErrReplicaTimeout: replicas did not confirm before the deadline.
	ErrReplicaTimeout = errors.New("replica timeout")
	// ErrReplicaNotAvailable: too few replicas are connected.
	ErrReplicaNotAvailable = errors.New("replica not available")
	// ErrCorrupt: stored data failed its checksum. The broker logs it and
	// never delivers the data.
	ErrCorrupt = errors.New("corrupt data")
	// ErrNotConfigured: a call came before Configure succeeded.
	ErrNotConfigured = errors.New("plugin not configured")
	// ErrClosed: the plugin is shutting down. The broker retries on the
	// restarted plugin.
	ErrClosed = errors.New("closed")
	// ErrUnavailable: the plugin process (or a peer) cannot be reached;
	// the outcome of the call is unknown. The broker retries idempotently.
	ErrUnavailable = errors.New("unavailable")
	// ErrFull: the disk or a configured limit is full. Not retried.
	ErrFull = errors.New("storage full")
	// ErrConfig: a configuration is invalid; see Problems.
	ErrConfig = errors.New("invalid config")
	// ErrNotLeader: this node does not take produce (a slave, a raft
	// follower, a deposed leader); nothing was stored. A client refreshes
	// its routing metadata and sends to the leader it names.
	ErrNotLeader = errors.New("not leader")
	// ErrUnauthenticated: the node checks who its clients are and the
	// request carried no credentials, or credentials that did not prove a
	// user. Not retried; the client must send (other) credentials.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: the client is authenticated but the node's
	// access control does not allow the request. Not retried.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrStaleGeneration: a consumer group's commit carried a generation
	// older than the group's: the group was deleted after the client
	// learned it (HeartbeatResponse.generation). Nothing was stored. Not
	// retried as is; the client learns the new generation from its next
	// heartbeat.
	ErrStaleGeneration = errors.New("stale group generation")
)

// sentinels is the one table that maps sentinels to wire codes and gRPC codes.
var sentinels = []struct {
	err  error
	name string
	code codes.Code
}{
	{ErrInvalidArgument, "INVALID_ARGUMENT", codes.InvalidArgument},
	{ErrNotFound, "NOT_FOUND", codes.NotFound},
	{ErrFlushTimeout, "FLUSH_TIMEOUT", codes.DeadlineExceeded},
	{ErrReplicaTimeout, "REPLICA_TIMEOUT", codes.DeadlineExceeded},
	{ErrReplicaNotAvailable, "REPLICA_NOT_AVAILABLE", codes.Unavailable},
	{ErrCorrupt, "CORRUPT", codes.DataLoss},
	{ErrNotConfigured, "NOT_CONFIGURED", codes.FailedPrecondition},
	{ErrClosed, "CLOSED", codes.Unavailable},
	{ErrUnavailable, "UNAVAILABLE", codes.Unavailable},
	{ErrFull, "FULL", codes.ResourceExhausted},
	{ErrConfig, "CONFIG", codes.InvalidArgument},
	{ErrNotLeader, "NOT_LEADER", codes.FailedPrecondition},
	{ErrUnauthenticated, "UNAUTHENTICATED", codes.Unauthenticated},
	{ErrPermissionDenied, "PERMISSION_DENIED", codes.PermissionDenied},
	{ErrStaleGeneration, "STALE_GENERATION", codes.FailedPrecondition},
	// A plugin lacks an optional capability (e.g. ReplicateOffsets): the
	// broker stops asking it. A plugin in another language that does not
	// serve an RPC answers codes.Unimplemented, which decodes to the same.
	{errors.ErrUnsupported, "UNSUPPORTED", codes.Unimplemented},
	{context.DeadlineExceeded, "DEADLINE_EXCEEDED", codes.DeadlineExceeded},
	{context.Canceled, "CANCELED", codes.Canceled},
}

// wireError is an error received from the other side of the boundary. It keeps
// the remote message and matches its sentinel with errors.Is.
type wireError struct {
	sentinel error
	msg      string
}

func (e *wireError) Error() string { return e.msg }
func (e *wireError) Unwrap() error { return e.sentinel }

// ErrorToProto encodes err for a streaming response. nil stays nil.
func ErrorToProto(err error) *ferryv1.Error {
	if err == nil {
		return nil
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return &ferryv1.Error{Code: s.name, Message: err.Error()}
		}
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return &ferryv1.Error{Code: "UNAVAILABLE", Message: err.Error()}
	}
	return &ferryv1.Error{Code: "UNKNOWN", Message: err.Error()}
}

// ErrorFromProto decodes an error received in a streaming response.
func ErrorFromProto(e *ferryv1.Error) error {
	if e == nil {
		return nil
	}
	for _, s := range sentinels {
		if s.name == e.Code {
			return &wireError{sentinel: s.err, msg: e.Message}
		}
	}
	return errors.New(e.Message)
}

// ErrorToStatus encodes err as a gRPC status for a unary response. The
// sentinel's name travels in the status message prefix "NAME: ".
func ErrorToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return status.Error(s.code, s.name+": "+err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// ErrorFromStatus decodes a gRPC error into an error that matches the
// sentinel it was made from. Transport failures become ErrUnavailable.
func ErrorFromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	for _, s := range sentinels {
		if len(msg) > len(s.name)+2 && msg[:len(s.name)+2] == s.name+": " {
			return &wireError{sentinel: s.err, msg: msg[len(s.name)+2:]}
		}
	}
	switch st.Code() {
	case codes.Unavailable:
		return &wireError{sentinel: ErrUnavailable, msg: fmt.Sprintf("unavailable: %s", msg)}
	case codes.Unimplemented:
		return &wireError{sentinel: errors.ErrUnsupported, msg: fmt.Sprintf("unsupported: %s", msg)}
	case codes.Canceled:
		return &wireError{sentinel: context.Canceled, msg: msg}
	case codes.DeadlineExceeded:
		return &wireError{sentinel: context.DeadlineExceeded, msg: msg}
	case codes.Unauthenticated:
		return &wireError{sentinel: ErrUnauthenticated, msg: msg}
	case codes.PermissionDenied:
		return &wireError{sentinel: ErrPermissionDenied, msg: msg}
	}
	return errors.New(msg)
}

// unaryServerErrors maps handler errors to gRPC statuses.
func unaryServerErrors(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, ErrorToStatus(err)
}

// unaryClientErrors maps gRPC statuses back to sentinels.
func unaryClientErrors(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return ErrorFromStatus(invoker(ctx, method, req, reply, cc, opts...))
}

// Problem is one thing wrong with a config section, at a key path relative to
// that section.
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Problems is a list of config problems; as an error it matches ErrConfig.
type Problems []Problem

func (ps Problems) Error() string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += "; "
		}
		s += p.String()
	}
	return s
}

func (ps Problems) Is(target error) bool { return target == ErrConfig }

package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// A group's dead-letter queue is the one queue of its DLQ topic
// (sdk.DLQTopic). Nothing consumes it; tools read it through a cursor: the
// offset committed for the group named DLQCursorGroup(group) on that queue.
// The live dead letters are those from the cursor to the end of the queue.
// Purging moves the cursor forward; re-driving sends copies of the messages
// back to the group and then moves the cursor past them. Messages behind the
// cursor stay stored (until retention removes them) and can still be shown
// by offset.

// DLQCursorGroup is the group whose committed offset on the DLQ topic marks
// the first live dead letter of group: the DLQ topic's own name.
func DLQCursorGroup(group string) string { return sdk.DLQTopic(group) }

var errShortAnswer = errors.New("the broker's answer does not match the request")

// DeadLetter is one message of a group's dead-letter queue.
type DeadLetter struct {
	// DLQOffset is the dead letter's offset in the DLQ topic.
	DLQOffset int64
	// Message is the dead letter as stored (body, key, all headers).
	Message *ferryv1.Message
	// ID, Topic, Queue and Offset name the original message.
	ID     string
	Topic  string
	Queue  int32
	Offset int64
	// Attempts is how many times the group was given the message.
	Attempts int
	// Reason is why it was dead-lettered ("max attempts (16) reached",
	// "permanent error", …); LastError is the error of its last attempt.
	Reason    string
	LastError string
	// FirstFailure and LastFailure are when its first and last attempts
	// failed (zero when unknown).
	FirstFailure time.Time
	LastFailure  time.Time
}

func deadLetterOf(m *ferryv1.Message) DeadLetter {
	h := m.Headers
	dl := DeadLetter{DLQOffset: m.Offset, Message: m, ID: h[sdk.HeaderOriginID], Topic: h[sdk.HeaderOriginTopic],
		Queue: -1, Offset: -1, Reason: h[sdk.HeaderDeadReason], LastError: h[sdk.HeaderLastError]}
	if dl.ID == "" {
		dl.ID = m.Id
	}
	if v, err := strconv.ParseInt(h[sdk.HeaderOriginQueue], 10, 32); err == nil {
		dl.Queue = int32(v)
	}
	if v, err := strconv.ParseInt(h[sdk.HeaderOriginOffset], 10, 64); err == nil {
		dl.Offset = v
	}
	dl.Attempts, _ = strconv.Atoi(h[sdk.HeaderAttempt])
	dl.FirstFailure, _ = time.Parse(time.RFC3339Nano, h[sdk.HeaderFirstFailure])
	dl.LastFailure, _ = time.Parse(time.RFC3339Nano, h[sdk.HeaderLastFailure])
	return dl
}

// DLQState is where a group's dead-letter queue stands.
type DLQState struct {
	Group string
	// Start and End are the stored range of the DLQ queue; Cursor is the
	// first live dead letter (Start when nothing was purged or re-driven).
	Start, End, Cursor int64
}

// Depth is the number of live dead letters.
func (s DLQState) Depth() int64 { return s.End - s.Cursor }

// DLQ reports where group's dead-letter queue stands.
func (c *Client) DLQ(ctx context.Context, group string) (DLQState, error) {
	if group == "" {
		return DLQState{}, fmt.Errorf("ferry dlq: %w: group is required", sdk.ErrInvalidArgument)
	}
	offs, err := c.GetOffsets(ctx, DLQCursorGroup(group), []*ferryv1.QueueRef{{Topic: sdk.DLQTopic(group), Queue: 0}})
	if err != nil {
		return DLQState{}, err
	}
	if len(offs) != 1 {
		return DLQState{}, c.callError("get offsets", errShortAnswer)
	}
	o := offs[0]
	s := DLQState{Group: group, Start: o.Start, End: o.End, Cursor: max(o.Committed, o.Start)}
	s.Cursor = min(s.Cursor, s.End)
	return s, nil
}

// DLQDepth is how many of group's dead letters were neither purged nor
// re-driven: the metric to watch. Safe to call at any rate a scrape needs
// (one GetOffsets call).
func (c *Client) DLQDepth(ctx context.Context, group string) (int64, error) {
	s, err := c.DLQ(ctx, group)
	if err != nil {
		return 0, err
	}
	return s.Depth(), nil
}

// readDLQ reads up to limit dead letters of group from offset from (fewer at
// the end of the queue).
func (c *Client) readDLQ(ctx context.Context, group string, from int64, limit int) ([]DeadLetter, error) {
	var out []DeadLetter
	for len(out) < limit {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := c.rpc.Fetch(cctx, &ferryv1.FetchRequest{
			Topic: sdk.DLQTopic(group), Positions: []*ferryv1.FetchPosition{{Queue: 0, Offset: from}},
			MaxMessages: int32(min(limit-len(out), 1024)), Group: DLQCursorGroup(group),
		}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return nil, c.callError("fetch", err)
		}
		if len(resp.Messages) == 0 && len(resp.Errors) > 0 {
			return out, fmt.Errorf("ferry: dead letter %d of group %q: %w", resp.Errors[0].Offset, group, sdk.ErrorFromProto(resp.Errors[0].Error))
		}
		if len(resp.Messages) == 0 {
			break
		}
		for _, m := range resp.Messages {
			if m.Offset >= from && len(out) < limit {
				out = append(out, deadLetterOf(m))
				from = m.Offset + 1
			}
		}
	}
	return out, nil
}

// DeadLetters returns up to limit live dead letters of group, oldest first
// (limit ≤ 0: all), and the queue's state.
func (c *Client) DeadLetters(ctx context.Context, group string, limit int) ([]DeadLetter, DLQState, error) {
	s, err := c.DLQ(ctx, group)
	if err != nil {
		return nil, s, err
	}
	if limit <= 0 || int64(limit) > s.Depth() {
		limit = int(s.Depth())
	}
	dls, err := c.readDLQ(ctx, group, s.Cursor, limit)
	return dls, s, err
}

// DeadLetterAt returns the dead letter of group at offset, live or not, as
// long as it is stored; sdk.ErrNotFound otherwise.
func (c *Client) DeadLetterAt(ctx context.Context, group string, offset int64) (DeadLetter, error) {
	s, err := c.DLQ(ctx, group)
	if err != nil {
		return DeadLetter{}, err
	}
	if offset < s.Start || offset >= s.End {
		return DeadLetter{}, fmt.Errorf("ferry dlq: %w: group %s has dead letters at offsets %d..%d, not %d", sdk.ErrNotFound, group, s.Start, s.End-1, offset)
	}
	dls, err := c.readDLQ(ctx, group, offset, 1)
	if err != nil {
		return DeadLetter{}, err
	}
	if len(dls) == 0 || dls[0].DLQOffset != offset {
		return DeadLetter{}, fmt.Errorf("ferry dlq: %w: no dead letter at offset %d of group %s", sdk.ErrNotFound, offset, group)
	}
	return dls[0], nil
}

// PurgeDeadLetters drops the first n live dead letters of group (n ≤ 0: all)
// by moving the cursor past them, and returns how many it dropped. They stay
// stored until retention removes them (DeadLetterAt still shows them) but
// are no longer listed, counted or re-driven.
func (c *Client) PurgeDeadLetters(ctx context.Context, group string, n int) (int64, error) {
	s, err := c.DLQ(ctx, group)
	if err != nil {
		return 0, err
	}
	to := s.End
	if n > 0 {
		to = min(s.End, s.Cursor+int64(n))
	}
	if to == s.Cursor {
		return 0, nil
	}
	if err := c.moveDLQCursor(ctx, group, to); err != nil {
		return 0, err
	}
	return to - s.Cursor, nil
}

func (c *Client) moveDLQCursor(ctx context.Context, group string, to int64) error {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.rpc.CommitOffsets(cctx, &ferryv1.CommitOffsetsRequest{Group: DLQCursorGroup(group),
		Offsets: []*ferryv1.GroupOffset{{Topic: sdk.DLQTopic(group), Queue: 0, Offset: to}}}, grpc.WaitForReady(true))
	if err != nil {
		return c.callError("commit offsets", err)
	}
	return nil
}

// redriveBatch is how many dead letters one redrive request carries.
const redriveBatch = 256

// RedriveDeadLetters sends the first n live dead letters of group (n ≤ 0:
// all) back to the group and returns the ones it sent. Each goes to the
// group's retry topic, due at once, on attempt 1 again (a full set of
// retries), with its original's id, key, body and headers and its failure
// history (first and last failure, last error) but no dead-letter reason; the
// cursor then moves past it. Only this group sees it again, from whichever
// member owns that retry queue, even if none is running now (it waits).
//
// A redrive interrupted between sending and moving the cursor can be run
// again: the copies have ids derived from their DLQ offsets, which the broker
// de-duplicates, so no message is re-driven twice.
func (c *Client) RedriveDeadLetters(ctx context.Context, group string, n int) ([]DeadLetter, error) {
	dls, s, err := c.DeadLetters(ctx, group, n)
	if err != nil {
		return nil, err
	}
	sender := newCopySender(c)
	defer sender.close()
	cursor := s.Cursor
	var done []DeadLetter
	for len(dls) > 0 {
		batch := dls[:min(len(dls), redriveBatch)]
		dls = dls[len(batch):]
		now := time.Now()
		msgs := make([]*ferryv1.Message, len(batch))
		for i, dl := range batch {
			m := dl.Message
			h := maps.Clone(m.Headers)
			if h == nil {
				h = map[string]string{}
			}
			delete(h, sdk.HeaderDeadReason)
			h[sdk.HeaderAttempt] = "1"
			h[sdk.HeaderDeliverAt] = strconv.FormatInt(now.UnixNano(), 10)
			h[sdk.HeaderOriginID] = dl.ID
			msgs[i] = &ferryv1.Message{Id: fmt.Sprintf("%s~x.%d", dl.ID, dl.DLQOffset), Topic: sdk.RetryTopic(group), Queue: 0,
				Key: m.Key, Headers: h, Body: m.Body, BornUnixNano: m.BornUnixNano}
		}
		if err := sender.send(ctx, msgs...); err != nil {
			return done, fmt.Errorf("ferry dlq: re-driving group %s: %w", group, err)
		}
		cursor = batch[len(batch)-1].DLQOffset + 1
		if err := c.moveDLQCursor(ctx, group, cursor); err != nil {
			return done, fmt.Errorf("ferry dlq: %d message(s) of group %s re-driven, but moving the cursor past them failed (running redrive again is safe): %w", len(batch), group, err)
		}
		done = append(done, batch...)
	}
	return done, nil
}

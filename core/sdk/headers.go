package sdk

import (
	"strings"
	"time"
)

// Headers with which Ferry itself annotates messages. Applications' own
// headers must not start with "ferry-".
const (
	// HeaderAttempt is the delivery attempt a retried message is on: "2"
	// for its first retry. Absent means 1.
	HeaderAttempt = "ferry-attempt"
	// HeaderDeliverAt holds a retried message back until this time (Unix
	// nanoseconds, decimal): the broker does not deliver it earlier.
	HeaderDeliverAt = "ferry-deliver-at"
	// Where a retried or dead-lettered message was first stored.
	HeaderOriginTopic  = "ferry-origin-topic"
	HeaderOriginQueue  = "ferry-origin-queue"
	HeaderOriginOffset = "ferry-origin-offset"
	HeaderOriginID     = "ferry-origin-id"
	// Why a message was retried or dead-lettered.
	HeaderLastError    = "ferry-last-error"
	HeaderDeadReason   = "ferry-dead-reason"
	HeaderFirstFailure = "ferry-first-failure" // RFC 3339 with nanoseconds
	HeaderLastFailure  = "ferry-last-failure"
)

// Internal topics of a consumer group. Their names cannot clash with a
// declared topic: topic names in pipelines never contain '%'.
const (
	retryPrefix = "%RETRY%"
	dlqPrefix   = "%DLQ%"
)

// RetryTopic is where a group's failed messages wait for their next attempt.
// It has one queue per delay level, so that each queue is ordered by the time
// its messages are due (RocketMQ's schedule topic).
func RetryTopic(group string) string { return retryPrefix + group }

// DLQTopic is a group's dead-letter queue (one queue).
func DLQTopic(group string) string { return dlqPrefix + group }

// InternalTopic reports whether topic is a group's retry or dead-letter topic
// and returns the group and the queue count such a topic has.
func InternalTopic(topic string) (group string, queues int32, ok bool) {
	if g, ok := strings.CutPrefix(topic, retryPrefix); ok && g != "" {
		return g, int32(len(DelayLevels)), true
	}
	if g, ok := strings.CutPrefix(topic, dlqPrefix); ok && g != "" {
		return g, 1, true
	}
	return "", 0, false
}

// DelayLevels is the default retry schedule, RocketMQ's: the n-th retry of a
// message waits DelayLevels[n-1] (the last level repeats).
var DelayLevels = []time.Duration{
	1 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	1 * time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute,
	5 * time.Minute, 6 * time.Minute, 7 * time.Minute, 8 * time.Minute,
	9 * time.Minute, 10 * time.Minute, 20 * time.Minute, 30 * time.Minute,
	1 * time.Hour, 2 * time.Hour,
}

// DelayLevel is the retry-topic queue for a delay: the highest level whose
// delay is at most d (level 0 for anything shorter than the first). A queue
// holds messages of one nominal delay, so it is ordered by due time up to
// that rounding; a message is never delivered before its HeaderDeliverAt.
func DelayLevel(d time.Duration) int32 {
	level := int32(0)
	for i, l := range DelayLevels {
		if l <= d {
			level = int32(i)
		}
	}
	return level
}

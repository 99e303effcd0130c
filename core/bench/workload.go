// Package bench is the engine of `ferry bench` and of the comparison harness
// under bench/: workloads (produce, consume, end to end) run against a
// System, latencies recorded in HDR histograms, and results printed as a
// table or JSON, one run or the medians of several.
//
// A System is Ferry through its Go client (Ferry) or, in the harness, another
// broker; the same Workload value means the same thing on each, so that
// their results can be compared line by line.
package bench

import (
	"errors"
	"fmt"
	"time"
)

// Kind is what a workload measures.
type Kind string

const (
	// Produce sends messages and measures the send rate and the latency
	// from the send to its ack (sync and async), or the rate until the
	// broker stored them all (oneway).
	Produce Kind = "produce"
	// Consume reads Count messages with a fresh consumer group, acking
	// each one, after making sure the topic holds at least Count (see
	// Workload.Preload). It measures the consume rate.
	Consume Kind = "consume"
	// EndToEnd produces and consumes at once and measures the latency from
	// the send to the consumer's handler, and the rate of messages
	// consumed.
	EndToEnd Kind = "e2e"
)

// SendMode is how producers send.
type SendMode string

const (
	Sync   SendMode = "sync"   // wait for each message's ack
	Async  SendMode = "async"  // callbacks, Inflight messages in flight per producer
	Oneway SendMode = "oneway" // no ack; timed until the broker stored them all
)

// Delivery is how consumers get messages.
type Delivery string

const (
	Push Delivery = "push" // the consumer fetches ahead and calls a handler
	Pull Delivery = "pull" // the application fetches batches and acks each message
)

// Defaults of Workload.
const (
	DefaultSize     = 1024
	DefaultCount    = 10000
	DefaultInflight = 256
	// DefaultDrainTimeout bounds how long an end-to-end run waits, after
	// the producers finished, for the consumers to see what was sent, and
	// how long a consume run waits without progress.
	DefaultDrainTimeout = 30 * time.Second
)

// Workload says what to run. The zero value of each field but Kind and Topic
// is its default.
type Workload struct {
	// Name labels the workload in tables (default: Label()).
	Name  string   `json:"name,omitempty"`
	Kind  Kind     `json:"kind"`
	Topic string   `json:"topic"`
	Size  int      `json:"size"` // body bytes (default DefaultSize)
	Mode  SendMode `json:"mode,omitempty"`
	// Count is how many messages to send (Produce, EndToEnd) or to consume
	// (Consume); default DefaultCount unless Duration is set.
	Count int64 `json:"count,omitempty"`
	// Duration, instead of Count, sends for this long (Produce, EndToEnd).
	Duration time.Duration `json:"duration,omitempty"`
	// Producers is how many goroutines send, each with its own producer
	// (default 1).
	Producers int `json:"producers,omitempty"`
	// Inflight is the async window of each producer, in messages (default
	// DefaultInflight).
	Inflight int `json:"inflight,omitempty"`
	// Consumers is how many consumers of one group read (default 1).
	Consumers int      `json:"consumers,omitempty"`
	Delivery  Delivery `json:"delivery,omitempty"` // default Pull
	// FetchMax bounds one fetch; 0 means the system's own default (Ferry's
	// client: client.DefaultMaxMessages; JetStream: its pull batch).
	FetchMax int `json:"fetch_max,omitempty"`
	// Preload (Consume) first produces, untimed, what the topic lacks to
	// hold Count messages. Without it a topic holding fewer fails the run.
	Preload bool `json:"preload,omitempty"`
	// DrainTimeout bounds the wait of an end-to-end run for its last
	// messages, and how long a consume run goes on without getting any
	// (default DefaultDrainTimeout); what did not arrive is counted as
	// NOT_CONSUMED.
	DrainTimeout time.Duration `json:"-"`
}

// WithDefaults returns w with its zero fields set to their defaults.
func (w Workload) WithDefaults() Workload {
	if w.Size == 0 {
		w.Size = DefaultSize
	}
	if w.Count == 0 && w.Duration == 0 {
		w.Count = DefaultCount
	}
	if w.Mode == "" {
		w.Mode = Sync
	}
	if w.Producers == 0 {
		w.Producers = 1
	}
	if w.Inflight == 0 {
		w.Inflight = DefaultInflight
	}
	if w.Consumers == 0 {
		w.Consumers = 1
	}
	if w.Delivery == "" {
		w.Delivery = Pull
	}
	if w.DrainTimeout == 0 {
		w.DrainTimeout = DefaultDrainTimeout
	}
	if w.Name == "" {
		w.Name = w.Label()
	}
	return w
}

// Validate reports every problem of w (after WithDefaults) joined.
func (w Workload) Validate() error {
	var errs []error
	switch w.Kind {
	case Produce, Consume, EndToEnd:
	default:
		errs = append(errs, fmt.Errorf("kind must be produce, consume or e2e, got %q", w.Kind))
	}
	if w.Topic == "" {
		errs = append(errs, errors.New("topic is required"))
	}
	switch w.Mode {
	case Sync, Async, Oneway:
	default:
		errs = append(errs, fmt.Errorf("mode must be sync, async or oneway, got %q", w.Mode))
	}
	if w.Kind == EndToEnd && w.Mode == Oneway {
		errs = append(errs, errors.New("e2e needs acks: mode must be sync or async"))
	}
	switch w.Delivery {
	case Push, Pull:
	default:
		errs = append(errs, fmt.Errorf("delivery must be push or pull, got %q", w.Delivery))
	}
	if w.Size < 0 || w.Count < 0 || w.Duration < 0 || w.Producers < 0 || w.Inflight < 0 || w.Consumers < 0 || w.FetchMax < 0 {
		errs = append(errs, errors.New("size, count, duration, producers, inflight, consumers and fetch max must not be negative"))
	}
	if w.Count > 0 && w.Duration > 0 {
		errs = append(errs, errors.New("count and duration exclude each other"))
	}
	if w.Kind == Consume && w.Duration > 0 {
		errs = append(errs, errors.New("consume takes a count, not a duration"))
	}
	if w.Kind == EndToEnd && w.Size > 0 && w.Size < stampBytes {
		errs = append(errs, fmt.Errorf("e2e needs a size of at least %d bytes (the send time travels in the body)", stampBytes))
	}
	return errors.Join(errs...)
}

// Label describes w briefly: "produce sync x16", "produce async w256",
// "consume pull x1", "e2e async w256 / push x2".
func (w Workload) Label() string {
	prod := string(w.Mode)
	if w.Mode == Async {
		prod += fmt.Sprintf(" w%d", w.Inflight)
	}
	if w.Producers != 1 {
		prod += fmt.Sprintf(" x%d", w.Producers)
	}
	cons := string(w.Delivery)
	if w.Consumers != 1 {
		cons += fmt.Sprintf(" x%d", w.Consumers)
	}
	switch w.Kind {
	case Produce:
		return "produce " + prod
	case Consume:
		return "consume " + cons
	case EndToEnd:
		return "e2e " + prod + " / " + cons
	}
	return string(w.Kind)
}

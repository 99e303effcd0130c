package telemetry

import "go.opentelemetry.io/otel/attribute"

// Components: the first part of a span name and the tracer's scope.
const (
	ComponentProducer    = "producer"
	ComponentTransport   = "transport"
	ComponentBroker      = "broker"
	ComponentStorage     = "storage"
	ComponentReplication = "replication"
	ComponentConsumer    = "consumer"
	ComponentRetry       = "retry"
	ComponentDLQ         = "dlq"
)

// Span names, "<component>.<operation>", in the order of a message's life.
// A hop of a batch records one span per sampled message and one for the
// batch under the same name (StartHop).
const (
	SpanProducerSend          = "producer.send"         // the client sends one message (covers its retries)
	SpanTransportReceive      = "transport.receive"     // the transport plugin takes a batch from a producer
	SpanBrokerAppend          = "broker.append"         // the broker checks and routes a batch to storage
	SpanStorageAppend         = "storage.append"        // the storage plugin stores a batch
	SpanStorageFlush          = "storage.flush"         // the storage plugin makes appends durable
	SpanReplicationReplicate  = "replication.replicate" // a batch is shipped to replicas
	SpanStorageRead           = "storage.read"          // the storage plugin reads a batch for a consumer's fetch
	SpanBrokerFetch           = "broker.fetch"          // a consumer's fetch is answered
	SpanBrokerDeliver         = "broker.deliver"        // one message is handed to a consumer
	SpanTransportDeliver      = "transport.deliver"     // the transport plugin streams a batch to a consumer
	SpanConsumerProcess       = "consumer.process"      // the handler runs on one message (one attempt)
	SpanConsumerAck           = "consumer.ack"          // the message is acknowledged
	SpanConsumerCommit        = "consumer.commit"       // the group's offset is committed
	SpanRetrySchedule         = "retry.schedule"        // a failed message is scheduled for another attempt
	SpanDLQRoute              = "dlq.route"             // a message is moved to the group's dead-letter queue
	SpanBrokerCommitOffsets   = "broker.commit_offsets" // the broker stores a group's offsets
	SpanTransportCommitOffset = "transport.commit"      // the transport plugin forwards a commit
)

// Span attribute keys, e.g. telemetry.AttrTopic.String("orders"): those of
// OpenTelemetry's messaging semantic conventions where one exists
// (messaging.*), Ferry's own (ferry.*) otherwise.
const (
	AttrSystem        = attribute.Key("messaging.system")              // always SystemFerry
	AttrTopic         = attribute.Key("messaging.destination.name")    // the topic
	AttrOperationType = attribute.Key("messaging.operation.type")      // OpSend, OpProcess, OpSettle, …
	AttrGroup         = attribute.Key("messaging.consumer.group.name") // the consumer group
	AttrMessageID     = attribute.Key("messaging.message.id")          // the message's id (Message.id)
	AttrMessages      = attribute.Key("messaging.batch.message_count") // messages in a batch (not set for one)
	AttrPipeline      = attribute.Key("ferry.pipeline")
	AttrQueue         = attribute.Key("ferry.queue")
	AttrOffset        = attribute.Key("ferry.offset")
	AttrAttempt       = attribute.Key("ferry.attempt") // 1 for the first delivery
	AttrPlugin        = attribute.Key("ferry.plugin")  // "<kind>/<type>", e.g. "storage/file" (a process's resource)
	AttrReason        = attribute.Key("ferry.reason")  // why a message was retried or dead-lettered
	AttrStatus        = attribute.Key("ferry.status")  // the append's status (STATUS_OK, STATUS_FLUSH_TIMEOUT)
)

// SystemFerry is the value of messaging.system on Ferry's spans.
const SystemFerry = "ferry"

// Values of messaging.operation.type (the conventions' operation types).
const (
	OpSend    = "send"    // a message is sent to the broker (producer.send, retry.schedule, dlq.route)
	OpReceive = "receive" // a message is handed to a consumer (broker.deliver)
	OpProcess = "process" // the consumer's handler runs (consumer.process)
	OpSettle  = "settle"  // the message is acknowledged (consumer.ack)
)

// Span event names.
const (
	// EventRetry is added to a consumer.process span whose attempt failed
	// and will be retried; its attributes are AttrAttempt and AttrReason.
	EventRetry = "retry"
	// EventDeadLetter is added when a message's last attempt failed and it
	// goes to the dead-letter queue.
	EventDeadLetter = "dead_letter"
)

// Message headers that carry the W3C trace context.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// BatchAttr is the attribute that says what a batch span covers: the
// message's id (messaging.message.id) for a batch of one, so that the span
// is found by the message's id, and the batch's size
// (messaging.batch.message_count) for more, as the messaging conventions
// ask (they leave the count off single-message spans).
func BatchAttr[M interface{ GetId() string }](msgs []M) attribute.KeyValue {
	if len(msgs) == 1 {
		return AttrMessageID.String(msgs[0].GetId())
	}
	return AttrMessages.Int(len(msgs))
}

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
const (
	SpanProducerSend          = "producer.send"         // the client sends one message (covers its retries)
	SpanTransportReceive      = "transport.receive"     // the transport plugin takes a batch from a producer
	SpanBrokerAppend          = "broker.append"         // the broker checks and routes a batch to storage
	SpanStorageAppend         = "storage.append"        // the storage plugin stores a batch (links to its messages)
	SpanStorageFlush          = "storage.flush"         // the storage plugin makes appends durable (links)
	SpanReplicationReplicate  = "replication.replicate" // a batch is shipped to replicas (links)
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

// Span attribute keys, e.g. telemetry.AttrTopic.String("orders").
const (
	AttrPipeline = attribute.Key("pipeline")
	AttrTopic    = attribute.Key("topic")
	AttrQueue    = attribute.Key("queue")
	AttrOffset   = attribute.Key("offset")
	AttrGroup    = attribute.Key("group")
	AttrAttempt  = attribute.Key("attempt")  // 1 for the first delivery
	AttrPlugin   = attribute.Key("plugin")   // "<kind>/<type>", e.g. "storage/file"
	AttrMessages = attribute.Key("messages") // messages in a batch
	AttrReason   = attribute.Key("reason")   // why a message was retried or dead-lettered
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

package admin

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ferrymq/ferry/core/sdk"
)

// Metric names, as Prometheus shows them.
const (
	MetricAppendMessages  = "ferry_append_messages_total"
	MetricConsumeMessages = "ferry_consume_messages_total"
	MetricFlushSeconds    = "ferry_flush_seconds"
	MetricReplicationLag  = "ferry_replication_lag_messages"
	MetricConsumerLag     = "ferry_consumer_lag_messages"
	MetricRetries         = "ferry_retries_total"
	MetricDLQDepth        = "ferry_dlq_depth"
	MetricPluginRestarts  = "ferry_plugin_restarts_total"
	MetricAppendSeconds   = "ferry_append_seconds"
	// MetricOffsetReplicationFailures counts failed hand-overs of consumer
	// offsets to the replication plugin (the commits themselves succeeded).
	MetricOffsetReplicationFailures = "ferry_offset_replication_failures_total"
	// MetricCorruptReads counts fetches of a queue that found a damaged
	// record at their position (answered CORRUPT for that queue alone).
	MetricCorruptReads = "ferry_corrupt_reads_total"
	// MetricStorageFull is 1 while the storage refuses appends for a full
	// disk.
	MetricStorageFull = "ferry_storage_full"
	// MetricFetchesWaiting is the number of consumers' long-poll fetches
	// waiting at the broker for messages.
	MetricFetchesWaiting = "ferry_fetches_waiting"
)

// MaxGroupLabels bounds the distinct values of the group label: clients name
// groups freely, and each value is a series of its own. Past it a group's
// counts go to the group "other"; its gauges are not exported.
const MaxGroupLabels = 256

// OtherLabel is the label value that stands for the groups past
// MaxGroupLabels (and their retry and dead-letter topics).
const OtherLabel = "other"

// flushBuckets span a page-cache write (tens of µs) to a slow fsync (1 s+).
var flushBuckets = prometheus.ExponentialBuckets(50e-6, 2.5, 14) // 50µs … ~7.5s

// Metrics are a broker node's metrics, in a registry of their own (not
// Prometheus's global one), served on the admin listener's /metrics.
//
// The engine creates one per node and hands it to the broker, the plugin
// host and the flows. Every method is safe for concurrent use, costs a label
// lookup and an atomic add, and is a no-op on a nil *Metrics, so that a
// component given none needs no checks.
type Metrics struct {
	reg *prometheus.Registry

	appended       *prometheus.CounterVec
	consumed       *prometheus.CounterVec
	flush          prometheus.Histogram
	appendLatency  prometheus.Histogram
	replicationLag *prometheus.GaugeVec
	consumerLag    *prometheus.GaugeVec
	retries        *prometheus.CounterVec
	dlqDepth       *prometheus.GaugeVec
	pluginRestarts *prometheus.CounterVec
	offsetReplFail *prometheus.CounterVec
	corruptReads   *prometheus.CounterVec
	storageFull    prometheus.Gauge
	fetchesWaiting prometheus.Gauge

	groupsMu sync.Mutex
	groups   map[string]bool // group label values admitted, at most MaxGroupLabels
}

// group returns the label value of group: itself while fewer than
// MaxGroupLabels groups have one, else OtherLabel (ok false).
func (m *Metrics) group(group string) (string, bool) {
	m.groupsMu.Lock()
	defer m.groupsMu.Unlock()
	if m.groups[group] {
		return group, true
	}
	if len(m.groups) < MaxGroupLabels {
		m.groups[group] = true
		return group, true
	}
	return OtherLabel, false
}

// AdmitGroups gives groups their label values ahead of clients' (the groups
// of the pipeline's flows, at start-up), within MaxGroupLabels.
func (m *Metrics) AdmitGroups(groups ...string) {
	if m == nil {
		return
	}
	for _, g := range groups {
		m.group(g)
	}
}

// topic returns the label value of topic: a declared topic's name (the broker
// knows no others), or for a group's retry or dead-letter topic, its name if
// the group has a label value of its own, else OtherLabel.
func (m *Metrics) topic(topic string) string {
	if g, _, internal := sdk.InternalTopic(topic); internal {
		if _, own := m.group(g); !own {
			return OtherLabel
		}
	}
	return topic
}

// NewMetrics returns a node's metrics, with the Go runtime's and the
// process's own collectors registered beside them. constLabels (e.g.
// pipeline, node) are added to every Ferry metric; nil for none.
func NewMetrics(constLabels prometheus.Labels) *Metrics {
	m := &Metrics{
		reg:    prometheus.NewRegistry(),
		groups: map[string]bool{},
		appended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricAppendMessages, ConstLabels: constLabels,
			Help: "Messages appended to storage (acknowledged to producers), by topic.",
		}, []string{"topic"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricConsumeMessages, ConstLabels: constLabels,
			Help: "Messages whose processing succeeded and whose offset was committed, by topic and consumer group.",
		}, []string{"topic", "group"}),
		flush: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: MetricFlushSeconds, ConstLabels: constLabels, Buckets: flushBuckets,
			Help: "Time to make a batch of appends durable (storage flush/fsync).",
		}),
		appendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: MetricAppendSeconds, ConstLabels: constLabels, Buckets: flushBuckets,
			Help: "Time from a batch reaching the broker to its storage append being acknowledged.",
		}),
		replicationLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricReplicationLag, ConstLabels: constLabels,
			Help: "Messages the master holds that a replica does not have yet, by replica.",
		}, []string{"replica"}),
		consumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricConsumerLag, ConstLabels: constLabels,
			Help: "Messages stored but not yet committed by a consumer group, summed over the topic's queues.",
		}, []string{"topic", "group"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRetries, ConstLabels: constLabels,
			Help: "Failed deliveries scheduled for another attempt, by consumer group.",
		}, []string{"group"}),
		dlqDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: MetricDLQDepth, ConstLabels: constLabels,
			Help: "Messages in a consumer group's dead-letter queue.",
		}, []string{"group"}),
		pluginRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricPluginRestarts, ConstLabels: constLabels,
			Help: "Plugin processes restarted after they died or stopped answering, by plugin kind and type.",
		}, []string{"kind", "type"}),
		offsetReplFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricOffsetReplicationFailures, ConstLabels: constLabels,
			Help: "Consumer offset commits the replication plugin failed to take (retried; the commit itself succeeded), by consumer group.",
		}, []string{"group"}),
		corruptReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCorruptReads, ConstLabels: constLabels,
			Help: "Fetches of a queue answered CORRUPT: the stored record at the position is damaged (that queue alone is held up), by topic.",
		}, []string{"topic"}),
		storageFull: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricStorageFull, ConstLabels: constLabels,
			Help: "1 while the storage refuses appends because its disk is full (it retries by itself), else 0.",
		}),
		fetchesWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricFetchesWaiting, ConstLabels: constLabels,
			Help: "Consumers' long-poll fetches waiting at the broker for messages (they answer at once when the node begins to stop).",
		}),
	}
	m.reg.MustRegister(
		m.appended, m.consumed, m.flush, m.appendLatency, m.replicationLag, m.consumerLag,
		m.retries, m.dlqDepth, m.pluginRestarts, m.offsetReplFail, m.corruptReads, m.storageFull, m.fetchesWaiting,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry is the registry /metrics serves; a component with metrics of
// its own registers them here.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// FetchWaiting adds delta (1 or -1) to the long-poll fetches waiting.
// Called by the broker when a fetch begins and ends its wait.
func (m *Metrics) FetchWaiting(delta int) {
	if m == nil {
		return
	}
	m.fetchesWaiting.Add(float64(delta))
}

// Appended counts n messages appended to topic. Called by the broker once
// per acknowledged append batch and topic.
func (m *Metrics) Appended(topic string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.appended.WithLabelValues(m.topic(topic)).Add(float64(n))
}

// AppendLatency records how long an append batch took, from reaching the
// broker to storage's answer. Called by the broker once per batch.
func (m *Metrics) AppendLatency(d time.Duration) {
	if m == nil {
		return
	}
	m.appendLatency.Observe(d.Seconds())
}

// Consumed counts n messages of topic processed and committed by group.
// Called by the broker when a group commits, or by a flow after its
// handler succeeded.
func (m *Metrics) Consumed(topic, group string, n int) {
	if m == nil || n <= 0 {
		return
	}
	g, _ := m.group(group)
	m.consumed.WithLabelValues(m.topic(topic), g).Add(float64(n))
}

// Flushed records one flush (durability point) that took d. Called by the
// broker when storage reports a flush, once per flush.
func (m *Metrics) Flushed(d time.Duration) {
	if m == nil {
		return
	}
	m.flush.Observe(d.Seconds())
}

// SetReplicationLag sets how many messages replica is behind. Called by the
// replication stage whenever a replica acknowledges.
func (m *Metrics) SetReplicationLag(replica string, messages int64) {
	if m == nil {
		return
	}
	m.replicationLag.WithLabelValues(replica).Set(float64(messages))
}

// SetConsumerLag sets how many messages of topic group has yet to commit.
// Called by the broker on commits and periodically.
func (m *Metrics) SetConsumerLag(topic, group string, messages int64) {
	if m == nil {
		return
	}
	if g, own := m.group(group); own {
		m.consumerLag.WithLabelValues(m.topic(topic), g).Set(float64(messages))
	}
}

// Retried counts n deliveries of group scheduled for another attempt.
// Called by the retry stage.
func (m *Metrics) Retried(group string, n int) {
	if m == nil || n <= 0 {
		return
	}
	g, _ := m.group(group)
	m.retries.WithLabelValues(g).Add(float64(n))
}

// SetDLQDepth sets how many messages group's dead-letter queue holds.
// Called by the DLQ stage after it routes a message, and at start-up.
func (m *Metrics) SetDLQDepth(group string, messages int64) {
	if m == nil {
		return
	}
	if g, own := m.group(group); own {
		m.dlqDepth.WithLabelValues(g).Set(float64(messages))
	}
}

// PluginRestarted counts one restart of a plugin process. Called by the
// plugin host's supervisor after a restart succeeded.
func (m *Metrics) PluginRestarted(kind, typ string) {
	if m == nil {
		return
	}
	m.pluginRestarts.WithLabelValues(kind, typ).Inc()
}

// OffsetReplicationFailed counts one failed report of group's committed
// offsets to the replication plugin. Called by the broker's offset reporter.
func (m *Metrics) OffsetReplicationFailed(group string) {
	if m == nil {
		return
	}
	g, _ := m.group(group)
	m.offsetReplFail.WithLabelValues(g).Inc()
}

// CorruptRead counts a fetch of one queue of topic that found a damaged
// record at its position. Called by the broker's fetch, once per queue and
// fetch.
func (m *Metrics) CorruptRead(topic string) {
	if m == nil {
		return
	}
	m.corruptReads.WithLabelValues(topic).Inc()
}

// SetStorageFull records whether the storage refuses appends for a full
// disk. Called by the broker when that state begins and ends.
func (m *Metrics) SetStorageFull(full bool) {
	if m == nil {
		return
	}
	v := 0.0
	if full {
		v = 1
	}
	m.storageFull.Set(v)
}

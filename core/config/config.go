package config

import (
	"time"

	"github.com/ferrymq/ferry/core/security"
)

// Pipeline is one YAML pipeline file.
type Pipeline struct {
	Name       string           `koanf:"name"` // required; [a-z0-9][a-z0-9_-]* , max 64
	Node       Node             `koanf:"node"`
	Plugins    Plugins          `koanf:"plugins"`
	Topics     []Topic          `koanf:"topics"` // at least one
	Producer   ProducerDefaults `koanf:"producer"`
	Generators []Generator      `koanf:"generators"`
	Flows      []Flow           `koanf:"flows"`
	Tracing    Tracing          `koanf:"tracing"`
	Admin      Admin            `koanf:"admin"`
	// Security: users, their credentials and permissions on the client
	// transports (docs/security.md). No users: the node is open.
	Security security.Config `koanf:"security"`
	// KeepRunning keeps the node up after its generators are done and its
	// flows caught up (a summary is printed then), until SIGINT/SIGTERM:
	// for inspecting the result, e.g. with ferry dlq. Default false: such
	// a pipeline exits once everything is consumed.
	KeepRunning bool   `koanf:"keep_running"`
	File        string `koanf:"-"` // path loaded from

	// src maps key paths to lines and environment variables; set by Load.
	src *source
}

// Node is the broker node this pipeline runs as.
type Node struct {
	ID              string        `koanf:"id"`               // default "node-1"; same name rule as Pipeline.Name
	DataDir         string        `koanf:"data_dir"`         // default "data/<pipeline name>" (relative paths are relative to the cwd)
	Role            string        `koanf:"role"`             // "standalone" (default); also "master", "slave" (replication)
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"` // default 10s, > 0
	// EphemeralGroupTTL: an ephemeral consumer group is deleted once its
	// last member has been gone this long (default 30s, > 0).
	EphemeralGroupTTL time.Duration `koanf:"ephemeral_group_ttl"`
	// AutoCreateTopics creates a topic the node does not have when a
	// producer sends to it (docs/admin.md). Default off.
	AutoCreateTopics AutoCreateTopics `koanf:"auto_create_topics"`
}

// AutoCreateTopics is node.auto_create_topics.
type AutoCreateTopics struct {
	Enabled bool `koanf:"enabled"` // default false
	Queues  int  `koanf:"queues"`  // queues of each topic created; default 4, 1..1024
}

// Plugins names the plugins of a pipeline and where external ones are found.
type Plugins struct {
	Mode        string    `koanf:"mode"`          // "subprocess" (default) | "inprocess"
	DataPlane   string    `koanf:"data_plane"`    // "ring" (default: shared-memory rings to plugins that speak them) | "grpc"
	RingSizeKiB int       `koanf:"ring_size_kib"` // each ring's size (two per plugin process); 0: 4096; a power of two, 64..1048576
	Dirs        []string  `koanf:"dirs"`          // directories searched for external plugins ferry-<kind>-<type>
	Storage     PluginRef `koanf:"storage"`       // default type "memory"
	Transport   PluginRef `koanf:"transport"`     // default type "grpc"
	Replication PluginRef `koanf:"replication"`   // default type "none"
}

// PluginRef selects a plugin by type and holds its config section.
type PluginRef struct {
	Type   string         `koanf:"type"`
	Config map[string]any `koanf:"config"` // free-form; validated by the plugin itself (see PluginValidator)
}

// Topic is a named stream of messages split into queues.
type Topic struct {
	Name   string `koanf:"name"`   // required, unique, name rule
	Queues int    `koanf:"queues"` // default 4, 1..1024
	// The topic's own settings (docs/admin.md, "Per-topic settings"); 0
	// is unset: the store's retention and the broker's limit apply.
	RetentionBytes  int64         `koanf:"retention_bytes"`   // per queue, >= 0
	RetentionAge    time.Duration `koanf:"retention_age"`     // >= 0
	MaxMessageBytes int           `koanf:"max_message_bytes"` // 0..4194304
}

// ProducerDefaults apply to every producer of the pipeline unless it says otherwise.
type ProducerDefaults struct {
	Mode    string        `koanf:"mode"`    // sync (default) | async | oneway
	Retries int           `koanf:"retries"` // default 2, 0..100
	Timeout time.Duration `koanf:"timeout"` // default 3s, > 0
	// RequireDurable makes an ack weaker than OK (FLUSH_TIMEOUT,
	// REPLICA_TIMEOUT, REPLICA_NOT_AVAILABLE) an error. Default false: the
	// status is reported as it is.
	RequireDurable bool `koanf:"require_durable"`
	// RetryOnTimeout retries a send that timed out (its outcome is
	// unknown; the broker's de-duplication makes the retry safe).
	RetryOnTimeout bool `koanf:"retry_on_timeout"`
	// Linger is how long an async batch waits for more messages; default
	// 5ms, 0..10s.
	Linger time.Duration `koanf:"linger"`
	// MaxInflight is the async window in messages; default 256, 1..1000000.
	MaxInflight int `koanf:"max_inflight"`
}

// Generator produces Count messages to Topic when the pipeline starts (a demo/load source).
type Generator struct {
	Name  string  `koanf:"name"`  // required, unique among generators, name rule
	Topic string  `koanf:"topic"` // must name a declared topic
	Count int     `koanf:"count"` // >= 1, required
	Size  int     `koanf:"size"`  // body bytes, default 256, 1..4194304
	Rate  float64 `koanf:"rate"`  // msgs/s, 0 (default) = as fast as possible; >= 0
	Mode  string  `koanf:"mode"`  // "" = producer.mode; else sync|async|oneway
}

// Flow is a consumer group on a topic feeding a sink through a stage chain.
type Flow struct {
	Name     string `koanf:"name"`     // required, unique among flows, name rule
	Topic    string `koanf:"topic"`    // must name a declared topic; flows sharing a group share its topic
	Group    string `koanf:"group"`    // default = Name; name rule
	Delivery string `koanf:"delivery"` // push (default) | pull
	// Orderly keeps each queue's order: one message of a queue at a time,
	// failures retried in place (push only). Default false: concurrent.
	Orderly bool `koanf:"orderly"`
	// OnCorrupt is what the group does with a message whose stored record
	// is damaged: stop (default; that queue stops there, the others go
	// on), skip (move past it, logged and counted), dlq (skip after
	// storing a placeholder in the group's dead-letter queue).
	OnCorrupt string `koanf:"on_corrupt"`
	// Concurrency is how many messages are processed at once (default 1,
	// 1..1024).
	Concurrency int `koanf:"concurrency"`
	// MaxInflight bounds the messages fetched and not yet settled (flow
	// control; default 1024, 1..1000000).
	MaxInflight int     `koanf:"max_inflight"`
	Stages      []Stage `koanf:"stages"` // optional; see core/stage (default: ack, dlq, retry)
	Sink        Sink    `koanf:"sink"`
}

// Stage is one step of a flow's stage chain: a type registered in core/stage
// and its config section, which the stage checks.
type Stage struct {
	Type   string         `koanf:"type"`
	Config map[string]any `koanf:"config"`
}

// Sink is where a flow's messages end. Which keys apply depends on the type.
type Sink struct {
	// Type is required: count | stdout | discard | file | exec | webhook.
	Type string `koanf:"type"`
	// Every (count): print progress every N messages; 0 = only the
	// summary; >= 0.
	Every int `koanf:"every"`
	// Format (stdout, file): how each message is written: line (one line
	// of metadata; stdout's default), json (one object per line with the
	// body as a string; file's default) or body (the body and a newline).
	Format string `koanf:"format"`
	// Path (file, required): the file messages are appended to (created
	// if missing).
	Path string `koanf:"path"`
	// Command and Args (exec; command required): run once per message
	// with the body on stdin and the message's metadata in FERRY_*
	// environment variables; exit status 0 acknowledges, anything else
	// fails the attempt (retried).
	Command string   `koanf:"command"`
	Args    []string `koanf:"args"`
	// URL (webhook, required): http:// or https:// URL each message's
	// body is POSTed to; 2xx acknowledges, 429 and 5xx are retried, any
	// other status fails for good (dead-lettered).
	URL string `koanf:"url"`
	// Headers (webhook): extra HTTP headers of every request.
	Headers map[string]string `koanf:"headers"`
	// Timeout (exec, webhook): bounds one attempt (default 30s for exec,
	// 10s for webhook); > 0.
	Timeout time.Duration `koanf:"timeout"`
}

// Tracing configures the OpenTelemetry exporter.
type Tracing struct {
	Exporter    string  `koanf:"exporter"`     // none (default) | stdout | otlp
	Endpoint    string  `koanf:"endpoint"`     // required for otlp (host:port)
	SampleRatio float64 `koanf:"sample_ratio"` // default 1.0, 0..1
	ServiceName string  `koanf:"service_name"` // default "ferry-<node id>"
	// DebugPlumbing also traces the plugin plumbing (Configure, health,
	// stdio, offset lookups); default false.
	DebugPlumbing bool `koanf:"debug_plumbing"`
}

// Admin is the node's admin HTTP listener: Prometheus /metrics, /healthz,
// /readyz and, with pprof, /debug/pprof/.
type Admin struct {
	Listen string `koanf:"listen"` // host:port; empty (default) = no admin listener
	// Pprof serves Go's profiler on /debug/pprof/; default false.
	Pprof bool `koanf:"pprof"`
	// TLS serves the listener over HTTPS (cert_file, key_file,
	// client_ca_file; see core/security).
	TLS security.TLS `koanf:"tls"`
	// Open lists the endpoints served without authentication on a node
	// with users (metrics, healthz, readyz); default none: every request
	// needs a user with Get on Cluster, and pprof a super user.
	Open []string `koanf:"open"`
}

// Allowed values of the enumerated keys, in the order problems list them.
var (
	nodeRoles       = []string{"standalone", "master", "slave"}
	pluginModes     = []string{"subprocess", "inprocess"}
	dataPlanes      = []string{"ring", "grpc"}
	producerModes   = []string{"sync", "async", "oneway"}
	deliveryModes   = []string{"push", "pull"}
	corruptPolicies = []string{"stop", "skip", "dlq"}
	sinkTypes       = []string{"count", "stdout", "discard", "file", "exec", "webhook"}
	sinkFormats     = []string{"line", "json", "body"}
	tracingExporter = []string{"none", "stdout", "otlp"}
	adminOpen       = []string{"metrics", "healthz", "readyz"}
)

// Limits of the numeric keys.
const (
	maxNameLen   = 64
	maxQueues    = 1024
	maxRetries   = 100
	maxBodyBytes = 4 << 20

	maxConcurrency = 1024
	maxInflight    = 1000000
)

// Default returns a pipeline with every default that does not depend on other
// keys. Load starts from it and overlays the file, so a key that is missing
// (or null) keeps its default while a key that is written keeps its value,
// however wrong. Defaults derived from other keys are filled in by Load:
// node.data_dir = "data/<name>", tracing.service_name = "ferry-<node.id>",
// and each flow's group = its name; list elements get defaultTopic,
// defaultGenerator and defaultFlow.
func Default() Pipeline {
	return Pipeline{
		Node: Node{
			ID:                "node-1",
			Role:              "standalone",
			ShutdownTimeout:   10 * time.Second,
			EphemeralGroupTTL: 30 * time.Second,
			AutoCreateTopics:  AutoCreateTopics{Queues: 4},
		},
		Plugins: Plugins{
			Mode:        "subprocess",
			DataPlane:   "ring",
			Storage:     PluginRef{Type: "memory"},
			Transport:   PluginRef{Type: "grpc"},
			Replication: PluginRef{Type: "none"},
		},
		Producer: ProducerDefaults{
			Mode:        "sync",
			Retries:     2,
			Timeout:     3 * time.Second,
			Linger:      5 * time.Millisecond,
			MaxInflight: 256,
		},
		Tracing: Tracing{
			Exporter:    "none",
			SampleRatio: 1.0,
		},
	}
}

func defaultTopic() Topic         { return Topic{Queues: 4} }
func defaultGenerator() Generator { return Generator{Size: 256} }
func defaultFlow() Flow           { return Flow{Delivery: "push", Concurrency: 1, MaxInflight: 1024} }

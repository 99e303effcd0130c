package config

import "time"

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
	File       string           `koanf:"-"` // path loaded from

	// src maps key paths to lines and environment variables; set by Load.
	src *source
}

// Node is the broker node this pipeline runs as.
type Node struct {
	ID              string        `koanf:"id"`               // default "node-1"; same name rule as Pipeline.Name
	DataDir         string        `koanf:"data_dir"`         // default "data/<pipeline name>" (relative paths are relative to the cwd)
	Role            string        `koanf:"role"`             // "standalone" (default); also "master", "slave" (replication)
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"` // default 10s, > 0
}

// Plugins names the plugins of a pipeline and where external ones are found.
type Plugins struct {
	Mode        string    `koanf:"mode"`        // "subprocess" (default) | "inprocess"
	Dirs        []string  `koanf:"dirs"`        // directories searched for external plugins ferry-<kind>-<type>
	Storage     PluginRef `koanf:"storage"`     // default type "memory"
	Transport   PluginRef `koanf:"transport"`   // default type "grpc"
	Replication PluginRef `koanf:"replication"` // default type "none"
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
}

// ProducerDefaults apply to every producer of the pipeline unless it says otherwise.
type ProducerDefaults struct {
	Mode    string        `koanf:"mode"`    // sync (default) | async | oneway
	Retries int           `koanf:"retries"` // default 2, 0..100
	Timeout time.Duration `koanf:"timeout"` // default 3s, > 0
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

// Flow is a consumer group on a topic feeding a sink.
type Flow struct {
	Name     string  `koanf:"name"`     // required, unique among flows, name rule
	Topic    string  `koanf:"topic"`    // must name a declared topic
	Group    string  `koanf:"group"`    // default = Name; name rule
	Delivery string  `koanf:"delivery"` // push (default) | pull
	Stages   []Stage `koanf:"stages"`   // optional; types: ack, retry, dlq
	Sink     Sink    `koanf:"sink"`
}

// Stage is one step of a flow's stage chain.
type Stage struct {
	Type   string         `koanf:"type"`
	Config map[string]any `koanf:"config"`
}

// Sink is where a flow's messages end.
type Sink struct {
	Type  string `koanf:"type"`  // required: "count" | "stdout" | "discard"
	Every int    `koanf:"every"` // for count: print progress every N messages; 0 = only the summary; >= 0
}

// Tracing configures the OpenTelemetry exporter.
type Tracing struct {
	Exporter    string  `koanf:"exporter"`     // none (default) | stdout | otlp
	Endpoint    string  `koanf:"endpoint"`     // required for otlp (host:port)
	SampleRatio float64 `koanf:"sample_ratio"` // default 1.0, 0..1
	ServiceName string  `koanf:"service_name"` // default "ferry-<node id>"
}

// Allowed values of the enumerated keys, in the order problems list them.
var (
	nodeRoles       = []string{"standalone", "master", "slave"}
	pluginModes     = []string{"subprocess", "inprocess"}
	producerModes   = []string{"sync", "async", "oneway"}
	deliveryModes   = []string{"push", "pull"}
	stageTypes      = []string{"ack", "retry", "dlq"}
	sinkTypes       = []string{"count", "stdout", "discard"}
	tracingExporter = []string{"none", "stdout", "otlp"}
)

// Limits of the numeric keys.
const (
	maxNameLen   = 64
	maxQueues    = 1024
	maxRetries   = 100
	maxBodyBytes = 4 << 20
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
			ID:              "node-1",
			Role:            "standalone",
			ShutdownTimeout: 10 * time.Second,
		},
		Plugins: Plugins{
			Mode:        "subprocess",
			Storage:     PluginRef{Type: "memory"},
			Transport:   PluginRef{Type: "grpc"},
			Replication: PluginRef{Type: "none"},
		},
		Producer: ProducerDefaults{
			Mode:    "sync",
			Retries: 2,
			Timeout: 3 * time.Second,
		},
		Tracing: Tracing{
			Exporter:    "none",
			SampleRatio: 1.0,
		},
	}
}

func defaultTopic() Topic         { return Topic{Queues: 4} }
func defaultGenerator() Generator { return Generator{Size: 256} }
func defaultFlow() Flow           { return Flow{Delivery: "push"} }

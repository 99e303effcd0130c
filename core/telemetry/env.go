package telemetry

import (
	"context"
	"fmt"
	"os"
	"strconv"
)

// Environment variables through which a host passes its tracing settings to
// its plugin processes. They are not pipeline keys (those use "__" between
// levels), so the config loader ignores them.
const (
	EnvExporter    = "FERRY_TRACING_EXPORTER"
	EnvEndpoint    = "FERRY_TRACING_ENDPOINT"
	EnvSampleRatio = "FERRY_TRACING_SAMPLE_RATIO"
	EnvServiceName = "FERRY_TRACING_SERVICE_NAME"
	// EnvDebugPlumbing is "true" when the plumbing's calls get spans too.
	EnvDebugPlumbing = "FERRY_TRACING_DEBUG_PLUMBING"
	// EnvPlugin names the plugin a process serves ("storage/file"); it
	// becomes the resource attribute "plugin" of the process's spans.
	EnvPlugin = "FERRY_TRACING_PLUGIN"
)

// EnvFor returns the environment a plugin process needs to trace like its
// host, as "KEY=value" entries to append to the plugin command's
// environment (later entries win over inherited ones). plugin is
// "<kind>/<type>". Called by the plugin host for every process it starts.
func EnvFor(cfg Tracing, plugin string) []string {
	exporter := cfg.Exporter
	if exporter == "" {
		exporter = ExporterNone
	}
	return []string{
		EnvExporter + "=" + exporter,
		EnvEndpoint + "=" + cfg.Endpoint,
		EnvSampleRatio + "=" + strconv.FormatFloat(cfg.SampleRatio, 'g', -1, 64),
		EnvServiceName + "=" + cfg.ServiceName,
		EnvPlugin + "=" + plugin,
		EnvDebugPlumbing + "=" + strconv.FormatBool(cfg.DebugPlumbing),
	}
}

// FromEnv reads the settings EnvFor wrote. Without them tracing is off.
func FromEnv() (Tracing, string, error) {
	cfg := Tracing{
		Exporter:    os.Getenv(EnvExporter),
		Endpoint:    os.Getenv(EnvEndpoint),
		ServiceName: os.Getenv(EnvServiceName),
		SampleRatio: 1,
	}
	if s := os.Getenv(EnvDebugPlumbing); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return Tracing{}, "", fmt.Errorf("%s=%q: not true or false", EnvDebugPlumbing, s)
		}
		cfg.DebugPlumbing = b
	}
	if s := os.Getenv(EnvSampleRatio); s != "" {
		r, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return Tracing{}, "", fmt.Errorf("%s=%q: not a number", EnvSampleRatio, s)
		}
		cfg.SampleRatio = r
	}
	return cfg, os.Getenv(EnvPlugin), nil
}

// SetupFromEnv is Setup for a plugin process, with the settings its host
// passed through EnvFor. Called once by sdk.Serve before it serves; the
// returned shutdown is called after the plugin is closed, so that its last
// spans are exported.
func SetupFromEnv(ctx context.Context) (shutdown func(context.Context) error, err error) {
	cfg, plugin, err := FromEnv()
	if err != nil {
		return nil, err
	}
	if plugin == "" {
		return Setup(ctx, cfg)
	}
	return Setup(ctx, cfg, AttrPlugin.String(plugin))
}

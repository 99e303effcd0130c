package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/telemetry"
)

func init() { rootCmd.AddCommand(newTraceCmd()) }

// defaultJaegerQuery is Jaeger's query API where scripts/jaeger.sh and
// Jaeger's own binary and image serve it.
const defaultJaegerQuery = "http://127.0.0.1:16686"

func newTraceCmd() *cobra.Command {
	var query, service string
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "trace MESSAGE-ID",
		Short: "Print a message's trace from Jaeger as a tree of its hops",
		Long: `Finds the traces whose spans carry the message's id (span attribute
messaging.message.id) in Jaeger's query API and prints each as a tree:
span name, process (the plugin, or the node), duration and attributes.`,
		Example: "  ferry trace p1f2e3d4c5b6a7980-42 --service ferry-node-1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if service == "" {
				return fmt.Errorf("--service is required: the pipeline's tracing.service_name (default ferry-<node id>, e.g. ferry-node-1)")
			}
			if query == "" {
				query = os.Getenv("FERRY_JAEGER_QUERY")
			}
			if query == "" {
				query = defaultJaegerQuery
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			traces, err := findTraces(ctx, strings.TrimRight(query, "/"), service, args[0], since)
			if err != nil {
				return err
			}
			if len(traces) == 0 {
				return fmt.Errorf("no trace of message %q in service %q at %s in the last %v (is it sampled? spans show some seconds after the hop)", args[0], service, query, since)
			}
			for _, t := range traces {
				printTrace(cmd.OutOrStdout(), t)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&query, "query", "", "Jaeger's query API (default: $FERRY_JAEGER_QUERY, else "+defaultJaegerQuery+")")
	cmd.Flags().StringVar(&service, "service", "", "the node's tracing.service_name (required)")
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "how far back to search")
	return cmd
}

// jTrace, jSpan and jProcess are what the command reads of Jaeger's
// /api/traces answer.
type jTrace struct {
	TraceID   string              `json:"traceID"`
	Spans     []jSpan             `json:"spans"`
	Processes map[string]jProcess `json:"processes"`
}

type jSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64  `json:"startTime"`
	Duration  int64  `json:"duration"`
	Tags      []jTag `json:"tags"`
	ProcessID string `json:"processID"`
}

type jTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type jProcess struct {
	ServiceName string `json:"serviceName"`
	Tags        []jTag `json:"tags"`
}

// findTraces asks Jaeger for the traces of service with a span tagged with
// the message's id.
func findTraces(ctx context.Context, query, service, id string, since time.Duration) ([]jTrace, error) {
	tags, _ := json.Marshal(map[string]string{string(telemetry.AttrMessageID): id})
	now := time.Now()
	v := url.Values{
		"service": {service},
		"tags":    {string(tags)},
		"start":   {fmt.Sprint(now.Add(-since).UnixMicro())},
		"end":     {fmt.Sprint(now.UnixMicro())},
		"limit":   {"20"},
	}
	u := query + "/api/traces?" + v.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Jaeger query API: %w (start Jaeger or pass --query)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.300s", u, resp.Status, body)
	}
	var out struct {
		Data []jTrace `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("GET %s: not Jaeger's answer: %v", u, err)
	}
	return out.Data, nil
}

// printTrace prints t's spans as a tree, children in start order.
func printTrace(w io.Writer, t jTrace) {
	fmt.Fprintf(w, "trace %s (%d spans)\n", t.TraceID, len(t.Spans))
	byID := map[string]*jSpan{}
	for i := range t.Spans {
		byID[t.Spans[i].SpanID] = &t.Spans[i]
	}
	children := map[string][]*jSpan{}
	var roots []*jSpan
	for i := range t.Spans {
		s := &t.Spans[i]
		p := ""
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				p = r.SpanID
			}
		}
		if byID[p] != nil {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(ss []*jSpan) {
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].StartTime < ss[j].StartTime })
	}
	byStart(roots)
	var walk func(s *jSpan, prefix string, last, root bool)
	walk = func(s *jSpan, prefix string, last, root bool) {
		branch, next := "├─ ", "│  "
		if last {
			branch, next = "└─ ", "   "
		}
		if root {
			branch, next = "", ""
		}
		fmt.Fprintf(w, "%s%s%s  [%s]  %v%s\n", prefix, branch, s.OperationName, processName(t.Processes[s.ProcessID]),
			time.Duration(s.Duration)*time.Microsecond, spanAttrs(s.Tags))
		kids := children[s.SpanID]
		byStart(kids)
		for i, c := range kids {
			walk(c, prefix+next, i == len(kids)-1, false)
		}
	}
	for _, r := range roots {
		walk(r, "", true, true)
	}
}

// processName is the plugin a span's process serves, or its service for
// the node.
func processName(p jProcess) string {
	for _, t := range p.Tags {
		if t.Key == string(telemetry.AttrPlugin) {
			return fmt.Sprint(t.Value)
		}
	}
	return p.ServiceName
}

// spanAttrs are the span's Ferry and messaging attributes, short.
func spanAttrs(tags []jTag) string {
	var b strings.Builder
	for _, t := range tags {
		k := t.Key
		switch {
		case k == string(telemetry.AttrSystem):
			continue
		case strings.HasPrefix(k, "ferry."):
			k = strings.TrimPrefix(k, "ferry.")
		case strings.HasPrefix(k, "messaging."):
		case k == "error":
		default:
			continue
		}
		fmt.Fprintf(&b, " %s=%v", k, t.Value)
	}
	return b.String()
}

// Command ferry-stage-example is a stage plugin written out of tree, as a
// third party would: its own Go module that depends on Ferry's SDK only. It
// decides each message's fate by its "x-stage" header:
//
//	(none) or "pass"  pass it on; with config {upper: true} the ASCII letters of its body upper-cased
//	"retry"           retry it after retry_delay_ms (config, default 100)
//	"dlq"             dead-letter it with reason "x-stage asked for it"
//	"drop"            drop it (acknowledged, not passed on)
//	"hold"            answer only when the host gives up (for crash tests)
//
// and, for the host's negative controls, config {lie: extra} answers also
// for a delivery it was not given, {lie: fewer} leaves the last one out.
// Build it as ferry-stage-example into a directory of plugins.dirs, or test
// it:
//
//	go build -o ferry-stage-example . && ferry plugin test stage ./ferry-stage-example
package main

import (
	"context"
	"fmt"

	"github.com/ferrymq/ferry/core/sdk"
)

// Config is the plugin's config section.
type Config struct {
	Upper        bool   `json:"upper"`
	RetryDelayMS int64  `json:"retry_delay_ms"`
	Lie          string `json:"lie"`
}

type stage struct{ cfg Config }

func (s *stage) Validate(config []byte) sdk.Problems {
	c := Config{RetryDelayMS: 100}
	ps := sdk.DecodeConfig(config, &c)
	if c.RetryDelayMS < 0 {
		ps = append(ps, sdk.Problem{Path: "retry_delay_ms", Message: fmt.Sprintf("must be 0 or more, got %d", c.RetryDelayMS)})
	}
	if c.Lie != "" && c.Lie != "extra" && c.Lie != "fewer" {
		ps = append(ps, sdk.Problem{Path: "lie", Message: fmt.Sprintf("must be extra or fewer, got %q", c.Lie)})
	}
	return ps
}

func (s *stage) Configure(_ context.Context, config []byte, _ *sdk.Environment) error {
	s.cfg = Config{RetryDelayMS: 100}
	if ps := sdk.DecodeConfig(config, &s.cfg); len(ps) > 0 {
		return ps
	}
	return nil
}

func (s *stage) Close() error { return nil }

func (s *stage) Process(ctx context.Context, req *sdk.ProcessRequest) (*sdk.ProcessResponse, error) {
	resp := &sdk.ProcessResponse{}
	var maxID uint64
	for _, d := range req.Deliveries {
		maxID = max(maxID, d.Id)
		m := d.GetMessage()
		switch m.GetHeaders()["x-stage"] {
		case "", "pass":
			var out *sdk.Message
			if s.cfg.Upper {
				out = &sdk.Message{Key: m.GetKey(), Headers: m.GetHeaders(), Body: upperASCII(m.GetBody())}
			}
			resp.Verdicts = append(resp.Verdicts, sdk.PassVerdict(d.Id, out))
		case "retry":
			resp.Verdicts = append(resp.Verdicts, sdk.RetryVerdict(d.Id, s.cfg.RetryDelayMS, "x-stage asked for it"))
		case "dlq":
			resp.Verdicts = append(resp.Verdicts, sdk.DeadLetterVerdict(d.Id, "x-stage asked for it"))
		case "drop":
			resp.Verdicts = append(resp.Verdicts, sdk.DropVerdict(d.Id))
		case "hold":
			<-ctx.Done()
			return nil, ctx.Err()
		default:
			return nil, fmt.Errorf("delivery %d: unknown x-stage header %q (pass, retry, dlq, drop or hold)", d.Id, m.GetHeaders()["x-stage"])
		}
	}
	switch s.cfg.Lie {
	case "extra":
		resp.Verdicts = append(resp.Verdicts, sdk.DropVerdict(maxID+1000))
	case "fewer":
		if n := len(resp.Verdicts); n > 0 {
			resp.Verdicts = resp.Verdicts[:n-1]
		}
	}
	return resp, nil
}

// upperASCII upper-cases the ASCII letters of b and keeps every other byte.
func upperASCII(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

func main() { sdk.Serve(sdk.ServeOpts{Stage: &stage{}}) }

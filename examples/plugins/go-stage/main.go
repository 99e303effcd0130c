// Command ferry-stage-example is a stage plugin written out of tree, as a
// third party would: its own Go module that depends on Ferry's SDK only. It
// decides each message's fate by its "x-stage" header:
//
//	(none) or "pass"  pass it on; with config {upper: true} the ASCII letters of its body upper-cased
//	"retry"           retry it after retry_delay_ms (config, default 100)
//	"dlq"             dead-letter it with reason "x-stage asked for it"
//	"drop"            drop it (acknowledged, not passed on)
//	"hold"            answer only when the host gives up (for crash tests)
//	"sleep"           sleep an hour, deaf to the host's deadline, while
//	                  other calls are answered (a slow message)
//	"freeze"          never answer this call nor any later one, empty
//	                  batches included (a hung plugin)
//
// and, for the host's negative controls, config {lie: extra} answers also
// for a delivery it was not given, {lie: fewer} leaves the last one out.
// With {tag_batch: true} a passed message gets the header x-stage-batch:
// the number of deliveries of the call it came in.
// Build it as ferry-stage-example into a directory of plugins.dirs, or test
// it:
//
//	go build -o ferry-stage-example . && ferry plugin test stage ./ferry-stage-example
package main

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// Config is the plugin's config section.
type Config struct {
	Upper        bool   `json:"upper"`
	RetryDelayMS int64  `json:"retry_delay_ms"`
	Lie          string `json:"lie"`
	TagBatch     bool   `json:"tag_batch"`
}

type stage struct {
	cfg    Config
	frozen sync.RWMutex // write-locked for ever by a "freeze" delivery
}

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
	for _, d := range req.Deliveries {
		if d.GetMessage().GetHeaders()["x-stage"] == "freeze" {
			s.frozen.Lock() // and never unlock: every later call waits
			select {}
		}
	}
	s.frozen.RLock()
	defer s.frozen.RUnlock()
	resp := &sdk.ProcessResponse{}
	var maxID uint64
	for _, d := range req.Deliveries {
		maxID = max(maxID, d.Id)
		m := d.GetMessage()
		switch m.GetHeaders()["x-stage"] {
		case "", "pass":
			var out *sdk.Message
			if s.cfg.Upper || s.cfg.TagBatch {
				out = &sdk.Message{Key: m.GetKey(), Headers: m.GetHeaders(), Body: m.GetBody()}
			}
			if s.cfg.Upper {
				out.Body = upperASCII(m.GetBody())
			}
			if s.cfg.TagBatch {
				out.Headers = maps.Clone(m.GetHeaders())
				if out.Headers == nil {
					out.Headers = map[string]string{}
				}
				out.Headers["x-stage-batch"] = strconv.Itoa(len(req.Deliveries))
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
		case "sleep":
			time.Sleep(time.Hour)
		default:
			return nil, fmt.Errorf("delivery %d: unknown x-stage header %q (pass, retry, dlq, drop, hold, sleep or freeze)", d.Id, m.GetHeaders()["x-stage"])
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

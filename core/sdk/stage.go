package sdk

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// KindStage is the plugin kind of external consumer-side stages (see
// core/stage): a flow's stage chain names one as {type: plugin, config:
// {plugin: TYPE}} and the host runs ferry-stage-TYPE as its own process.
const KindStage = "stage"

// Types of the stage contract (core/proto/ferry/v1/stage.proto).
type (
	StageDelivery   = ferryv1.StageDelivery
	ProcessRequest  = ferryv1.ProcessRequest
	ProcessResponse = ferryv1.ProcessResponse
	Verdict         = ferryv1.Verdict
)

// Stage is a stage plugin: it sees batches of deliveries and answers one
// verdict per delivery (PassVerdict, RetryVerdict, DeadLetterVerdict,
// DropVerdict), naming each by its StageDelivery.Id. Process is called from
// many goroutines at once. An error fails the whole batch: every message of
// it is delivered again later.
type Stage interface {
	Plugin
	Process(ctx context.Context, req *ProcessRequest) (*ProcessResponse, error)
}

// PassVerdict passes delivery id on; a non-nil m replaces its key, headers
// and body.
func PassVerdict(id uint64, m *Message) *Verdict {
	return &Verdict{Id: id, Action: &ferryv1.Verdict_Pass{Pass: &ferryv1.Pass{Message: m}}}
}

// RetryVerdict asks for another attempt after delayMS milliseconds (0: the
// flow's retry policy).
func RetryVerdict(id uint64, delayMS int64, reason string) *Verdict {
	return &Verdict{Id: id, Action: &ferryv1.Verdict_Retry{Retry: &ferryv1.Retry{DelayMs: delayMS, Reason: reason}}}
}

// DeadLetterVerdict sends delivery id to the dead-letter queue with reason.
func DeadLetterVerdict(id uint64, reason string) *Verdict {
	return &Verdict{Id: id, Action: &ferryv1.Verdict_DeadLetter{DeadLetter: &ferryv1.DeadLetter{Reason: reason}}}
}

// DropVerdict acknowledges delivery id without passing it on.
func DropVerdict(id uint64) *Verdict {
	return &Verdict{Id: id, Action: &ferryv1.Verdict_Drop{Drop: &ferryv1.Drop{}}}
}

// CheckVerdicts checks that resp answers req exactly: one verdict with an
// action per delivery, no verdict for an id that was not sent, none twice.
// It returns the verdicts by id.
func CheckVerdicts(req *ProcessRequest, resp *ProcessResponse) (map[uint64]*Verdict, error) {
	sent := make(map[uint64]bool, len(req.GetDeliveries()))
	for _, d := range req.GetDeliveries() {
		sent[d.GetId()] = true
	}
	got := make(map[uint64]*Verdict, len(sent))
	for _, v := range resp.GetVerdicts() {
		switch {
		case !sent[v.GetId()]:
			return nil, fmt.Errorf("stage plugin answered for delivery %d, which it was not given", v.GetId())
		case got[v.GetId()] != nil:
			return nil, fmt.Errorf("stage plugin answered twice for delivery %d", v.GetId())
		case v.GetAction() == nil:
			return nil, fmt.Errorf("stage plugin's verdict for delivery %d has no action (pass, retry, dead_letter or drop)", v.GetId())
		}
		got[v.GetId()] = v
	}
	if len(got) != len(sent) {
		for _, d := range req.GetDeliveries() {
			if got[d.GetId()] == nil {
				return nil, fmt.Errorf("stage plugin answered %d of %d deliveries: none for delivery %d", len(got), len(sent), d.GetId())
			}
		}
	}
	return got, nil
}

type stageServer struct {
	ferryv1.UnimplementedStageServer
	impl Stage
}

func (s *stageServer) Process(ctx context.Context, req *ProcessRequest) (*ProcessResponse, error) {
	return s.impl.Process(ctx, req)
}

// StageClient is the host's side of a stage plugin.
type StageClient struct {
	pluginClient
	rpc ferryv1.StageClient
}

// NewStageClient returns a host-side client of the stage plugin at cc.
func NewStageClient(cc grpc.ClientConnInterface) *StageClient {
	return &StageClient{pluginClient: newPluginClient(cc), rpc: ferryv1.NewStageClient(cc)}
}

// Process sends one batch. It does not check the answer; see CheckVerdicts.
func (c *StageClient) Process(ctx context.Context, req *ProcessRequest) (*ProcessResponse, error) {
	return c.rpc.Process(ctx, req)
}

// Close releases nothing: the connection belongs to go-plugin.
func (c *StageClient) Close() error { return nil }

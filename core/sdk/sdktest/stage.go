package sdktest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ferrymq/ferry/core/sdk"
)

// The stage suite checks a stage plugin against the contract of
// core/proto/ferry/v1/stage.proto that holds whatever the stage decides:
// one verdict with an action per delivery, naming it by the id the host
// chose (any uint64, not a position), for batches of one, of many and of
// none, and for many batches at once; and a config that is not a mapping
// is a problem. What verdict a stage gives is its own business.

// StageFeatures say how to run the suite against a stage plugin.
type StageFeatures struct {
	// Config is the config section (JSON) the plugin is started with.
	Config []byte
}

// StageHarness starts stage plugins for the cases.
type StageHarness interface {
	Features() StageFeatures
	// Open starts a stage configured with config; stop stops it.
	Open(config []byte) (st sdk.Stage, stop func(), err error)
	Validate(config []byte) (sdk.Problems, error)
}

// StageCase is one case of the stage suite.
type StageCase struct {
	Name string
	Run  func(h StageHarness) error
}

// StageCases returns the stage suite's cases.
func StageCases() []StageCase {
	return []StageCase{
		{"StageOneDelivery", func(h StageHarness) error { return stageBatches(h, 1, 1) }},
		{"StageBatch", func(h StageHarness) error { return stageBatches(h, 1, 64) }},
		{"StageEmptyBatch", func(h StageHarness) error { return stageBatches(h, 1, 0) }},
		{"StageConcurrentBatches", func(h StageHarness) error { return stageBatches(h, 8, 16) }},
		{"StageBadConfig", stageBadConfig},
	}
}

// RunStageCase runs c against h.
func RunStageCase(c StageCase, h StageHarness) error { return c.Run(h) }

func stageBatch(batch, n int) *sdk.ProcessRequest {
	req := &sdk.ProcessRequest{}
	for i := range n {
		// Ids far apart and not in order: a plugin must echo them.
		id := uint64(batch)<<40 | uint64(n-i)*7919 + 1<<33
		req.Deliveries = append(req.Deliveries, &sdk.StageDelivery{Id: id, Attempt: 1, Group: "sdktest",
			Message: &sdk.Message{Id: fmt.Sprintf("sdktest-%d-%d", batch, i), Topic: "sdktest", Key: fmt.Sprintf("k%d", i),
				Headers: map[string]string{"sdktest": "1"}, Body: []byte(fmt.Sprintf("body %d of batch %d", i, batch))}})
	}
	return req
}

// stageBatches sends batches of n deliveries from workers goroutines at
// once and checks every answer with sdk.CheckVerdicts.
func stageBatches(h StageHarness, workers, n int) error {
	st, stop, err := h.Open(h.Features().Config)
	if err != nil {
		return err
	}
	defer stop()
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range 4 {
				req := stageBatch(w*4+b, n)
				ctx, cancel := context.WithTimeout(context.Background(), DefaultBound)
				resp, err := st.Process(ctx, req)
				cancel()
				if err != nil {
					errs[w] = fmt.Errorf("Process of a batch of %d: %w", n, err)
					return
				}
				if _, err := sdk.CheckVerdicts(req, resp); err != nil {
					errs[w] = fmt.Errorf("batch of %d: %w", n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func stageBadConfig(h StageHarness) error {
	ps, err := h.Validate([]byte(`[1, 2]`))
	if err != nil {
		return err
	}
	if len(ps) == 0 {
		return errors.New("Validate accepted the config [1, 2], which is not a mapping")
	}
	return nil
}

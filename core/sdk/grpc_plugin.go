package sdk

import (
	"context"
	"sync"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
	"google.golang.org/grpc"
)

// pluginServer serves the Plugin service of any plugin kind.
type pluginServer struct {
	ferryv1.UnimplementedPluginServer
	impl Plugin
	// dataPlane, when set, serves the plugin's kind on a ring connection
	// the host offered at Configure (it returns at once).
	dataPlane func(*ring.Conn)
	ringFDs   []int // instead of EnvRingFD (ServeOpts.RingFDs)
	ringOnce  sync.Once
}

func (s *pluginServer) Validate(_ context.Context, req *ferryv1.ValidateRequest) (*ferryv1.ValidateResponse, error) {
	resp := &ferryv1.ValidateResponse{}
	for _, p := range s.impl.Validate(req.ConfigJson) {
		resp.Problems = append(resp.Problems, &ferryv1.Problem{Path: p.Path, Message: p.Message})
	}
	return resp, nil
}

func (s *pluginServer) Configure(ctx context.Context, req *ferryv1.ConfigureRequest) (*ferryv1.ConfigureResponse, error) {
	if ps := s.impl.Validate(req.ConfigJson); len(ps) > 0 {
		return nil, ps
	}
	if err := s.impl.Configure(ctx, req.ConfigJson, req.Env); err != nil {
		return nil, err
	}
	resp := &ferryv1.ConfigureResponse{}
	if req.DataPlane == DataPlaneRing && s.dataPlane != nil {
		s.ringOnce.Do(func() {
			conn, err := pluginRing(s.ringFDs)
			if err != nil {
				pluginLog().Warn("data plane: staying on gRPC", "error", err)
				return
			}
			s.dataPlane(conn)
			resp.DataPlane = DataPlaneRing
		})
	}
	return resp, nil
}

func (s *pluginServer) Health(context.Context, *ferryv1.HealthRequest) (*ferryv1.HealthResponse, error) {
	return &ferryv1.HealthResponse{Ok: true}, nil
}

// pluginClient is the host's side of the Plugin service.
type pluginClient struct {
	rpc ferryv1.PluginClient
}

func newPluginClient(cc grpc.ClientConnInterface) pluginClient {
	return pluginClient{rpc: ferryv1.NewPluginClient(cc)}
}

// Validate asks the plugin to check a config section. A failed call is
// reported as a problem at the section's root.
func (c pluginClient) Validate(config []byte) Problems {
	resp, err := c.rpc.Validate(context.Background(), &ferryv1.ValidateRequest{ConfigJson: config})
	if err != nil {
		return Problems{{Message: "plugin could not validate its config: " + err.Error()}}
	}
	var ps Problems
	for _, p := range resp.Problems {
		ps = append(ps, Problem{Path: p.Path, Message: p.Message})
	}
	return ps
}

func (c pluginClient) Configure(ctx context.Context, config []byte, env *Environment) error {
	_, err := c.rpc.Configure(ctx, &ferryv1.ConfigureRequest{ConfigJson: config, Env: env})
	return err
}

// Health reports whether the plugin answers.
func (c pluginClient) Health(ctx context.Context) error {
	_, err := c.rpc.Health(ctx, &ferryv1.HealthRequest{})
	return err
}

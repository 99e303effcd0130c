package httptransport_test

import (
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
	"github.com/ferrymq/ferry/internal/ferrytest"
	httptransport "github.com/ferrymq/ferry/plugins/transport/http"
)

// The http transport passes the transport suite's host-contract cases,
// called directly and through the plugin boundary on gRPC and on the rings.
// The client-driven cases need a client of its JSON API, which the suite
// does not have; they skip, saying so.
func TestConformance(t *testing.T) {
	sdktest.TestTransport(t, func(*testing.T) sdk.Transport { return httptransport.New() }, sdktest.TransportFeatures{
		Config: []byte(`{"listen": "` + ferrytest.FreeAddr(t) + `"}`),
	})
}

package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
)

// A pipeline whose node has users still runs its own generators and
// flows (as the node's internal super user), while a client without
// credentials is refused.
func TestQuickstartWithUsers(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 500)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Security = security.Config{Users: []security.User{{Name: "ops", PasswordHash: string(hash), Super: true}}}
	e := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if c, err := client.Dial(ctx, e.Address()); !errors.Is(err, sdk.ErrUnauthenticated) {
		if err == nil {
			c.Close()
		}
		t.Fatalf("dial without credentials: %v; want ErrUnauthenticated", err)
	}
	checkAllDelivered(t, runPipeline(t, e, 60*time.Second), 500)
}

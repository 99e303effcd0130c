package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// An application retries a send whose answer was lost (the fault proxy cuts
// the connection after the broker stored it; the client does not retry):
// with the same caller-chosen Message.ID the retry is stored once and
// answered with the first offset. The control, the same retry without an ID,
// is stored twice: the check can fail.
func TestAppRetryWithCallerIDStoresOnce(t *testing.T) {
	e, _ := startProdNode(t, t.TempDir(), ferrytest.FreeAddr(t), "sync")
	proxy := startFaultProxy(t, e.Address())
	c := dialProdNode(t, proxy.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{Retries: client.NoRetries})
	if _, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	// stored counts the messages the node holds whose id matches.
	stored := func(match func(id string) bool) int {
		n := 0
		for _, id := range storedIDs(t, e.Address()) {
			if match(id) {
				n++
			}
		}
		return n
	}
	// sendLostThenRetry sends m with its first answer lost, then again as
	// an application would, and returns the retry's result. The proxy
	// cuts the first answer it sees: when that was another call's (a
	// route lookup on the same connection), m was never stored, and the
	// lost send is tried again (bounded).
	sendLostThenRetry := func(m client.Message, match func(id string) bool) client.Result {
		t.Helper()
		lost := false
		for attempt := 0; attempt < 20 && !lost; attempt++ {
			before := stored(match)
			cuts := proxy.cuts.Load()
			proxy.armed.Store(true)
			_, err := p.SendSync(ctx, m)
			proxy.armed.Store(false)
			if err == nil {
				t.Fatalf("SendSync of %q whose answer was lost succeeded; the fault was not injected", m.Body)
			}
			if proxy.cuts.Load() == cuts {
				// It failed on the connection an earlier cut broke,
				// before the client reconnected.
				time.Sleep(50 * time.Millisecond)
				continue
			}
			lost = stored(match) == before+1
		}
		if !lost {
			t.Fatalf("%q: no send whose answer was lost was stored in 20 tries", m.Body)
		}
		var r client.Result
		var err error
		for range 100 { // the client reconnects by itself: the retry may see the broken connection first
			if r, err = p.SendSync(ctx, m); err == nil || !errors.Is(err, sdk.ErrUnavailable) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("the application's retry of %q: %v", m.Body, err)
		}
		return r
	}
	isOrder := func(id string) bool { return id == "order-4711" }
	r := sendLostThenRetry(client.Message{ID: "order-4711", Topic: "t", Body: []byte("with id")}, isOrder)
	if r.ID != "order-4711" {
		t.Fatalf("result id %q, want the caller's", r.ID)
	}
	count := func(id string) (n int, at [2]int64) {
		for k, v := range storedIDs(t, e.Address()) {
			if v == id {
				n, at = n+1, k
			}
		}
		return n, at
	}
	if n, at := count("order-4711"); n != 1 || at != [2]int64{int64(r.Queue), r.Offset} {
		t.Fatalf("order-4711 is stored %d times (last at %v); want once, at the retry's answer queue %d offset %d", n, at, r.Queue, r.Offset)
	}

	// Control: without an ID the application's retry is a new message.
	r2 := sendLostThenRetry(client.Message{Topic: "t", Body: []byte("without id")}, func(id string) bool { return !isOrder(id) })
	bodies := 0
	for _, id := range storedIDs(t, e.Address()) {
		if id != "order-4711" {
			bodies++
		}
	}
	if want := 3; bodies != want { // "before", and "without id" twice
		t.Fatalf("without an id the node holds %d other messages, want %d (the control must store the retry twice); last result %+v", bodies, want, r2)
	}
}

// A caller's id that is too long or unprintable is refused before anything
// is sent, naming what is wrong.
func TestCallerIDChecked(t *testing.T) {
	e, _ := startProdNode(t, t.TempDir(), ferrytest.FreeAddr(t), "sync")
	p := dialProdNode(t, e.Address()).NewProducer(client.ProducerOptions{})
	for _, id := range []string{strings.Repeat("x", client.MaxIDBytes+1), "a\nb", "\xff"} {
		_, err := p.SendSync(testCtx(t), client.Message{ID: id, Topic: "t", Body: []byte("x")})
		if !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), "message id") {
			t.Errorf("id %q: err = %v, want an invalid-argument error naming the message id", id, err)
		}
	}
}

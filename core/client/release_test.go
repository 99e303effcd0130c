package client_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
)

// Nack(0) redelivers at once and counts the attempt; Release redelivers at
// once without counting it. "At once" is checked against the test's own
// clock, not a speed: the redelivered copy is due (sdk.HeaderDeliverAt) no
// later than the moment Nack or Release returned, where the first delay
// level would have made it due 1s after. Both modes: concurrent (through the
// retry topic) and orderly (in place).
func TestNackZeroAndRelease(t *testing.T) {
	for _, orderly := range []bool{false, true} {
		t.Run(map[bool]string{false: "concurrent", true: "orderly"}[orderly], func(t *testing.T) {
			n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 1})
			c := connect(t, n.addr)
			ids := produceN(t, c, "t", 2)
			nacked, released := ids[0], ids[1]
			var mu sync.Mutex
			attempts := map[string][]int{}
			returned := map[string]time.Time{} // when Nack or Release returned
			dueAt := map[string]time.Time{}    // when the copy was due (concurrent)
			cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", Orderly: orderly})
			if err != nil {
				t.Fatal(err)
			}
			stop := runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
				mu.Lock()
				first := len(attempts[d.ID]) == 0
				attempts[d.ID] = append(attempts[d.ID], d.Attempt)
				if !first {
					if v, ok := d.Message.Headers[sdk.HeaderDeliverAt]; ok {
						ns, _ := strconv.ParseInt(v, 10, 64)
						dueAt[d.ID] = time.Unix(0, ns)
					}
				}
				mu.Unlock()
				if !first {
					return nil
				}
				var err error
				if d.ID == nacked {
					err = d.Nack(0)
				} else {
					err = d.Release()
				}
				mu.Lock()
				returned[d.ID] = time.Now()
				mu.Unlock()
				return err
			})
			waitFor(t, 30*time.Second, "both messages delivered twice", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(attempts[nacked]) >= 2 && len(attempts[released]) >= 2
			})
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if a := attempts[nacked][:2]; a[0] != 1 || a[1] != 2 {
				t.Errorf("nacked message attempts %v, want [1 2] (Nack counts)", a)
			}
			if a := attempts[released][:2]; a[0] != 1 || a[1] != 1 {
				t.Errorf("released message attempts %v, want [1 1] (Release does not count)", a)
			}
			if s := cons.Stats(); s.Released != 1 || s.Retried != 1 {
				t.Errorf("stats: %d released, %d retried; want 1 and 1", s.Released, s.Retried)
			}
			if !orderly {
				for _, id := range ids {
					if due := dueAt[id]; due.IsZero() || due.After(returned[id]) {
						t.Errorf("%s: the redelivered copy was due at %v, after its Nack or Release returned at %v (not at once)", id, due, returned[id])
					}
				}
			}
		})
	}
}

package ferrytest

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo serves lines back on a loopback port.
func echo(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return lis.Addr().String()
}

// roundTrip sends a line and waits up to d for it to come back.
func roundTrip(c net.Conn, r *bufio.Reader, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := r.ReadString('\n')
	return err
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func TestProxyCutBlackholeHealDelay(t *testing.T) {
	p := NewProxy(t, echo(t))
	c, r := dial(t, p.Addr())
	if err := roundTrip(c, r, time.Second); err != nil {
		t.Fatalf("passing: %v", err)
	}

	p.Cut()
	if err := roundTrip(c, r, time.Second); err == nil {
		t.Fatal("a cut link still carried data")
	}
	c2, r2 := dial(t, p.Addr())
	if err := roundTrip(c2, r2, time.Second); err == nil {
		t.Fatal("a connection made while cut carried data")
	}

	p.Heal()
	c, r = dial(t, p.Addr())
	if err := roundTrip(c, r, time.Second); err != nil {
		t.Fatalf("healed: %v", err)
	}

	p.Blackhole()
	if err := roundTrip(c, r, 300*time.Millisecond); err == nil {
		t.Fatal("a black-holed link carried data")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("a black-holed link should time out, not fail: %v", err)
	}
	c3, r3 := dial(t, p.Addr())
	if err := roundTrip(c3, r3, 300*time.Millisecond); err == nil {
		t.Fatal("a connection made while black-holed carried data")
	}

	p.Heal()
	if err := roundTrip(c3, r3, time.Second); err == nil {
		t.Fatal("a black-holed connection survived the heal (its stream lost bytes)")
	}
	c, r = dial(t, p.Addr())
	p.SetDelay(100 * time.Millisecond)
	start := time.Now()
	if err := roundTrip(c, r, 2*time.Second); err != nil {
		t.Fatalf("delayed: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("round trip through a proxy delaying 100 ms each way took %s", d)
	}
	// Latency, not bandwidth: ten pipelined lines take about one round trip.
	start = time.Now()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	for range 10 {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	for range 10 {
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 600*time.Millisecond {
		t.Fatalf("ten pipelined round trips through a 100 ms delay took %s", d)
	}
}

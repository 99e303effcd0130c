package ring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the peer process: with FERRY_RING_PEER set it
// maps the segment inherited as fd 3 and serves it.
func TestMain(m *testing.M) {
	if mode := os.Getenv("FERRY_RING_PEER"); mode != "" {
		os.Exit(peer(mode))
	}
	os.Exit(m.Run())
}

// peer echoes every frame back (echo), answers with 16 bytes (reply), or
// writes garbage into its ring after n good frames (garbage).
func peer(mode string) int {
	seg, err := Open([]int{3, 4, 5})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	spin, _ := time.ParseDuration(os.Getenv("FERRY_RING_SPIN"))
	c, err := NewConn(seg, Plugin, Options{Spin: spin})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for n := 0; ; n++ {
		kind, id, p, err := c.Read()
		if err != nil {
			fmt.Fprintln(os.Stderr, "peer:", err)
			return 3
		}
		switch mode {
		case "echo":
			err = c.Write(kind, id, p)
		case "reply":
			err = c.Write(kind, id, p[:min(len(p), 16)])
		case "reply-go":
			// Answered from another goroutine, as the SDK's servers do.
			go func() {
				if err := c.Write(kind, id, p[:min(len(p), 16)]); err != nil {
					os.Exit(4)
				}
			}()
		case "garbage":
			if n == 100 {
				r := seg.ring(Up)
				putHeader(r.data[c.w.tail&(r.size-1):], 1<<30, 1, 0, 0, 0)
				r.tail.Store(c.w.tail + 64)
				time.Sleep(time.Hour)
			}
			err = c.Write(kind, id, p)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "peer:", err)
			return 4
		}
	}
}

func startPeer(t testing.TB, mode string, size int, spin time.Duration) (*Conn, *exec.Cmd) {
	t.Helper()
	seg, err := Create(size)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FERRY_RING_PEER="+mode, "FERRY_RING_SPIN="+spin.String())
	cmd.ExtraFiles = seg.Files()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := mustConn(t, seg, Host, Options{Spin: spin, Stall: 30 * time.Second})
	t.Cleanup(func() {
		c.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		seg.Close()
	})
	return c, cmd
}

// Two real processes: frames of random sizes (some split over records, some
// wrapping) go to the peer and come back whole and in order, with a reader
// and a writer that sleep and wake all the time.
func TestTwoProcessEcho(t *testing.T) {
	c, _ := startPeer(t, "echo", MinRingSize, 0)
	const n = 4000 // ~190 MiB each way: the ring wraps ~3000 times
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if err := c.Write(1, uint64(i), frame(i, (i*7919)%(3*MinRingSize/2))); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i := 0; i < n; i++ {
		_, id, p, err := c.Read()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if id != uint64(i) || !bytes.Equal(p, frame(i, (i*7919)%(3*MinRingSize/2))) {
			t.Fatalf("frame %d came back as id %d, %d bytes", i, id, len(p))
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A peer that writes garbage is reported as ErrCorrupt; the reader survives.
func TestTwoProcessGarbage(t *testing.T) {
	c, _ := startPeer(t, "garbage", MinRingSize, 0)
	go func() {
		for i := 0; ; i++ {
			if c.Write(1, uint64(i), frame(i, 100)) != nil {
				return
			}
		}
	}()
	for i := 0; ; i++ {
		_, _, _, err := c.Read()
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v, want ErrCorrupt", err)
		}
		if i != 100 {
			t.Fatalf("garbage detected at frame %d, want 100", i)
		}
		return
	}
}

// A peer killed mid-stream stops reading: the writer reports ErrStalled once
// the ring is full, within its stall limit, and never hangs.
func TestTwoProcessPeerKilled(t *testing.T) {
	seg, err := Create(MinRingSize)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FERRY_RING_PEER=reply")
	cmd.ExtraFiles = seg.Files()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := mustConn(t, seg, Host, Options{Stall: time.Second})
	for i := 0; i < 100; i++ {
		if err := c.Write(1, uint64(i), frame(i, 1000)); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := c.Read(); err != nil {
			t.Fatal(err)
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	for i := 0; ; i++ {
		err := c.Write(1, uint64(i), frame(i, 1000))
		if errors.Is(err, ErrStalled) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkTwoProcessRoundTrip: one request of 1 KiB, a 16-byte answer,
// between two processes (the plugin boundary's floor on the ring data plane).
func BenchmarkTwoProcessRoundTrip(b *testing.B) {
	for _, spin := range []time.Duration{-1, 5 * time.Microsecond, 20 * time.Microsecond, 50 * time.Microsecond} {
		b.Run(fmt.Sprintf("spin=%s", spin), func(b *testing.B) {
			c, _ := startPeer(b, "reply", DefaultRingSize, spin)
			msg := frame(1, 1024)
			for i := 0; b.Loop(); i++ {
				if err := c.Write(1, uint64(i), msg); err != nil {
					b.Fatal(err)
				}
				if _, _, _, err := c.Read(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTwoProcessRoundTripHandoff: as above, with the peer answering
// from a goroutine of its own and this side's answers read by a goroutine
// that hands them to the caller over a channel (what the SDK does on both
// sides).
func BenchmarkTwoProcessRoundTripHandoff(b *testing.B) {
	for _, spin := range []time.Duration{-1, 20 * time.Microsecond, 100 * time.Microsecond} {
		b.Run(fmt.Sprintf("spin=%s", spin), func(b *testing.B) {
			c, _ := startPeer(b, "reply-go", DefaultRingSize, spin)
			answers := make(chan struct{}, 1)
			go func() {
				for {
					if _, _, _, err := c.Read(); err != nil {
						return
					}
					answers <- struct{}{}
				}
			}()
			msg := frame(1, 1024)
			for i := 0; b.Loop(); i++ {
				if err := c.Write(1, uint64(i), msg); err != nil {
					b.Fatal(err)
				}
				<-answers
			}
		})
	}
}

// BenchmarkTwoProcessStream: frames of 1 KiB one way, answered in batches
// (the peer echoes 16 bytes per frame; the sender keeps a window in flight).
func BenchmarkTwoProcessStream(b *testing.B) {
	c, _ := startPeer(b, "reply", DefaultRingSize, 0)
	msg := frame(1, 1024)
	const window = 256
	done := make(chan error, 1)
	sem := make(chan struct{}, window)
	go func() {
		for i := 0; i < b.N; i++ {
			if _, _, _, err := c.Read(); err != nil {
				done <- err
				return
			}
			<-sem
		}
		done <- nil
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		if err := c.Write(1, uint64(i), msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

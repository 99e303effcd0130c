package file

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// The benchmarks compare the store with what the disk does on its own:
//
//	go test -run xxx -bench . -count 5 ./plugins/storage/file/
//
// Every benchmark reports msgs/s (or writes/s for the raw disk) and MB/s of
// payload, so that Append can be read against the raw rates.

// rawFile is a file written sequentially and replaced every 64MiB, like a
// segment, so that a long run does not fill the disk.
type rawFile struct {
	dir  string
	f    *os.File
	off  int64
	gen  int
	sync bool
}

func (r *rawFile) write(b *testing.B, p []byte) {
	if r.f == nil || r.off+int64(len(p)) > DefaultSegmentBytes {
		if r.f != nil {
			_ = r.f.Close()
			_ = os.Remove(r.f.Name())
		}
		f, err := os.Create(filepath.Join(r.dir, fmt.Sprintf("raw-%d", r.gen)))
		if err != nil {
			b.Fatal(err)
		}
		r.f, r.off = f, 0
		r.gen++
	}
	if _, err := r.f.WriteAt(p, r.off); err != nil {
		b.Fatal(err)
	}
	r.off += int64(len(p))
	if r.sync {
		if err := syncFile(r.f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawDisk measures the disk without the store: a 1KiB and a 256KiB
// write each followed by fdatasync, and sequential writes without fsync (what
// the page cache takes).
func BenchmarkRawDisk(b *testing.B) {
	for _, c := range []struct {
		name string
		size int
		sync bool
	}{
		{"write+fsync-1KiB", 1 << 10, true},
		{"write+fsync-256KiB", 256 << 10, true},
		{"seq-write-1KiB", 1 << 10, false},
		{"seq-write-256KiB", 256 << 10, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := &rawFile{dir: b.TempDir(), sync: c.sync}
			defer func() {
				if r.f != nil {
					_ = r.f.Close()
				}
			}()
			p := payload(c.size)
			b.SetBytes(int64(c.size))
			b.ResetTimer()
			for range b.N {
				r.write(b, p)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}

// rawRate measures the raw disk's writes/s of size-byte writes (each followed
// by fdatasync when sync) for about d, for the ratio metrics below: measured
// next to the benchmark it compares with, a ratio holds up better on a shared,
// noisy disk than rates from runs minutes apart.
func rawRate(b *testing.B, size int, sync bool, d time.Duration) float64 {
	r := &rawFile{dir: b.TempDir(), sync: sync}
	defer func() {
		if r.f != nil {
			_ = r.f.Close()
			_ = os.Remove(r.f.Name())
		}
	}()
	p := payload(size)
	for range 20 { // past creating the file
		r.write(b, p)
	}
	n, start := 0, time.Now()
	for time.Since(start) < d {
		r.write(b, p)
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// baseline is a raw rate measured before and after a benchmark run.
type baseline struct {
	size  int
	sync  bool
	rates []float64
}

func (bl *baseline) measure(b *testing.B) {
	if b.N > 1 { // not for the 1-iteration probe
		bl.rates = append(bl.rates, rawRate(b, bl.size, bl.sync, 250*time.Millisecond))
	}
}

// report adds metric name: the run's payload bytes/s over the raw bytes/s.
func (bl *baseline) report(b *testing.B, name string) {
	if len(bl.rates) == 0 {
		return
	}
	var sum float64
	for _, r := range bl.rates {
		sum += r
	}
	raw := sum / float64(len(bl.rates)) * float64(bl.size)
	b.ReportMetric(float64(b.N)*1024/b.Elapsed().Seconds()/raw, name)
}

func openBench(b *testing.B, config string) *Store {
	s := New()
	s.log = s.log.ResetNamed("bench")
	if err := s.Configure(context.Background(), []byte(config), &sdk.Environment{DataDir: b.TempDir()}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// payload returns n bytes that are not zeros: a virtual disk may write zeros
// faster than data, which would flatter whatever writes them.
func payload(n int) []byte {
	p := make([]byte, n)
	x := uint32(2463534242)
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	return p
}

var body1KiB = payload(1024)

func benchMessage(i int) *sdk.Message {
	return &sdk.Message{Id: fmt.Sprintf("producer-1-%d", i), Topic: "bench", Queue: int32(i % 4), Body: body1KiB}
}

// BenchmarkAppendAsync appends 1KiB messages under flush: async from one
// goroutine, as the broker does, while another waits for the answers in
// order. batch is how many messages one Append call carries.
func BenchmarkAppendAsync(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := openBench(b, `{"flush": "async"}`)
			seq1, seq256 := &baseline{size: 1 << 10}, &baseline{size: 256 << 10}
			seq1.measure(b)
			seq256.measure(b)
			msgs := make([]*sdk.Message, 4096)
			for i := range msgs {
				msgs[i] = benchMessage(i)
			}
			waits := make(chan sdk.AppendWait, 1024)
			done := make(chan error, 1)
			go func() {
				var err error
				for w := range waits {
					if _, werr := w(context.Background()); werr != nil && err == nil {
						err = werr
					}
				}
				done <- err
			}()
			b.SetBytes(1024)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				n := min(batch, b.N-i)
				// Fresh ids: the same ones would be de-duplicated.
				for j := range n {
					msgs[(i+j)%len(msgs)].Id = fmt.Sprintf("p-%d", i+j)
				}
				start := i % len(msgs)
				if start+n > len(msgs) {
					start = 0
				}
				w, err := s.Append(context.Background(), msgs[start:start+n])
				if err != nil {
					b.Fatal(err)
				}
				waits <- w
			}
			close(waits)
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			seq1.measure(b)
			seq256.measure(b)
			if n := s.writeCalls.Load(); n > 0 {
				b.ReportMetric(float64(b.N)/float64(n), "msgs/write")
			}
			seq1.report(b, "of-raw-seq-1KiB")
			seq256.report(b, "of-raw-seq-256KiB")
		})
	}
}

// BenchmarkAppendSync appends 1KiB messages under flush: sync with 1, 16 and
// 256 producers, modelled on the broker: each producer sends one message and
// waits for its ack; one appender goroutine takes whatever producers have
// sent (the broker's grouping of appends), calls Append once for them, and
// hands each producer the batch's AppendWait, which they wait on concurrently.
func BenchmarkAppendSync(b *testing.B) {
	for _, producers := range []int{1, 16, 256} {
		for _, prealloc := range []bool{true, false} {
			b.Run(fmt.Sprintf("producers=%d/preallocate=%v", producers, prealloc), func(b *testing.B) {
				s := openBench(b, fmt.Sprintf(`{"flush": "sync", "preallocate": %v}`, prealloc))
				benchProducers(b, s, producers)
			})
		}
	}
}

type benchReq struct {
	m     *sdk.Message
	reply chan benchReply
}

type benchReply struct {
	wait sdk.AppendWait
	idx  int
}

func benchProducers(b *testing.B, s *Store, producers int) {
	fsync1, fsync256 := &baseline{size: 1 << 10, sync: true}, &baseline{size: 256 << 10, sync: true}
	fsync1.measure(b)
	fsync256.measure(b)
	reqs := make(chan benchReq, producers)
	go func() {
		batch := make([]benchReq, 0, producers)
		msgs := make([]*sdk.Message, 0, producers)
		for r := range reqs {
			batch, msgs = append(batch[:0], r), append(msgs[:0], r.m)
		drain:
			for len(batch) < 1024 {
				select {
				case r, ok := <-reqs:
					if !ok {
						break drain
					}
					batch, msgs = append(batch, r), append(msgs, r.m)
				default:
					break drain
				}
			}
			w, err := s.Append(context.Background(), append([]*sdk.Message(nil), msgs...))
			if err != nil {
				panic(err)
			}
			for i, r := range batch {
				r.reply <- benchReply{w, i}
			}
		}
	}()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.SetBytes(1024)
	b.ResetTimer()
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply := make(chan benchReply, 1)
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				m := benchMessage(int(i))
				m.Id = fmt.Sprintf("p%d-%d", p, i)
				reqs <- benchReq{m, reply}
				r := <-reply
				offs, err := r.wait(context.Background())
				if err != nil || len(offs) <= r.idx {
					failed.Store(fmt.Sprint("wait: ", err))
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(reqs)
	if f := failed.Load(); f != nil {
		b.Fatal(f)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	fsync1.measure(b)
	fsync256.measure(b)
	// Messages per raw 1KiB write+fsync (the 16-producer target is 10x),
	// and payload bytes/s over the raw 256KiB write+fsync bytes/s.
	fsync1.report(b, "x-raw-1KiB-fsync")
	fsync256.report(b, "of-raw-256KiB-fsync")
	if n := s.fsyncs.Load(); n > 0 {
		b.ReportMetric(float64(s.fsyncedMsgs.Load())/float64(n), "msgs/fsync")
		b.ReportMetric(float64(s.lingerNanos.Load())/float64(n)/1e3, "linger-us/fsync")
		b.ReportMetric(float64(s.ioNanos.Load())/float64(n)/1e3, "io-us/fsync")
		b.ReportMetric(float64(s.gapNanos.Load())/float64(n)/1e3, "gap-us/fsync")
	}
}

// BenchmarkOpen measures recovery of a store holding 256MiB of 1KiB messages
// in 16MiB segments: from the sealed segments' index files, and by scanning
// every segment (index files removed before each open).
func BenchmarkOpen(b *testing.B) {
	dataDir := b.TempDir()
	config := `{"flush": "async", "segment_bytes": "16MiB"}`
	s := New()
	s.log = s.log.ResetNamed("bench")
	if err := s.Configure(context.Background(), []byte(config), &sdk.Environment{DataDir: dataDir}); err != nil {
		b.Fatal(err)
	}
	const total = 256 << 20
	batch := make([]*sdk.Message, 256)
	var wait sdk.AppendWait
	for i := 0; i < total/1024; i += len(batch) {
		for j := range batch {
			batch[j] = benchMessage(i + j)
		}
		var err error
		if wait, err = s.Append(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"indexed", "scan"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(total)
			for b.Loop() {
				if mode == "scan" {
					b.StopTimer()
					idx, _ := filepath.Glob(filepath.Join(dataDir, dirName, "*"+indexSuffix))
					for _, f := range idx {
						_ = os.Remove(f)
					}
					b.StartTimer()
				}
				s := New()
				s.log = s.log.ResetNamed("bench")
				if err := s.Configure(context.Background(), []byte(config), &sdk.Environment{DataDir: dataDir}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				_ = s.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkRead reads batches of 256 stored 1 KiB messages (with a key and
// a header), as a consumer's fetch does, from the page cache.
func BenchmarkRead(b *testing.B) {
	s := openBench(b, `{"flush": "async"}`)
	const n = 4096
	msgs := make([]*sdk.Message, 256)
	for i := 0; i < n; i += len(msgs) {
		for j := range msgs {
			msgs[j] = &sdk.Message{Id: fmt.Sprintf("p-%d", i+j), Topic: "bench", Key: "k", Headers: map[string]string{"h": "v"}, Body: body1KiB}
		}
		w, err := s.Append(context.Background(), msgs)
		if err == nil {
			_, err = w(context.Background())
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(256 << 10)
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		resp, err := s.Read(context.Background(), &sdk.ReadRequest{Topic: "bench", Queue: 0, Offset: off, MaxMessages: 256})
		if err != nil || len(resp.Messages) != 256 {
			b.Fatalf("read at %d: %d messages, %v", off, len(resp.Messages), err)
		}
		off = (off + 256) % n
	}
	b.ReportMetric(float64(b.N*256)/b.Elapsed().Seconds(), "msgs/s")
}

package sdk

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// bufferPool is a gRPC buffer pool that does not zero the buffers it hands
// out. gRPC's default pool clears every buffer on Get; with batches of
// hundreds of KiB that clearing was a sixth of the host's CPU time at the
// storage boundary. Every buffer gRPC takes from a pool is filled completely
// (by the codec or by a read) before it is used, so no stale bytes escape.
type bufferPool struct {
	tiers [maxTier + 1]sync.Pool
}

const (
	minTier = 8  // 256 B
	maxTier = 26 // 64 MiB; larger buffers are not pooled
)

var sharedBufferPool mem.BufferPool = &bufferPool{}

func tierOf(n int) int {
	if n <= 1<<minTier {
		return minTier
	}
	return bits.Len(uint(n - 1))
}

func (p *bufferPool) Get(length int) *[]byte {
	t := tierOf(length)
	if t > maxTier {
		b := make([]byte, length)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:length]
		return b
	}
	b := make([]byte, length, 1<<t)
	return &b
}

func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minTier || c&(c-1) != 0 {
		return // not one of ours
	}
	t := bits.Len(uint(c)) - 1
	if t > maxTier {
		return
	}
	p.tiers[t].Put(b)
}

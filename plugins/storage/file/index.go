package file

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// A sealed segment gets an index file ("<base>.idx") once it is fsynced: the
// fixed header, topic and id of each of its records, without the messages.
// Recovery reads it instead of the segment, so a restart reads a few percent
// of the log (the segments' checkpoint) and scans only the segment being
// written. An index that is missing, damaged or does not match its segment
// is ignored and the segment is scanned.
//
// Index file (little-endian):
//
//	0  [8]byte magic "FERRYIDX"
//	8  u32     format version
//	12 u32     reserved, zero
//	16 u64     segment base
//	24 u64     bytes of records the segment holds
//	32 ...     per record: its first recordHeaderSize bytes, topic, id
//	end-4 u32  CRC32C of everything before
const (
	indexSuffix     = ".idx"
	indexMagic      = "FERRYIDX"
	indexHeaderSize = 32
)

func indexPath(segPath string) string {
	return strings.TrimSuffix(segPath, segmentSuffix) + indexSuffix
}

// indexHead returns the part of an encoded record an index keeps.
func indexHead(rec []byte) []byte {
	tl := int(binary.LittleEndian.Uint16(rec[14:]))
	il := int(binary.LittleEndian.Uint16(rec[36:]))
	return rec[:recordHeaderSize+tl+il]
}

// appendHead appends a record's head to a segment's heads, doubling their
// room when it runs out (append grows large slices by a quarter at a time:
// five times the final size allocated over a segment's life, a measurable
// share of the store's garbage under load).
func appendHead(heads, head []byte) []byte {
	if len(heads)+len(head) > cap(heads) {
		heads = slices.Grow(heads, max(len(head), len(heads), 4096))
	}
	return append(heads, head...)
}

// writeIndex writes g's index file from the record heads Append collected.
func (s *Store) writeIndex(g *segment, heads []byte, dataLen int64) error {
	b := make([]byte, indexHeaderSize, indexHeaderSize+len(heads)+4)
	copy(b, indexMagic)
	binary.LittleEndian.PutUint32(b[8:], formatVersion)
	binary.LittleEndian.PutUint64(b[16:], uint64(g.base))
	binary.LittleEndian.PutUint64(b[24:], uint64(dataLen))
	b = append(b, heads...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	dir, name := filepath.Split(indexPath(g.path))
	if err := writeFileAtomic(filepath.Clean(dir), name, b); err != nil {
		return fmt.Errorf("storage-file: write index of %s: %w", g.path, classify(err))
	}
	return nil
}

var errNoIndex = errors.New("no usable index")

// errIndexMissing: the segment has no index file (not written yet when the
// process stopped): scanned without a warning.
var errIndexMissing = fmt.Errorf("%w: missing", errNoIndex)

// loadIndex indexes sealed segment g from its index file, which must describe
// exactly dataLen bytes of records. It changes nothing unless the whole index
// is good: on errNoIndex the caller scans the segment instead.
func (s *Store) loadIndex(g *segment, dataLen int64) error {
	b, err := os.ReadFile(indexPath(g.path))
	if errors.Is(err, os.ErrNotExist) {
		return errIndexMissing
	} else if err != nil {
		return fmt.Errorf("%w: %v", errNoIndex, err)
	}
	if len(b) < indexHeaderSize+4 || string(b[:8]) != indexMagic ||
		binary.LittleEndian.Uint32(b[8:]) != formatVersion ||
		int64(binary.LittleEndian.Uint64(b[16:])) != g.base ||
		int64(binary.LittleEndian.Uint64(b[24:])) != dataLen {
		return fmt.Errorf("%w: its header does not describe the segment", errNoIndex)
	}
	if crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return fmt.Errorf("%w: checksum mismatch", errNoIndex)
	}
	heads := b[indexHeaderSize : len(b)-4]
	// Check everything first, then apply: the two passes parse the same
	// bytes.
	ends := map[queueKey]int64{}
	var topic string
	if err := walkIndex(heads, dataLen, &topic, func(pos int64, m recordMeta) error {
		k := queueKey{m.topic, m.queue}
		end, seen := ends[k]
		if !seen {
			end = m.offset
			if q := s.queues[k]; q != nil {
				end = q.end()
			}
		}
		if checkRecordQueue(m) != nil || m.offset != end {
			return errNoIndex
		}
		ends[k] = end + 1
		return nil
	}); err != nil {
		return err
	}
	return walkIndex(heads, dataLen, &topic, func(pos int64, m recordMeta) error {
		s.indexRecord(g, pos, m)
		return nil
	})
}

// walkIndex parses an index file's record heads and calls fn for each with
// its position in the segment. Ids are strings only when fn keeps them; the
// topic string is reused while it repeats.
func walkIndex(heads []byte, dataLen int64, topic *string, fn func(pos int64, m recordMeta) error) error {
	var pos int64
	for len(heads) > 0 {
		if len(heads) < recordHeaderSize || binary.LittleEndian.Uint32(heads) != recordMagic {
			return errNoIndex
		}
		size := int64(binary.LittleEndian.Uint32(heads[4:]))
		tl := int(binary.LittleEndian.Uint16(heads[14:]))
		il := int(binary.LittleEndian.Uint16(heads[36:]))
		n := recordHeaderSize + tl + il
		if n > len(heads) || int64(n) > size || pos+size > dataLen {
			return errNoIndex
		}
		if t := heads[recordHeaderSize : recordHeaderSize+tl]; string(t) != *topic {
			*topic = string(t)
		}
		m := recordMeta{
			size:   int(size),
			topic:  *topic,
			queue:  int32(binary.LittleEndian.Uint32(heads[16:])),
			offset: int64(binary.LittleEndian.Uint64(heads[20:])),
			stored: int64(binary.LittleEndian.Uint64(heads[28:])),
			id:     string(heads[recordHeaderSize+tl : n]),
		}
		if err := fn(pos, m); err != nil {
			return err
		}
		pos += size
		heads = heads[n:]
	}
	if pos != dataLen {
		return errNoIndex
	}
	return nil
}

// indexRecord adds a checked record at segment position pos to its queue's
// index and de-dup window. Called during open.
func (s *Store) indexRecord(g *segment, pos int64, m recordMeta) {
	k := queueKey{m.topic, m.queue}
	q := s.queues[k]
	if q == nil {
		q = s.queueFor(k)
		q.start = m.offset
	}
	q.ents = append(q.ents, entry{pos: g.base + pos, size: int32(m.size)})
	q.times.note(m.offset, m.stored)
	if m.id != "" {
		q.dedup.addRecovered(m.id, m.offset)
	}
	g.maxStored = max(g.maxStored, m.stored)
}

// writeSealedIndexes writes the index files of sealed segments whose data is
// fsynced. Called by the janitor.
func (s *Store) writeSealedIndexes() error {
	fsynced := s.fsynced.Load()
	for {
		s.mu.Lock()
		var g *segment
		var heads []byte
		var dataLen int64
		for i := 0; i+1 < len(s.segs); i++ {
			if c := s.segs[i]; c.heads != nil && s.segs[i+1].base <= fsynced {
				g, heads, dataLen = c, c.heads, s.segs[i+1].base-c.base
				break
			}
		}
		s.mu.Unlock()
		if g == nil {
			return nil
		}
		if err := s.writeIndex(g, heads, dataLen); err != nil {
			return err
		}
		s.mu.Lock()
		g.heads = nil
		s.mu.Unlock()
	}
}

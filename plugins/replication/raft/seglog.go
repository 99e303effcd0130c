package raft

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	hraft "github.com/hashicorp/raft"
)

// segLog is raft's LogStore: append-only segment files in one directory,
// each named by the index of its first entry. StoreLogs writes all its
// entries with one write and makes them durable with one fdatasync, where
// a bbolt transaction costs two (pages, then meta) and rewrites pages:
// raft's log write is on every commit's path, on the leader before it
// sends the entries and on every follower before it acknowledges them.
//
// A record is the entry's length (4 bytes), the CRC-32C of the entry (4)
// and the entry (encodeLog). At open every segment is read through; a torn
// or corrupt record at the end of the last segment (a crash mid-write:
// nothing after it was acknowledged) is cut off, anywhere else it is an
// error. Deleting a conflicting suffix truncates files (durably, before
// the entries that replace it are written); compaction removes whole
// segments, and the entries of a partly compacted segment stay in its file
// (after a restart they are in the log again, before the snapshot: raft
// does not mind). Entries may have gaps between segments, as a bbolt log
// may: a follower that installed a snapshot stores the entries after it
// while it keeps older ones.
type segLog struct {
	dir string

	mu   sync.RWMutex
	segs []*segment // ascending; none empty
}

type segment struct {
	first uint64 // index of offs[0]
	f     *os.File
	offs  []int64 // file offset of each entry's record
	size  int64   // bytes of whole records
	base  uint64  // index of the file's first record (its name)
}

func (s *segment) last() uint64 { return s.first + uint64(len(s.offs)) - 1 }

// segMaxBytes: a segment takes no more entries once it is this large.
var segMaxBytes int64 = 64 << 20

const (
	segSuffix    = ".seg"
	recordHeader = 8
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var _ hraft.LogStore = (*segLog)(nil)

func segName(first uint64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

// openSegLog opens (creating) the log in dir.
func openSegLog(dir string) (*segLog, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var firsts []uint64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("raft log: unexpected file %s", filepath.Join(dir, name))
		}
		firsts = append(firsts, first)
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	l := &segLog{dir: dir}
	for i, first := range firsts {
		lastFile := i == len(firsts)-1
		seg, err := openSegment(dir, first, lastFile)
		if err != nil {
			l.Close()
			return nil, err
		}
		if seg == nil {
			continue // an empty last segment, removed
		}
		if n := len(l.segs); n > 0 && seg.first <= l.segs[n-1].last() {
			seg.f.Close()
			l.Close()
			return nil, fmt.Errorf("raft log: segment %s overlaps the one before it", segName(first))
		}
		l.segs = append(l.segs, seg)
	}
	return l, nil
}

// openSegment reads a segment through. A bad record ends it: cut off in the
// last segment (removed when nothing is left), an error in any other.
func openSegment(dir string, first uint64, lastFile bool) (*segment, error) {
	path := filepath.Join(dir, segName(first))
	f, err := os.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	seg := &segment{first: first, base: first, f: f}
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 1<<20)
	var hdr [recordHeader]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			break
		}
		n := int64(binary.BigEndian.Uint32(hdr[:4]))
		if n < 33 || n > 1<<31 {
			break
		}
		if int64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			break
		}
		if crc32.Checksum(buf, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
			break
		}
		if binary.BigEndian.Uint64(buf) != first+uint64(len(seg.offs)) {
			break
		}
		seg.offs = append(seg.offs, seg.size)
		seg.size += recordHeader + n
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Size() != seg.size {
		if !lastFile {
			f.Close()
			return nil, fmt.Errorf("raft log: segment %s is corrupt at byte %d (of %d)", path, seg.size, st.Size())
		}
		// A write the crash interrupted: none of it was acknowledged.
		if err := f.Truncate(seg.size); err != nil {
			f.Close()
			return nil, err
		}
		if err := syncFile(f); err != nil {
			f.Close()
			return nil, err
		}
	}
	if len(seg.offs) == 0 {
		f.Close()
		if !lastFile {
			return nil, fmt.Errorf("raft log: segment %s is empty", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
		return nil, syncDir(dir)
	}
	return seg, nil
}

func (l *segLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first error
	for _, s := range l.segs {
		if err := s.f.Close(); err != nil && first == nil {
			first = err
		}
	}
	l.segs = nil
	return first
}

func (l *segLog) FirstIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.segs) == 0 {
		return 0, nil
	}
	return l.segs[0].first, nil
}

func (l *segLog) LastIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.lastIndex(), nil
}

func (l *segLog) lastIndex() uint64 {
	if len(l.segs) == 0 {
		return 0
	}
	return l.segs[len(l.segs)-1].last()
}

// find returns the segment holding index, or nil.
func (l *segLog) find(index uint64) *segment {
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].first > index })
	if i == 0 {
		return nil
	}
	s := l.segs[i-1]
	if index > s.last() {
		return nil
	}
	return s
}

func (l *segLog) GetLog(index uint64, log *hraft.Log) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	s := l.find(index)
	if s == nil {
		return hraft.ErrLogNotFound
	}
	i := index - s.first
	off, end := s.offs[i], s.size
	if int(i)+1 < len(s.offs) {
		end = s.offs[i+1]
	}
	b := make([]byte, end-off)
	if _, err := s.f.ReadAt(b, off); err != nil {
		return fmt.Errorf("raft log: reading entry %d: %w", index, err)
	}
	if crc32.Checksum(b[recordHeader:], crcTable) != binary.BigEndian.Uint32(b[4:]) {
		return fmt.Errorf("raft log: entry %d: checksum mismatch", index)
	}
	return decodeLog(b[recordHeader:], log)
}

func (l *segLog) StoreLog(log *hraft.Log) error { return l.StoreLogs([]*hraft.Log{log}) }

// StoreLogs appends consecutive entries. An entry at or below the last
// index replaces it and everything after it (as a key-value log would
// overwrite it; raft deletes a conflicting suffix first anyway); one past a
// gap starts a new segment.
func (l *segLog) StoreLogs(logs []*hraft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	for i, lg := range logs[1:] {
		if lg.Index != logs[i].Index+1 {
			return fmt.Errorf("raft log: entries not consecutive: %d after %d", lg.Index, logs[i].Index)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	idx := logs[0].Index
	if len(l.segs) > 0 && idx <= l.lastIndex() {
		if err := l.truncateFrom(idx); err != nil {
			return err
		}
	}
	n := len(l.segs)
	var s *segment
	if n > 0 && l.segs[n-1].last()+1 == idx && l.segs[n-1].size < segMaxBytes {
		s = l.segs[n-1]
	}
	fresh := s == nil
	if fresh {
		f, err := os.OpenFile(filepath.Join(l.dir, segName(idx)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		s = &segment{first: idx, base: idx, f: f}
	}
	size := 0
	for _, lg := range logs {
		size += recordHeader + 33 + len(lg.Data) + len(lg.Extensions)
	}
	buf := make([]byte, 0, size)
	offs := make([]int64, 0, len(logs))
	for _, lg := range logs {
		start := len(buf)
		offs = append(offs, s.size+int64(start))
		buf = append(buf, make([]byte, recordHeader)...)
		buf = appendLog(buf, lg)
		binary.BigEndian.PutUint32(buf[start:], uint32(len(buf)-start-recordHeader))
		binary.BigEndian.PutUint32(buf[start+4:], crc32.Checksum(buf[start+recordHeader:], crcTable))
	}
	err := func() error {
		if _, err := s.f.WriteAt(buf, s.size); err != nil {
			return err
		}
		if err := syncFile(s.f); err != nil {
			return err
		}
		if fresh {
			return syncDir(l.dir)
		}
		return nil
	}()
	if err != nil {
		// Nothing of it counts: cut it off again (a restart would).
		if fresh {
			s.f.Close()
			_ = os.Remove(s.f.Name())
		} else {
			_ = s.f.Truncate(s.size)
		}
		return fmt.Errorf("raft log: %w", err)
	}
	s.offs = append(s.offs, offs...)
	s.size += int64(len(buf))
	if fresh {
		l.segs = append(l.segs, s)
	}
	return nil
}

// DeleteRange deletes a prefix (compaction) or a suffix (a conflict) of
// the log, or all of it; raft deletes nothing else.
func (l *segLog) DeleteRange(min, max uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.segs) == 0 || min > max {
		return nil
	}
	first, last := l.segs[0].first, l.lastIndex()
	switch {
	case max >= last:
		return l.truncateFrom(min)
	case min <= first:
		return l.compactTo(max)
	default:
		return fmt.Errorf("raft log: deleting entries %d-%d from the middle of %d-%d is not supported", min, max, first, last)
	}
}

// truncateFrom deletes every entry from index on, durably.
func (l *segLog) truncateFrom(index uint64) error {
	removed := false
	for len(l.segs) > 0 {
		s := l.segs[len(l.segs)-1]
		if s.last() < index {
			break
		}
		if index <= s.first {
			// All of it (a partly compacted segment's file holds only
			// compacted entries besides).
			s.f.Close()
			if err := os.Remove(filepath.Join(l.dir, segName(s.base))); err != nil {
				return err
			}
			l.segs = l.segs[:len(l.segs)-1]
			removed = true
			continue
		}
		k := index - s.first
		if err := s.f.Truncate(s.offs[k]); err != nil {
			return err
		}
		if err := syncFile(s.f); err != nil {
			return err
		}
		s.size, s.offs = s.offs[k], s.offs[:k]
		break
	}
	if removed {
		return syncDir(l.dir)
	}
	return nil
}

// compactTo deletes every entry up to index: whole segments go, a segment
// that keeps entries keeps its file.
func (l *segLog) compactTo(index uint64) error {
	for len(l.segs) > 0 {
		s := l.segs[0]
		if s.first > index {
			break
		}
		if s.last() <= index {
			s.f.Close()
			if err := os.Remove(filepath.Join(l.dir, segName(s.base))); err != nil {
				return err
			}
			l.segs = l.segs[1:]
			continue
		}
		k := index + 1 - s.first
		s.first, s.offs = index+1, s.offs[k:]
		break
	}
	return nil
}

// appendLog appends encodeLog's encoding of l to b.
func appendLog(b []byte, l *hraft.Log) []byte {
	b = binary.BigEndian.AppendUint64(b, l.Index)
	b = binary.BigEndian.AppendUint64(b, l.Term)
	b = binary.BigEndian.AppendUint64(b, uint64(l.AppendedAt.UnixNano()))
	b = append(b, byte(l.Type))
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.Extensions)))
	return append(b, l.Extensions...)
}

// syncDir makes a directory's entries (files created, removed, renamed)
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

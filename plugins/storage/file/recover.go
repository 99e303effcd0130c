package file

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/ferrymq/ferry/core/sdk"
)

var segmentName = regexp.MustCompile(`^[0-9]{20}` + regexp.QuoteMeta(segmentSuffix) + `$`)

// open locks the directory and recovers the log: it checks every segment
// header, scans the records, stops at the first torn or corrupt one, truncates
// the log there and rebuilds the per-queue indexes and de-dup windows from
// what is left. Called by Configure with mu held.
func (s *Store) open() (err error) {
	parent := filepath.Dir(s.dir)
	if st, err := os.Stat(parent); err != nil {
		return fmt.Errorf("storage-file: data directory %s: %w", parent, err)
	} else if !st.IsDir() {
		return fmt.Errorf("storage-file: data directory %s is not a directory", parent)
	}
	if err := os.Mkdir(s.dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("storage-file: create store directory: %w", classify(err))
	}
	s.lock, err = lockDir(s.dir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			for _, g := range s.segs {
				if g.f != nil {
					_ = g.f.Close()
				}
			}
			s.segs = nil
			_ = s.lock.Close()
		}
	}()

	s.queues = make(map[queueKey]*queue)
	if s.offsets, err = loadOffsets(s.dir); err != nil {
		return err
	}
	starts, err := loadQueueStarts(s.dir)
	if err != nil {
		return err
	}
	names, err := s.listDir()
	if err != nil {
		return err
	}
	if err := s.openSegments(names); err != nil {
		return err
	}
	if err := s.scanSegments(); err != nil {
		return err
	}
	for _, q := range s.queues {
		q.dedup.rebuildSlots()
	}
	for k, start := range starts {
		q := s.queueFor(k)
		if q.end() <= start && len(q.ents) == 0 {
			q.start = start
		} else if q.start < start {
			// The segments holding [q.start, start) were being
			// deleted when the process stopped.
			n := min(int(start-q.start), len(q.ents))
			q.ents, q.start = q.ents[n:], q.start+int64(n)
		}
	}
	if len(s.segs) == 0 {
		if err := s.createFirstSegment(); err != nil {
			return err
		}
	}
	last := s.segs[len(s.segs)-1]
	if s.cfg.preallocate() {
		if err := s.preallocateTail(last); err != nil {
			// Not worth refusing to open over (a nearly full
			// disk): the segment is written by appending.
			s.log.Warn("could not preallocate the segment being written", "error", err)
			if err := last.f.Truncate(segmentHeaderSize + last.size); err != nil {
				return fmt.Errorf("storage-file: truncate %s: %w", last.path, classify(err))
			}
		}
	}
	// The names of segments a dead process created, too, must be durable
	// before their records are served.
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("storage-file: fsync %s: %w", s.dir, classify(err))
	}
	s.apos = last.base + last.size
	s.wpos, s.fpos = s.apos, s.apos
	s.durable.Store(s.apos)
	s.written.Store(s.apos)
	s.fsynced.Store(s.apos)
	return nil
}

// listDir returns the segment file names in log order and removes files left
// by an interrupted atomic write.
func (s *Store) listDir() ([]string, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("storage-file: %w", err)
	}
	var names []string
	for _, de := range des {
		switch {
		case segmentName.MatchString(de.Name()):
			names = append(names, de.Name())
		case filepath.Ext(de.Name()) == indexSuffix:
			seg := strings.TrimSuffix(de.Name(), indexSuffix) + segmentSuffix
			if _, err := os.Stat(filepath.Join(s.dir, seg)); err != nil {
				_ = os.Remove(filepath.Join(s.dir, de.Name()))
			}
		case filepath.Ext(de.Name()) == tmpSuffix:
			_ = os.Remove(filepath.Join(s.dir, de.Name()))
		case de.Name() == spareFileName:
			// A spare left by the last process is not trusted: if
			// it crashed while rolling into it and the rename did
			// not reach the disk, the spare holds records that a
			// reuse would leave behind the new ones. The
			// preallocator makes a new one.
			_ = os.Remove(filepath.Join(s.dir, de.Name()))
		}
	}
	sort.Strings(names)
	return names, nil
}

// openSegments opens every segment and checks its header before anything is
// changed, so that a store of another format version is refused untouched.
//
// A segment's name is authoritative for its base (names are made by create
// or rename, never rewritten). A header that is damaged (fails its checksum,
// zeros, or a base that disagrees with the name) is rebuilt from the name
// when the segment holds a record: a damaged header never costs a record.
// Only the newest segment may have no header and no record at all, which a
// crash while creating it leaves; that file alone is removed.
func (s *Store) openSegments(names []string) error {
	for i, name := range names {
		path := filepath.Join(s.dir, name)
		want, _ := strconv.ParseInt(name[:20], 10, 64)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("storage-file: open segment: %w", classify(err))
		}
		h := make([]byte, segmentHeaderSize)
		n, err := io.ReadFull(f, h)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			_ = f.Close()
			return fmt.Errorf("storage-file: read %s: %w", path, err)
		}
		base, herr := parseSegmentHeader(h[:n])
		if errors.Is(herr, ErrIncompatible) {
			_ = f.Close()
			return fmt.Errorf("storage-file: %s: %w", path, herr)
		}
		if herr == nil && base != want {
			herr = fmt.Errorf("header says base %d, the file name says %d", base, want)
		}
		if herr != nil {
			hasRecord, noData, err := firstRecordValid(f)
			if err != nil {
				_ = f.Close()
				return fmt.Errorf("storage-file: read %s: %w", path, err)
			}
			last := i == len(names)-1
			switch {
			case !hasRecord && noData && last && (n < segmentHeaderSize || isZeros(h)):
				// A crash while the newest segment was being
				// created (or a spare renamed into place
				// before its header was written).
				_ = f.Close()
				s.log.Warn("recovery: removing the newest segment, created but never written", "segment", path, "error", herr)
				_ = os.Remove(indexPath(path))
				if err := os.Remove(path); err != nil {
					return fmt.Errorf("storage-file: %w", err)
				}
				return syncDir(s.dir)
			case !hasRecord && !isZeros(h[:n]) && string(h[:min(n, 8)]) != segmentMagic[:min(n, 8)]:
				// Neither a Ferry header nor a Ferry record:
				// not ours to rewrite.
				_ = f.Close()
				return fmt.Errorf("storage-file: %s: %w: bad segment header (%v) and no readable record after it; "+
					"run `ferry storage check %s` and move the file out of the directory if it is not a Ferry segment",
					path, ErrIncompatible, herr, s.dir)
			}
			if _, err := f.WriteAt(segmentHeader(want), 0); err != nil {
				_ = f.Close()
				return fmt.Errorf("storage-file: rebuild header of %s: %w", path, classify(err))
			}
			if err := syncFile(f); err != nil {
				_ = f.Close()
				return fmt.Errorf("storage-file: rebuild header of %s: %w", path, classify(err))
			}
			s.log.Error("recovery: segment header damaged; rebuilt from the file name, its records are kept",
				"segment", path, "error", herr, "base", want)
			base = want
		}
		g := &segment{base: base, path: path, f: f, durableHeader: true}
		g.refs.Store(1)
		s.segs = append(s.segs, g)
	}
	return nil
}

// firstRecordValid tells whether a whole, checksummed record follows the
// header of segment file f, and whether nothing does (end of file or zeros).
func firstRecordValid(f *os.File) (valid, noData bool, err error) {
	head := make([]byte, 8)
	if n, err := f.ReadAt(head, segmentHeaderSize); err != nil {
		if errors.Is(err, io.EOF) {
			return false, isZeros(head[:n]), nil
		}
		return false, false, err
	}
	if isZeros(head) {
		return false, true, nil
	}
	n := int(binary.LittleEndian.Uint32(head[4:]))
	if binary.LittleEndian.Uint32(head) != recordMagic || n < recordHeaderSize || n > MaxSegmentBytes {
		return false, false, nil
	}
	rec := make([]byte, n)
	if _, err := f.ReadAt(rec, segmentHeaderSize); err != nil {
		if errors.Is(err, io.EOF) {
			return false, false, nil
		}
		return false, false, err
	}
	_, perr := parseRecord(rec)
	return perr == nil, false, nil
}

// scanSegments reads every record, checks it and indexes it. At the first bad
// one the log is truncated: the rest of that segment and all later segments
// go, and what went is logged. A corrupt record is never indexed, so never
// delivered.
func (s *Store) scanSegments() error {
	var rec []byte
	for i, g := range s.segs {
		st, err := g.f.Stat()
		if err != nil {
			return fmt.Errorf("storage-file: %w", err)
		}
		fileData := st.Size() - segmentHeaderSize
		var reason error
		if i > 0 {
			prev := s.segs[i-1]
			if prev.base+prev.size != g.base {
				reason = fmt.Errorf("%w: segment starts at %d, previous one ends at %d", errBadRecord, g.base, prev.base+prev.size)
			}
		}
		// A sealed segment's data ends where the next one starts (a
		// preallocated one has zeros after it); the last one's ends at
		// the end of the file or at the first zeros.
		dataEnd := fileData
		last := i == len(s.segs)-1
		if !last {
			dataEnd = min(fileData, s.segs[i+1].base-g.base)
		}
		var pos int64
		if reason == nil && !last && fileData >= dataEnd {
			if s.loadIndex(g, dataEnd) == nil {
				g.size = dataEnd
				continue
			}
			// No usable index: scan, and write one again later.
			_ = os.Remove(indexPath(g.path))
		}
		if reason == nil {
			pos, reason, err = s.scanSegment(g, dataEnd, &rec)
			if err != nil {
				return err
			}
			// After the plugin process (not the machine) died,
			// what it wrote is in the page cache and reads back
			// whole, but was maybe never fsynced. It is served
			// from now on (and a retried append is answered with
			// it), so make it durable first.
			if err := syncFile(g.f); err != nil {
				return fmt.Errorf("storage-file: fsync %s: %w", g.path, classify(err))
			}
			if !last && reason == nil {
				if err := s.writeIndex(g, g.heads, pos); err != nil {
					return err
				}
				g.heads = nil
			}
		}
		if reason == nil && !last && g.base+pos != s.segs[i+1].base {
			reason = fmt.Errorf("%w: segment data ends at %d, the next segment starts at %d", errTornRecord, g.base+pos, s.segs[i+1].base)
		}
		g.size = pos
		if reason == nil {
			continue
		}
		if last && errors.Is(reason, errZeros) {
			// The normal end of a preallocated segment. Whatever
			// follows the zeros (a later write of which only some
			// pages reached the disk) is cut too, so that it
			// cannot line up behind the next records and pass
			// for one of them; preallocateTail zeroes it again.
			if err := g.f.Truncate(segmentHeaderSize + pos); err != nil {
				return fmt.Errorf("storage-file: truncate %s: %w", g.path, classify(err))
			}
			return syncFile(g.f)
		}
		dropped := fileData - pos
		for _, later := range s.segs[i+1:] {
			if st, err := later.f.Stat(); err == nil {
				dropped += st.Size() - segmentHeaderSize
			}
		}
		logf := s.log.Error
		if errors.Is(reason, errTornRecord) || errors.Is(reason, errZeros) {
			// What a crash leaves of writes no fsync covered.
			logf = s.log.Warn
		}
		logf("recovery: log truncated at the first bad record; nothing after it is delivered",
			"segment", g.path, "position", g.base+pos, "reason", reason.Error(),
			"bytes_dropped", dropped, "later_segments_dropped", len(s.segs)-i-1)
		if err := g.f.Truncate(segmentHeaderSize + pos); err != nil {
			return fmt.Errorf("storage-file: truncate %s: %w", g.path, classify(err))
		}
		if err := syncFile(g.f); err != nil {
			return fmt.Errorf("storage-file: %w", classify(err))
		}
		for _, later := range s.segs[i+1:] {
			_ = later.f.Close()
			_ = os.Remove(indexPath(later.path))
			if err := os.Remove(later.path); err != nil {
				return fmt.Errorf("storage-file: %w", err)
			}
		}
		_ = os.Remove(indexPath(g.path))
		s.segs = s.segs[:i+1]
		if i > 0 && pos == 0 {
			// An empty segment that is not the first: drop it too,
			// the previous one is written on.
			_ = g.f.Close()
			if err := os.Remove(g.path); err != nil {
				return fmt.Errorf("storage-file: %w", err)
			}
			s.segs = s.segs[:i]
		}
		return syncDir(s.dir)
	}
	return nil
}

// scanSegment indexes g's records. It returns how many bytes of records are
// good, and why it stopped early (nil: the whole file is good). err is an I/O
// failure, which stops the open.
// It collects the record heads for g's index file.
func (s *Store) scanSegment(g *segment, fileData int64, rec *[]byte) (pos int64, reason, err error) {
	r := io.NewSectionReader(g.f, segmentHeaderSize, fileData)
	br := bufio.NewReaderSize(r, 1<<20)
	for pos < fileData {
		head, err := br.Peek(8)
		if err != nil {
			return pos, errTornRecord, nil
		}
		n, reason := recordLen(head, fileData-pos)
		if reason != nil {
			return pos, reason, nil
		}
		if cap(*rec) < n {
			*rec = make([]byte, n)
		}
		b := (*rec)[:n]
		if _, err := io.ReadFull(br, b); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return pos, errTornRecord, nil
			}
			return pos, nil, fmt.Errorf("storage-file: read %s: %w", g.path, err)
		}
		meta, reason := parseRecord(b)
		if reason != nil {
			return pos, reason, nil
		}
		if reason := checkRecordQueue(meta); reason != nil {
			return pos, reason, nil
		}
		if q := s.queues[queueKey{meta.topic, meta.queue}]; q != nil && meta.offset != q.end() {
			return pos, fmt.Errorf("%w: %s/%d offset %d, expected %d", errBadRecord, meta.topic, meta.queue, meta.offset, q.end()), nil
		}
		s.indexRecord(g, pos, meta)
		g.heads = append(g.heads, indexHead(b)...)
		pos += int64(n)
	}
	return pos, nil, nil
}

func checkRecordQueue(m recordMeta) error {
	if m.topic == "" || m.queue < 0 {
		return fmt.Errorf("%w: empty topic or negative queue", errBadRecord)
	}
	return nil
}

// createFirstSegment starts the log of a new store, from a preallocated
// file when preallocation is on.
func (s *Store) createFirstSegment() error {
	g := &segment{base: 0, path: filepath.Join(s.dir, fmt.Sprintf(segmentNameFormat, 0))}
	g.refs.Store(1)
	if s.cfg.preallocate() && !s.spareReady {
		if err := s.makeSpare(nil); err != nil {
			s.log.Warn("could not preallocate the first segment", "error", err)
		} else {
			s.spareReady = true
		}
	}
	if s.spareReady {
		s.spareReady = false
		if err := os.Rename(filepath.Join(s.dir, spareFileName), g.path); err != nil {
			return fmt.Errorf("storage-file: %w", err)
		}
		f, err := os.OpenFile(g.path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("storage-file: %w", classify(err))
		}
		g.f = f
		if _, err := f.WriteAt(segmentHeader(0), 0); err != nil {
			return fmt.Errorf("storage-file: write segment header: %w", classify(err))
		}
		if err := syncFile(f); err != nil {
			return fmt.Errorf("storage-file: %w", classify(err))
		}
	} else if err := s.createSegment(g); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("storage-file: %w", classify(err))
	}
	g.durableHeader = true
	s.segs = append(s.segs, g)
	return nil
}

// preallocateTail fills the rest of the segment being written with zeros up
// to segment_bytes (a store that was closed, or recovered, has its file cut
// at its last record).
func (s *Store) preallocateTail(g *segment) error {
	st, err := g.f.Stat()
	if err != nil {
		return fmt.Errorf("storage-file: %w", err)
	}
	if st.Size() >= int64(s.cfg.SegmentBytes) {
		return nil
	}
	if err := zeroFill(g.f, st.Size(), int64(s.cfg.SegmentBytes), nil); err != nil {
		return fmt.Errorf("storage-file: preallocate %s: %w", g.path, classify(err))
	}
	if err := syncFile(g.f); err != nil {
		return fmt.Errorf("storage-file: preallocate %s: %w", g.path, classify(err))
	}
	return nil
}

// createSegment creates g's file and writes its header; the caller fsyncs
// the directory.
func (s *Store) createSegment(g *segment) error {
	f, err := s.createFile(g.path)
	if err != nil {
		return fmt.Errorf("storage-file: create segment: %w", classify(err))
	}
	if _, err := f.WriteAt(segmentHeader(g.base), 0); err != nil {
		_ = f.Close()
		_ = os.Remove(g.path)
		return fmt.Errorf("storage-file: create segment %s: %w", g.path, classify(err))
	}
	if err := syncFile(f); err != nil {
		_ = f.Close()
		_ = os.Remove(g.path)
		return fmt.Errorf("storage-file: create segment %s: %w", g.path, classify(err))
	}
	g.f = f
	return nil
}

// classify maps OS errors to the SDK's sentinels where one fits: a full disk
// is ErrFull. The OS error stays in the chain.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%w: %w", sdk.ErrFull, err)
	case errors.Is(err, syscall.EROFS), errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("directory not writable: %w", err)
	}
	return err
}

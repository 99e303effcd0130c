package file

import (
	"bufio"
	"bytes"
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
			s.lock = nil
		}
	}()

	s.queues = make(map[queueKey]*queue)
	s.lastBad = -1
	offsets, err := loadOffsets(s.dir)
	if err != nil {
		return err
	}
	rets, err := loadTopicRetention(s.dir)
	if err != nil {
		return err
	}
	s.topicRet.Store(&rets)
	s.offMu.Lock()
	s.offsets = offsets
	s.offMu.Unlock()
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
			q.times.trim(q.start)
		}
	}
	if err := s.clampOffsets(); err != nil {
		return err
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

// clampOffsets moves a group's committed offset that is past its queue's end
// (the log lost its tail: a torn write, or messages acknowledged under flush:
// async that a machine crash took) back to the end, logs it and writes the
// offsets file, so that the group consumes the messages stored from now on
// instead of skipping them until the queue reaches the old commit. Called by
// open once the queues are recovered.
func (s *Store) clampOffsets() error {
	clamped := 0
	s.offMu.Lock()
	for group, m := range s.offsets {
		for k, off := range m {
			var end int64
			if q := s.queues[k]; q != nil {
				end = q.end()
			}
			if off > end {
				s.log.Warn("recovery: a group's committed offset is past its queue's end; moved back to the end so that new messages are not skipped",
					"group", group, "topic", k.topic, "queue", k.queue, "committed", off, "end", end)
				m[k] = end
				clamped++
			}
		}
	}
	if clamped > 0 {
		s.offVersion++
	}
	s.offMu.Unlock()
	if clamped == 0 {
		return nil
	}
	return s.writeOffsets()
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
			case !hasRecord && !noData && !isZeros(h[:n]) && string(h[:min(n, 8)]) != segmentMagic[:min(n, 8)]:
				// Neither a Ferry header nor a Ferry record,
				// but data: not ours to rewrite.
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

// scanSegments reads every record, checks it and indexes it.
//
// Damage is told from a torn tail. A bad record (its checksum, magic, size,
// or an offset out of sequence) that valid records follow is corruption: the
// damaged stretch is skipped, the records after it are kept, and the offsets
// it held become holes in their queues (read as sdk.ErrCorrupt), so that no
// offset is ever given to another message. A bad stretch that nothing valid
// follows in the newest segment is a torn tail, the last write of a process
// or machine that died: it is cut, and the log goes on from there (under
// flush: sync nothing in it was acknowledged). Zeros in the newest segment are
// the end of its data. Records are never deleted from a sealed segment, and
// a segment is never deleted for what another one holds.
func (s *Store) scanSegments() error {
	var rec []byte
	for i, g := range s.segs {
		st, err := g.f.Stat()
		if err != nil {
			return fmt.Errorf("storage-file: %w", err)
		}
		fileData := st.Size() - segmentHeaderSize
		// A sealed segment's data ends where the next one starts (a
		// preallocated one has zeros after it); the last one's ends at
		// the end of the file or at the first zeros.
		last := i == len(s.segs)-1
		dataEnd := fileData
		if !last {
			dataEnd = s.segs[i+1].base - g.base
			if fileData >= dataEnd {
				err := s.loadIndex(g, dataEnd)
				if err == nil {
					g.size = dataEnd
					continue
				}
				if !errors.Is(err, errIndexMissing) {
					s.log.Warn("recovery: a segment's index file is damaged or does not match the segment; "+
						"scanning the segment instead (its message and time index are rebuilt from the records) and writing the index file again",
						"index", indexPath(g.path), "reason", err.Error())
				}
			}
			// No usable index: scan, and write one again later.
			_ = os.Remove(indexPath(g.path))
		}
		res, err := s.scanSegment(g, min(fileData, dataEnd), dataEnd, last, &rec)
		if err != nil {
			return err
		}
		// After the plugin process (not the machine) died, what it
		// wrote is in the page cache and reads back whole, but was
		// maybe never fsynced. It is served from now on (and a retried
		// append is answered with it), so make it durable first.
		if err := syncFile(g.f); err != nil {
			return fmt.Errorf("storage-file: fsync %s: %w", g.path, classify(err))
		}
		if !last {
			g.size = dataEnd
			if !g.damaged {
				if err := s.writeIndex(g, g.heads, dataEnd); err != nil {
					return err
				}
			}
			g.heads = nil
			continue
		}
		g.size = res.end
		if res.end == fileData {
			continue
		}
		if res.reason == nil || errors.Is(res.reason, errZeros) {
			// The normal end of a preallocated segment. Whatever
			// follows the zeros (a later write of which only some
			// pages reached the disk) is cut too, so that it
			// cannot line up behind the next records and pass
			// for one of them; preallocateTail zeroes it again.
			if err := g.f.Truncate(segmentHeaderSize + res.end); err != nil {
				return fmt.Errorf("storage-file: truncate %s: %w", g.path, classify(err))
			}
			return syncFile(g.f)
		}
		logf := s.log.Error
		if errors.Is(res.reason, errTornRecord) {
			// What a crash leaves of writes no fsync covered.
			logf = s.log.Warn
		}
		logf("recovery: torn tail cut (no valid record follows it in the newest segment)",
			"segment", g.path, "position", g.base+res.end, "reason", res.reason.Error(),
			"bytes_dropped", fileData-res.end)
		if err := g.f.Truncate(segmentHeaderSize + res.end); err != nil {
			return fmt.Errorf("storage-file: truncate %s: %w", g.path, classify(err))
		}
		if err := syncFile(g.f); err != nil {
			return fmt.Errorf("storage-file: %w", classify(err))
		}
		if i > 0 && res.end == 0 && !s.segs[i-1].damaged {
			// An empty segment that is not the first: drop it,
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

// scanResult is what scanSegment found in one segment.
type scanResult struct {
	// end is where the newest segment's good data ends (its cut point);
	// reason says why it ends before the file does (nil: it does not).
	end    int64
	reason error
}

// scanSegment indexes g's records from its data, fileData bytes of the
// dataEnd its records cover (less when the file is short). It skips damaged
// stretches followed by valid records (see scanSegments) and reports where
// the good data of the newest segment ends. err is an I/O failure, which
// stops the open. It collects the record heads for g's index file.
func (s *Store) scanSegment(g *segment, fileData, dataEnd int64, last bool, rec *[]byte) (scanResult, error) {
	var pos int64
	br := bufio.NewReaderSize(io.NewSectionReader(g.f, segmentHeaderSize, fileData), 1<<20)
	seek := func(p int64) {
		pos = p
		br.Reset(io.NewSectionReader(g.f, segmentHeaderSize+p, fileData-p))
	}
	// A run of bad bytes not yet followed by a good record: where it
	// starts, why, and the header fields of the bad records in it whose
	// sizes held (to keep their offsets as holes).
	badStart := int64(-1)
	var badReason error
	var hints []recordMeta
	markBad := func(p int64, reason error) {
		if badStart < 0 {
			badStart, badReason, hints = p, reason, nil
			s.lastBad = g.base + p
		}
	}
	var stop error
scan:
	for pos < fileData {
		head, err := br.Peek(8)
		if err != nil {
			stop = errTornRecord
			break
		}
		n, reason := recordLen(head, fileData-pos)
		switch {
		case errors.Is(reason, errZeros) && last:
			stop = reason
			break scan
		case reason == nil:
			if cap(*rec) < n {
				*rec = make([]byte, n)
			}
			b := (*rec)[:n]
			if _, err := io.ReadFull(br, b); err != nil {
				return scanResult{}, fmt.Errorf("storage-file: read %s: %w", g.path, err)
			}
			meta, reason := parseRecord(b)
			if reason == nil {
				reason = checkRecordQueue(meta)
			}
			if reason == nil && badStart >= 0 {
				// A good record follows the bad stretch.
				s.skipped(g, badStart, pos, badReason, hints)
				badStart = -1
			}
			if reason == nil {
				reason = s.checkSequence(g.base+pos, meta)
			}
			if reason == nil {
				s.indexRecord(g, pos, meta)
				if !g.damaged {
					g.heads = append(g.heads, indexHead(b)...)
				}
				pos += int64(n)
				continue
			}
			markBad(pos, reason)
			if h, ok := headerHint(b); ok {
				hints = append(hints, h)
			}
			// Its size held if a record starts right after it.
			if next := pos + int64(n); next == fileData || s.validAt(g, next, fileData) {
				seek(next)
				continue
			}
		default:
			// Bad magic, or a size past the end of the data: a
			// torn tail unless a valid record follows.
			markBad(pos, reason)
		}
		next, err := s.findRecord(g, pos+1, fileData)
		if err != nil {
			return scanResult{}, err
		}
		if next < 0 {
			seek(fileData)
			break
		}
		seek(next)
	}
	if last {
		if badStart >= 0 {
			// Nothing valid follows: a torn tail.
			return scanResult{end: badStart, reason: badReason}, nil
		}
		return scanResult{end: pos, reason: stop}, nil
	}
	// A sealed segment keeps its size; what is missing or bad up to its
	// end is a damaged stretch.
	if badStart < 0 && pos < dataEnd {
		badStart, badReason = pos, stop
		if badReason == nil {
			badReason = errTornRecord
		}
		s.lastBad = g.base + pos
	}
	if badStart >= 0 {
		s.skipped(g, badStart, dataEnd, fmt.Errorf("%w (to the end of the segment)", badReason), hints)
	}
	return scanResult{end: dataEnd}, nil
}

// checkSequence checks that a record's offset follows its queue's last one.
// A gap is accepted after a damaged stretch the lost records fit in (it
// becomes holes); a record at an offset that only holes hold replaces them.
func (s *Store) checkSequence(pos int64, m recordMeta) error {
	q := s.queues[queueKey{m.topic, m.queue}]
	if q == nil || m.offset == q.end() {
		return nil
	}
	if m.offset < q.end() && m.offset >= q.start {
		for _, e := range q.ents[m.offset-q.start:] {
			if e.size != 0 {
				return fmt.Errorf("%w: %s/%d offset %d, expected %d", errBadRecord, m.topic, m.queue, m.offset, q.end())
			}
		}
		q.ents = q.ents[:m.offset-q.start]
		return nil
	}
	var lastPos int64 = -1
	if len(q.ents) > 0 {
		lastPos = q.ents[len(q.ents)-1].pos
	}
	gap := m.offset - q.end()
	if m.offset > q.end() && s.lastBad > lastPos && gap*recordHeaderSize <= pos-max(lastPos, 0) {
		for range gap {
			q.ents = append(q.ents, entry{pos: s.lastBad})
		}
		s.holes += int(gap)
		s.log.Error("recovery: offsets lost to damaged records; they stay unused and are read as corrupt",
			"topic", m.topic, "queue", m.queue, "from", m.offset-gap, "to", m.offset-1)
		return nil
	}
	return fmt.Errorf("%w: %s/%d offset %d, expected %d", errBadRecord, m.topic, m.queue, m.offset, q.end())
}

// skipped records a damaged stretch [from, to) of segment g that valid data
// follows: the offsets of the bad records whose headers still name their
// queue become holes, the segment gets no index file (it is scanned at every
// open), and the stretch is logged.
func (s *Store) skipped(g *segment, from, to int64, reason error, hints []recordMeta) {
	g.damaged = true
	g.heads = nil
	holes := 0
	for _, h := range hints {
		if q := s.queues[queueKey{h.topic, h.queue}]; q != nil && h.offset == q.end() {
			q.ents = append(q.ents, entry{pos: g.base + from})
			holes++
		}
	}
	s.holes += holes
	s.damagedStretches++
	s.log.Error("recovery: damaged records skipped; the records after them are kept and their offsets stay unused",
		"segment", g.path, "position", g.base+from, "bytes", to-from, "reason", reason.Error(), "offsets_lost", holes)
}

// headerHint reads the queue and offset a bad record's header claims, when
// they are plausible; they are not checksummed, so they only ever make a
// hole at the next offset of a queue that exists.
func headerHint(rec []byte) (recordMeta, bool) {
	if len(rec) < recordHeaderSize {
		return recordMeta{}, false
	}
	tl := int(binary.LittleEndian.Uint16(rec[14:]))
	il := int(binary.LittleEndian.Uint16(rec[36:]))
	if tl == 0 || recordHeaderSize+tl+il > len(rec) {
		return recordMeta{}, false
	}
	m := recordMeta{
		topic:  string(rec[recordHeaderSize : recordHeaderSize+tl]),
		queue:  int32(binary.LittleEndian.Uint32(rec[16:])),
		offset: int64(binary.LittleEndian.Uint64(rec[20:])),
	}
	return m, m.queue >= 0 && m.offset >= 0
}

// validAt tells whether a whole record with a good checksum starts at
// segment position pos.
func (s *Store) validAt(g *segment, pos, fileData int64) bool {
	head := make([]byte, 8)
	if _, err := g.f.ReadAt(head, segmentHeaderSize+pos); err != nil {
		return false
	}
	n, err := recordLen(head, fileData-pos)
	if err != nil {
		return false
	}
	rec := make([]byte, n)
	if _, err := g.f.ReadAt(rec, segmentHeaderSize+pos); err != nil {
		return false
	}
	m, err := parseRecord(rec)
	return err == nil && checkRecordQueue(m) == nil
}

// findRecord returns the position of the first valid record at or after from
// in g, or -1.
func (s *Store) findRecord(g *segment, from, fileData int64) (int64, error) {
	var magic [4]byte
	binary.LittleEndian.PutUint32(magic[:], recordMagic)
	buf := make([]byte, 1<<20)
	for at := from; at+recordHeaderSize <= fileData; {
		n, err := g.f.ReadAt(buf[:min(int64(len(buf)), fileData-at)], segmentHeaderSize+at)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("storage-file: read %s: %w", g.path, err)
		}
		if n < len(magic) {
			return -1, nil
		}
		for i := 0; i+len(magic) <= n; {
			j := bytes.Index(buf[i:n], magic[:])
			if j < 0 {
				break
			}
			if s.validAt(g, at+int64(i+j), fileData) {
				return at + int64(i+j), nil
			}
			i += j + 1
		}
		at += int64(n - len(magic) + 1)
	}
	return -1, nil
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

package file

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// Check is `ferry storage check`: it reads a store directory without
// changing anything and reports, per segment, the header, every record's
// checksum and sequence, and the index file against the log; per queue, its
// offsets and the ones lost to damage. It answers what open would do with
// each problem (rebuild a header, skip damaged records, cut a torn tail).
//
// dir is the store directory or a data_dir holding "storage-file". The store
// may be open by a running broker: its newest segment is then read as it is
// being written, and its report can show a torn tail that is only a write in
// progress (the report says so).
func Check(dir string) (*CheckReport, error) {
	if st, err := os.Stat(filepath.Join(dir, dirName)); err == nil && st.IsDir() {
		dir = filepath.Join(dir, dirName)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("storage check: %w", err)
	}
	r := &CheckReport{Dir: dir, InUse: lockHeld(dir)}
	var names []string
	for _, de := range des {
		if segmentName.MatchString(de.Name()) {
			names = append(names, de.Name())
		}
	}
	sort.Strings(names)
	queues := map[queueKey]*QueueReport{}
	for i, name := range names {
		sr := checkSegment(filepath.Join(dir, name), name, i == len(names)-1, names, i, queues)
		r.Segments = append(r.Segments, sr)
	}
	keys := make([]queueKey, 0, len(queues))
	for k := range queues {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].topic != keys[j].topic {
			return keys[i].topic < keys[j].topic
		}
		return keys[i].queue < keys[j].queue
	})
	for _, k := range keys {
		r.Queues = append(r.Queues, *queues[k])
	}
	for _, name := range []string{offsetsFileName, queuesFileName} {
		var v map[string]any
		if _, err := readState(dir, name, &v); err != nil {
			r.StateProblems = append(r.StateProblems, err.Error())
		}
	}
	return r, nil
}

// CheckReport is what Check found.
type CheckReport struct {
	Dir           string
	InUse         bool // another process holds the store's lock
	Segments      []SegmentReport
	Queues        []QueueReport
	StateProblems []string // offsets.json, queues.json
}

// SegmentReport describes one segment file.
type SegmentReport struct {
	Path    string
	Base    int64
	Header  string // "ok", or what is wrong and what open does about it
	Records int    // records whose checksum and sequence hold
	Bytes   int64  // bytes of records the segment covers
	// Damaged lists the stretches of bad bytes valid records follow
	// (open skips them); TornTail a bad end of the newest segment (open
	// cuts it).
	Damaged  []string
	TornTail string
	Index    string // "ok", "none", or what is wrong (open then scans the segment)
	Problems int
}

// QueueReport describes one queue as the records show it.
type QueueReport struct {
	Topic   string
	Queue   int32
	First   int64 // offset of its first record
	Next    int64 // the offset after its last record
	Records int
	Lost    []int64 // offsets between First and Next with no good record
}

// OK tells whether the store has nothing wrong.
func (r *CheckReport) OK() bool {
	return r.Problems() == 0
}

// Problems counts what is wrong.
func (r *CheckReport) Problems() int {
	n := len(r.StateProblems)
	for _, s := range r.Segments {
		n += s.Problems
	}
	return n
}

// Write prints the report for a person.
func (r *CheckReport) Write(w io.Writer) {
	fmt.Fprintf(w, "store %s: %d segments, %d queues\n", r.Dir, len(r.Segments), len(r.Queues))
	if r.InUse {
		fmt.Fprintln(w, "note: the store is open by a running process; its newest segment may be changing while it is read")
	}
	for _, s := range r.Segments {
		status := "ok"
		if s.Problems > 0 {
			status = fmt.Sprintf("%d problem(s)", s.Problems)
		}
		fmt.Fprintf(w, "segment %s: %s\n", filepath.Base(s.Path), status)
		fmt.Fprintf(w, "  base %d, %d records, %d bytes\n", s.Base, s.Records, s.Bytes)
		fmt.Fprintf(w, "  header: %s\n", s.Header)
		fmt.Fprintf(w, "  index: %s\n", s.Index)
		for _, d := range s.Damaged {
			fmt.Fprintf(w, "  damaged: %s\n", d)
		}
		if s.TornTail != "" {
			fmt.Fprintf(w, "  torn tail: %s\n", s.TornTail)
		}
	}
	for _, q := range r.Queues {
		fmt.Fprintf(w, "queue %s/%d: offsets %d..%d, %d records", q.Topic, q.Queue, q.First, q.Next-1, q.Records)
		if len(q.Lost) > 0 {
			fmt.Fprintf(w, ", %d lost to damage: %s", len(q.Lost), offsetRanges(q.Lost))
		}
		fmt.Fprintln(w)
	}
	for _, p := range r.StateProblems {
		fmt.Fprintf(w, "state: %s\n", p)
	}
	if r.OK() {
		fmt.Fprintln(w, "result: ok")
	} else {
		fmt.Fprintf(w, "result: %d problem(s)\n", r.Problems())
	}
}

// offsetRanges prints sorted offsets as ranges ("3, 7-9").
func offsetRanges(offs []int64) string {
	var b bytes.Buffer
	for i := 0; i < len(offs); {
		j := i
		for j+1 < len(offs) && offs[j+1] == offs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		if i == j {
			fmt.Fprintf(&b, "%d", offs[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", offs[i], offs[j])
		}
		i = j + 1
	}
	return b.String()
}

// checkSegment checks one segment and adds its records to queues.
func checkSegment(path, name string, last bool, names []string, i int, queues map[queueKey]*QueueReport) SegmentReport {
	base, _ := strconv.ParseInt(name[:20], 10, 64)
	sr := SegmentReport{Path: path, Base: base, Header: "ok", Index: "none"}
	problem := func(format string, args ...any) string {
		sr.Problems++
		return fmt.Sprintf(format, args...)
	}
	f, err := os.Open(path)
	if err != nil {
		sr.Header = problem("cannot open: %v", err)
		return sr
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		sr.Header = problem("cannot stat: %v", err)
		return sr
	}
	h := make([]byte, segmentHeaderSize)
	n, _ := io.ReadFull(f, h)
	hbase, herr := parseSegmentHeader(h[:n])
	switch {
	case errors.Is(herr, ErrIncompatible):
		sr.Header = problem("%v (open refuses the store)", herr)
		return sr
	case herr == nil && hbase != base:
		sr.Header = problem("says base %d, the file name says %d (open rebuilds it from the name)", hbase, base)
	case herr != nil:
		sr.Header = problem("%v (open rebuilds it from the file name, unless what follows is data but no Ferry record)", herr)
	}
	fileData := max(st.Size()-segmentHeaderSize, 0)
	dataEnd := fileData
	if !last {
		next, _ := strconv.ParseInt(names[i+1][:20], 10, 64)
		dataEnd = next - base
		if fileData < dataEnd {
			sr.Damaged = append(sr.Damaged, problem("the file holds %d bytes of records, the next segment starts %d bytes on", fileData, dataEnd))
		}
	}
	sr.Bytes = dataEnd
	limit := min(fileData, dataEnd)
	data := make([]byte, limit)
	if _, err := f.ReadAt(data, segmentHeaderSize); err != nil && !errors.Is(err, io.EOF) {
		sr.Header = problem("read: %v", err)
		return sr
	}
	var heads []byte
	var pos int64
	badStart := int64(-1)
	var badWhy string
	var hints []recordMeta // as recovery keeps them (scanSegment)
	endBad := func(at int64) {
		if badStart >= 0 {
			for _, h := range hints {
				if q := queues[queueKey{h.topic, h.queue}]; q != nil && h.offset == q.Next {
					q.Lost = append(q.Lost, q.Next)
					q.Next++
				}
			}
			sr.Damaged = append(sr.Damaged, problem("bytes %d..%d (log position %d): %s; valid records follow (kept; the damaged offsets are never delivered, read as CORRUPT)",
				badStart, at, base+badStart, badWhy))
			badStart = -1
		}
	}
	validAt := func(p int64) (recordMeta, bool) {
		if p+8 > limit {
			return recordMeta{}, false
		}
		n, err := recordLen(data[p:], limit-p)
		if err != nil {
			return recordMeta{}, false
		}
		m, err := parseRecord(data[p : p+int64(n)])
		return m, err == nil && checkRecordQueue(m) == nil
	}
	for pos < limit {
		n, err := recordLen(data[pos:], limit-pos)
		if errors.Is(err, errZeros) && last && badStart < 0 {
			if !isZeros(data[pos:]) {
				sr.TornTail = problem("zeros at byte %d, then other bytes (open cuts them)", pos)
			}
			break
		}
		var m recordMeta
		ok := false
		if err == nil {
			m, ok = validAt(pos)
			if !ok {
				_, perr := parseRecord(data[pos : pos+int64(n)])
				if perr == nil {
					perr = checkRecordQueue(m)
				}
				err = perr
			}
		}
		if ok {
			q := queues[queueKey{m.topic, m.queue}]
			switch {
			case q == nil:
				q = &QueueReport{Topic: m.topic, Queue: m.queue, First: m.offset, Next: m.offset}
				queues[queueKey{m.topic, m.queue}] = q
			case m.offset < q.Next:
				ok, err = false, fmt.Errorf("%s/%d offset %d again after %d", m.topic, m.queue, m.offset, q.Next-1)
			}
			if ok {
				endBad(pos)
				for o := q.Next; o < m.offset; o++ {
					q.Lost = append(q.Lost, o)
				}
				q.Next, q.Records = m.offset+1, q.Records+1
				sr.Records++
				heads = append(heads, indexHead(data[pos:pos+int64(m.size)])...)
				pos += int64(m.size)
				continue
			}
		}
		if badStart < 0 {
			badStart, badWhy, hints = pos, err.Error(), nil
		}
		if err != nil && n > 0 {
			if h, ok := headerHint(data[pos : pos+int64(n)]); ok {
				hints = append(hints, h)
			}
		}
		next := int64(-1)
		if err != nil && n > 0 && pos+int64(n) <= limit {
			if _, ok := validAt(pos + int64(n)); ok || pos+int64(n) == limit {
				next = pos + int64(n)
			}
		}
		if next < 0 {
			var magic [4]byte
			binary.LittleEndian.PutUint32(magic[:], recordMagic)
			for p := pos + 1; p < limit; {
				j := bytes.Index(data[p:], magic[:])
				if j < 0 {
					break
				}
				if _, ok := validAt(p + int64(j)); ok {
					next = p + int64(j)
					break
				}
				p += int64(j) + 1
			}
		}
		if next < 0 {
			pos = limit
			break
		}
		pos = next
	}
	if badStart >= 0 {
		if last {
			sr.TornTail = problem("bytes %d..%d: %s; nothing valid follows (open cuts it)", badStart, limit, badWhy)
		} else {
			badWhy += ", to the end of the segment"
			endBad(limit)
		}
	}
	if !last {
		sr.Index = checkIndex(indexPath(path), base, dataEnd, heads, len(sr.Damaged) > 0, problem)
	} else {
		sr.Index = "none (the newest segment gets one once it is sealed)"
	}
	return sr
}

// checkIndex compares a sealed segment's index file with the record heads
// read from the log.
func checkIndex(path string, base, dataLen int64, heads []byte, damaged bool, problem func(string, ...any) string) string {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if damaged {
			return "none (a damaged segment gets none: open scans it)"
		}
		return "none (open scans the segment and writes one)"
	}
	if err != nil {
		return problem("cannot read %s: %v", path, err)
	}
	switch {
	case len(b) < indexHeaderSize+4 || string(b[:8]) != indexMagic:
		return problem("%s is not an index file (open ignores it and scans the segment)", path)
	case crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]):
		return problem("%s fails its checksum (open ignores it and scans the segment)", path)
	case binary.LittleEndian.Uint32(b[8:]) != formatVersion:
		return problem("%s has format version %d (open ignores it)", path, binary.LittleEndian.Uint32(b[8:]))
	case int64(binary.LittleEndian.Uint64(b[16:])) != base || int64(binary.LittleEndian.Uint64(b[24:])) != dataLen:
		return problem("%s describes base %d and %d bytes, the segment is base %d and %d bytes (open ignores it)",
			path, int64(binary.LittleEndian.Uint64(b[16:])), int64(binary.LittleEndian.Uint64(b[24:])), base, dataLen)
	case damaged:
		return "present: open reads it instead of scanning the segment, and the damaged records are answered CORRUPT when read"
	case !bytes.Equal(b[indexHeaderSize:len(b)-4], heads):
		return problem("%s does not match the segment's records (open uses it: reads of the differing records answer CORRUPT)", path)
	}
	return "ok"
}

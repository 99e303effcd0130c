package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/sdk"
)

var (
	_ sdk.Storage    = (*Store)(nil)
	_ sdk.WireReader = (*Store)(nil)
)

// Limits of the in-memory side.
const (
	// maxBuffered is how much appended data may wait for the flusher
	// before Append blocks (back-pressure when the disk falls behind).
	maxBuffered = 64 << 20
	// lingerMaxBytes ends a group commit wait early once this much is
	// buffered: one fsync will be worth it anyway.
	lingerMaxBytes = 4 << 20
	// lingerShare: a group commit waits for more appends at most the
	// last write+fsync time divided by this.
	lingerShare = 4
	// Read limits when a request leaves them at 0, and their caps (a read
	// must fit one gRPC message).
	defaultReadMessages = 1000
	defaultReadBytes    = 4 << 20
	maxReadBytes        = 64 << 20
)

// Store is a durable commit log; see the package doc. Create it with New and
// start it with Configure.
type Store struct {
	log hclog.Logger

	// createFile opens a new segment file; tests replace it to inject
	// faults (a full disk).
	createFile func(name string) (*os.File, error)
	// beforeSync, when set (tests only), runs in the flusher before each
	// fsync of the log.
	beforeSync func()

	cfg  Config
	dir  string
	lock *os.File

	// mu guards the log's in-memory state. Append holds it to assign
	// offsets and encode; Read holds it shared to look up positions; the
	// flusher holds it only to swap buffers, never across a syscall.
	mu         sync.RWMutex
	configured bool
	closed     bool
	segs       []*segment // in log order; the last is the one written to
	queues     map[queueKey]*queue
	apos       int64  // log position the next record gets
	buf        []byte // records in [wpos, apos), not yet written
	spareBuf   []byte // the flusher's other buffer
	bufMsgs    int    // messages in buf
	arrived    int    // messages appended since the last group commit
	kickAt     int    // >0: the flusher sleeps until arrived reaches it
	segRolled  bool   // a segment was sealed since the janitor looked

	// bufSync: buf holds an append that is not log_durable (flush sync
	// fsyncs it); syncWant: a Sync waits for the log to be fsynced up to
	// it (sync.go).
	bufSync  bool
	syncWant int64

	// The flusher goroutine owns wpos (written) and fpos (fsynced); it
	// publishes durable: what appends wait for and reads may see (fpos
	// for sync, wpos for async).
	wpos, fpos int64
	durable    atomic.Int64
	fsynced    atomic.Int64 // fpos, for the janitor
	dirty      []*segment   // written since their last fsync (flusher only)
	dirDirty   bool         // a segment was created since the last dir fsync

	// notify is closed and replaced whenever durable or failed change.
	// A waiter loads it before it looks at durable, and a publisher
	// stores durable before it swaps it, so no wake-up is missed.
	notify atomic.Pointer[chan struct{}]
	failed atomic.Pointer[error] // sticky: the log could not be written
	// written is wpos as the flusher publishes it after each write, before
	// the fsync: what AppendEarly's AppendWritten waits for. wnotify is
	// closed and replaced whenever written or failed change (as notify).
	written atomic.Int64
	wnotify atomic.Pointer[chan struct{}]

	spareReady bool // the preallocated spare segment exists (under mu)
	// Group commits and their bytes since the last roll (flusher counts,
	// preallocator reads).
	groupsSinceRoll, bytesSinceRoll atomic.Int64
	preallocKick                    chan struct{}
	preallocDone                    chan struct{}

	waiters      atomic.Int64 // appends waiting in wait
	deadlineDone chan struct{}

	kick        chan struct{} // wakes the flusher
	janitorKick chan struct{}
	stop        chan struct{} // closed by Close
	crashed     atomic.Bool   // CrashLoseUnflushed: the flusher writes nothing more
	flusherDone chan struct{}
	janitorDone chan struct{}

	// Counters for benchmarks and tests: fsyncs of the log and the
	// messages they made durable.
	fsyncs, fsyncedMsgs, lingerNanos, ioNanos, gapNanos, writeCalls atomic.Int64

	startsMu sync.Mutex // serialises rewrites of queues.json (retention, DeleteTopicData)
	// topicRet is the topics' own retention (topicretention.go), replaced
	// whole under topicRetMu.
	topicRetMu sync.Mutex
	topicRet   atomic.Pointer[map[string]topicRetention]
	offWriteMu sync.Mutex // serialises rewrites of the offsets file
	offWritten int64      // offVersion the file holds (under offWriteMu)
	offMu      sync.Mutex // guards offsets and offVersion
	offVersion int64      // counts updates of offsets
	offsets    map[string]map[queueKey]int64

	// A full disk (see full.go): life serialises Close with reopen;
	// closing is closed by Close; recovering is set while a goroutine
	// waits for space; loopsRunning (under life) tells whether the
	// background goroutines run; broken (under mu) is why a reopen
	// failed, and fullSince when the current full state began.
	life         sync.Mutex
	closing      chan struct{}
	recovering   atomic.Bool
	loopsRunning bool
	broken       error
	fullSince    atomic.Int64
	fullErr      atomic.Pointer[error]
	// epoch is the current life of the log in memory; reopen ends it.
	// An append's waits belong to the epoch it was made in.
	epoch atomic.Pointer[epoch]

	// What recovery found (set by open): the position where the last
	// damaged stretch starts (-1: none), how many stretches it skipped
	// and how many offsets they cost (holes, read as sdk.ErrCorrupt).
	lastBad          int64
	damagedStretches int
	holes            int
}

type queueKey struct {
	topic string
	queue int32
}

// queue is the in-memory index of one queue (RocketMQ's ConsumeQueue):
// entry i is the message with offset start+i.
type queue struct {
	key   queueKey
	start int64
	ents  []entry
	dedup dedup
	times timeIndex // sparse, for seeking by time (timeindex.go)
}

type entry struct {
	pos  int64 // global log position of the record
	size int32
}

func (q *queue) end() int64 { return q.start + int64(len(q.ents)) }

// visibleEnd is the end offset readers may see: entries before durable.
func (q *queue) visibleEnd(durable int64) int64 {
	n := len(q.ents)
	if n == 0 || q.ents[n-1].pos < durable {
		return q.start + int64(n)
	}
	return q.start + int64(sort.Search(n, func(i int) bool { return q.ents[i].pos >= durable }))
}

// segment is one commit log file. Its records cover [base, next segment's
// base); size counts the record bytes assigned to it so far.
type segment struct {
	base      int64
	path      string
	f         *os.File // nil until the flusher creates the file
	size      int64
	maxStored int64 // newest stored time of its records, Unix nanoseconds
	// refs counts the store's reference and those of reads in flight;
	// the file is closed when it drops to zero.
	refs atomic.Int32
	// durableHeader: the file and its directory entry are fsynced.
	durableHeader bool
	// heads collects the record heads for the segment's index file,
	// written once the segment is sealed and fsynced (under mu).
	heads []byte
	// damaged: recovery skipped damaged records in it; it gets no index
	// file and is scanned at every open.
	damaged bool
}

func (g *segment) release() {
	if g.refs.Add(-1) == 0 && g.f != nil {
		_ = g.f.Close()
	}
}

// New returns a store that does nothing until Configure.
func New() *Store {
	return &Store{
		log: hclog.New(&hclog.LoggerOptions{Name: "storage-file", Output: os.Stderr, JSONFormat: true, Level: hclog.Info}),
		createFile: func(name string) (*os.File, error) {
			return os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		},
	}
}

// Validate checks a config section without touching the disk.
func (s *Store) Validate(config []byte) sdk.Problems {
	_, ps := parseConfig(config)
	return ps
}

// Configure opens (or creates) the store and recovers it: see recover.go.
// Called once, before any other call.
func (s *Store) Configure(ctx context.Context, config []byte, env *sdk.Environment) error {
	cfg, ps := parseConfig(config)
	if len(ps) > 0 {
		return ps
	}
	dir := cfg.Dir
	if dir == "" {
		if env.GetDataDir() == "" {
			return sdk.Problems{{Path: "dir", Message: "not set, and the broker gave no data_dir"}}
		}
		dir = filepath.Join(env.GetDataDir(), dirName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.configured || s.closed {
		return fmt.Errorf("storage-file: Configure called twice")
	}
	s.cfg, s.dir = cfg, dir
	if err := s.open(); err != nil {
		return err
	}
	s.configured = true
	notify := make(chan struct{})
	s.notify.Store(&notify)
	wnotify := make(chan struct{})
	s.wnotify.Store(&wnotify)
	s.closing = make(chan struct{})
	s.epoch.Store(&epoch{})
	s.startLoops()
	return nil
}

// epoch is one life of the log in memory, from Configure or a reopen to the
// next reopen. When reopen ends it, final is the position that was durable
// (what an append of the epoch may still be answered with) and err the
// failure that ended it.
type epoch struct {
	over           atomic.Bool
	final, written int64 // durable and written positions at its end
	err            error
}

// outcome answers a wait of an ended epoch for data up to end: durable, or
// (early) only written.
func (e *epoch) outcome(end int64, offsets []int64, early bool) ([]int64, error) {
	if end <= e.final || (early && end <= e.written) {
		return offsets, nil
	}
	return nil, e.err
}

// startLoops starts a generation of the background goroutines (flusher,
// deadline ticker, preallocator, janitor). Called by Configure and by
// reopen, with mu held.
func (s *Store) startLoops() {
	s.kick = make(chan struct{}, 1)
	s.janitorKick = make(chan struct{}, 1)
	s.stop = make(chan struct{})
	s.flusherDone = make(chan struct{})
	s.janitorDone = make(chan struct{})
	s.preallocKick = make(chan struct{}, 1)
	s.preallocDone = make(chan struct{})
	s.deadlineDone = make(chan struct{})
	go s.flushLoop()
	go s.deadlineLoop()
	if s.cfg.preallocate() {
		go s.preallocator()
	} else {
		close(s.preallocDone)
	}
	go s.janitor()
	s.loopsRunning = true
}

// stopLoops stops the background goroutines and waits for them; a no-op
// when none run. Called by Close, CrashLoseUnflushed and reopen, with life
// held and mu not held.
func (s *Store) stopLoops() {
	if !s.loopsRunning {
		return
	}
	s.loopsRunning = false
	close(s.stop)
	<-s.flusherDone
	<-s.janitorDone
	<-s.preallocDone
	<-s.deadlineDone
}

// usable reports why the store cannot serve a call; called with mu held.
func (s *Store) usable() error {
	switch {
	case s.closed:
		return fmt.Errorf("storage-file: %w", sdk.ErrClosed)
	case !s.configured:
		return fmt.Errorf("storage-file: %w", sdk.ErrNotConfigured)
	case s.broken != nil:
		// A reopen after a full disk failed: nothing is loaded.
		return s.broken
	}
	return nil
}

func checkQueue(topic string, queue int32) error {
	switch {
	case topic == "":
		return fmt.Errorf("%w: empty topic", sdk.ErrInvalidArgument)
	case len(topic) > maxNameLen:
		return fmt.Errorf("%w: topic longer than %d bytes", sdk.ErrInvalidArgument, maxNameLen)
	case queue < 0:
		return fmt.Errorf("%w: negative queue %d of topic %q", sdk.ErrInvalidArgument, queue, topic)
	}
	return nil
}

// Append assigns offsets and encodes msgs into the write buffer; the flusher
// writes and fsyncs it. Called from one goroutine, in the broker's order.
// It blocks only when maxBuffered bytes already wait for the disk.
func (s *Store) Append(ctx context.Context, msgs []*sdk.Message) (sdk.AppendWait, error) {
	_, wait, err := s.AppendEarly(ctx, msgs)
	return wait, err
}

// AppendEarly is Append that also tells the batch's offsets once the flusher
// wrote it to the segment files (the page cache: a kill of this process
// loses nothing from then on), before its fsync (sdk.EarlyOffsets). The
// offsets are the ones Append assigned, which AppendWait returns too.
func (s *Store) AppendEarly(ctx context.Context, msgs []*sdk.Message) (sdk.AppendWritten, sdk.AppendWait, error) {
	return s.appendBatch(ctx, decodedBatch(msgs))
}

// AppendWire is AppendEarly of messages in their wire form
// (sdk.WireAppender): each one's bytes are its record's message as they
// are, which saves decoding and encoding it again.
func (s *Store) AppendWire(ctx context.Context, msgs []sdk.WireAppend) (sdk.AppendWritten, sdk.AppendWait, error) {
	return s.appendBatch(ctx, wireBatch(msgs))
}

// appendSource is a batch of messages to append: decoded (AppendEarly) or
// in their wire form (AppendWire).
type appendSource interface {
	count() int
	// meta returns message i's topic, id and queue; topic and id may
	// alias the request (valid during the call only).
	meta(i int) (topic, id string, queue int32)
	check(i, limit int) error
	put(buf []byte, i int, offset, stored int64) ([]byte, error)
}

type decodedBatch []*sdk.Message

func (b decodedBatch) count() int { return len(b) }
func (b decodedBatch) meta(i int) (string, string, int32) {
	return b[i].GetTopic(), b[i].GetId(), b[i].GetQueue()
}
func (b decodedBatch) check(i, limit int) error {
	m := b[i]
	if err := checkUTF8(m); err != nil {
		return err
	}
	if sizeBound(m) > limit && recordSize(m) > limit {
		return fmt.Errorf("%w: %d bytes encoded, more than segment_bytes allows (%d)", sdk.ErrInvalidArgument, recordSize(m), limit)
	}
	return nil
}
func (b decodedBatch) put(buf []byte, i int, offset, stored int64) ([]byte, error) {
	return appendRecord(buf, b[i], offset, stored)
}

// wireBatch's messages passed sdk.MessageWire (UTF-8 strings included).
type wireBatch []sdk.WireAppend

func (b wireBatch) count() int { return len(b) }
func (b wireBatch) meta(i int) (string, string, int32) {
	w := &b[i].Info
	return unsafe.String(unsafe.SliceData(w.Topic), len(w.Topic)), unsafe.String(unsafe.SliceData(w.ID), len(w.ID)), w.Queue
}
func (b wireBatch) check(i, limit int) error {
	w := &b[i]
	if n := recordHeaderSize + len(w.Info.Topic) + len(w.Info.ID) + len(w.Wire); n > limit {
		return fmt.Errorf("%w: %d bytes encoded, more than segment_bytes allows (%d)", sdk.ErrInvalidArgument, n, limit)
	}
	return nil
}
func (b wireBatch) put(buf []byte, i int, offset, stored int64) ([]byte, error) {
	return appendWireRecord(buf, &b[i], offset, stored), nil
}

// appendBatch is AppendEarly of msgs.
func (s *Store) appendBatch(ctx context.Context, msgs appendSource) (sdk.AppendWritten, sdk.AppendWait, error) {
	s.mu.RLock()
	err := s.usable()
	limit := int(s.cfg.SegmentBytes) - segmentHeaderSize
	s.mu.RUnlock()
	if err != nil {
		return nil, nil, err
	}
	n := msgs.count()
	for i := range n {
		topic, id, queue := msgs.meta(i)
		if err := checkQueue(topic, queue); err != nil {
			return nil, nil, fmt.Errorf("message %d: %w", i, err)
		}
		if len(id) > maxNameLen {
			return nil, nil, fmt.Errorf("message %d: %w: id longer than %d bytes", i, sdk.ErrInvalidArgument, maxNameLen)
		}
		if err := msgs.check(i, limit); err != nil {
			return nil, nil, fmt.Errorf("message %d: %w", i, err)
		}
	}
	if n == 0 {
		// Also the broker's probe of a full store: answered with the
		// sticky failure while there is one.
		if err := s.failure(); err != nil {
			return nil, nil, err
		}
		return sdk.Written([]int64{}), sdk.Appended([]int64{}), nil
	}
	started := time.Now()
	s.mu.Lock()
	if err := s.usable(); err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	for len(s.buf) > maxBuffered {
		ch, err := s.waitState()
		if err != nil {
			s.mu.Unlock()
			return nil, nil, err
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("storage-file: waiting for the disk to catch up: %w", ctx.Err())
		}
		s.mu.Lock()
		if err := s.usable(); err != nil {
			s.mu.Unlock()
			return nil, nil, err
		}
	}
	if err := s.failure(); err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	offsets := make([]int64, n)
	stored := started.UnixNano()
	var q *queue
	added := 0
	for i := range n {
		topic, id, queue := msgs.meta(i)
		if q == nil || q.key.topic != topic || q.key.queue != queue {
			q = s.queueFor(queueKey{topic, queue})
		}
		var idHash uint64
		if id != "" {
			idHash = dedupHash(id)
			if off, ok := q.dedup.lookup(idHash, id); ok {
				offsets[i] = off
				continue
			}
		}
		at := len(s.buf)
		buf, err := msgs.put(s.buf, i, q.end(), stored)
		if err != nil {
			// checkUTF8 rules out what proto refuses to encode; if
			// it still fails, earlier messages of the batch are
			// assigned already, so the store stops rather than
			// break "nothing of msgs was stored".
			err = fmt.Errorf("storage-file: message %d: %w", i, err)
			s.fail(err)
			s.mu.Unlock()
			return nil, nil, err
		}
		s.buf = buf
		size := int64(len(buf) - at)
		active := s.segs[len(s.segs)-1]
		if active.size > 0 && segmentHeaderSize+active.size+size > int64(s.cfg.SegmentBytes) {
			active = &segment{base: s.apos, path: filepath.Join(s.dir, fmt.Sprintf(segmentNameFormat, s.apos))}
			active.refs.Store(1)
			s.segs = append(s.segs, active)
			s.segRolled = true
		}
		active.size += size
		active.maxStored = stored
		if !active.damaged {
			active.heads = appendHead(active.heads, indexHead(buf[at:]))
		}
		offsets[i] = q.end()
		if len(q.ents) == cap(q.ents) {
			q.ents = slices.Grow(q.ents, max(len(q.ents), 1024)) // doubling, as appendHead
		}
		q.ents = append(q.ents, entry{pos: s.apos, size: int32(size)})
		q.times.note(offsets[i], stored)
		if id != "" {
			q.dedup.add(idHash, id, offsets[i]) // copied
		}
		s.apos += size
		added++
	}
	end := s.apos
	s.bufMsgs += added
	s.arrived += added
	if !sdk.LogDurable(ctx) {
		s.bufSync = true // log_durable appends alone need no fsync (sync.go)
	}
	if s.kickAt > 0 && (s.arrived >= s.kickAt || len(s.buf) >= lingerMaxBytes) {
		s.kickAt = 0
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if s.segRolled {
		select {
		case s.janitorKick <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	deadline := started.Add(time.Duration(s.cfg.FlushTimeout))
	ep := s.epoch.Load()
	return func(ctx context.Context) ([]int64, error) { return s.waitWritten(ctx, ep, end, offsets) },
		func(ctx context.Context) ([]int64, error) { return s.wait(ctx, ep, end, deadline, offsets) }, nil
}

func (s *Store) queueFor(k queueKey) *queue {
	q := s.queues[k]
	if q == nil {
		k.topic = strings.Clone(k.topic) // the caller's may alias a request
		q = &queue{key: k}
		s.queues[k] = q
	}
	return q
}

// wait blocks until the log is durable up to end (see Store.durable), ctx
// ends or the flush deadline passes. It uses no timer of its own: while
// anyone waits, deadlineLoop wakes the waiters now and then to look at the
// clock.
func (s *Store) wait(ctx context.Context, ep *epoch, end int64, deadline time.Time, offsets []int64) ([]int64, error) {
	for {
		ch, err := s.waitState()
		// reopen ends the epoch before it sets durable anew: a durable
		// position of the next epoch is never taken for this one's.
		if d := s.durable.Load(); ep.over.Load() {
			return ep.outcome(end, offsets, false)
		} else if d >= end {
			return offsets, nil
		}
		if err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return offsets, fmt.Errorf("%w: not flushed within flush_timeout %s", sdk.ErrFlushTimeout, time.Duration(s.cfg.FlushTimeout))
		}
		s.waiters.Add(1)
		select {
		case <-ch:
			s.waiters.Add(-1)
		case <-ctx.Done():
			s.waiters.Add(-1)
			return offsets, fmt.Errorf("%w: %v", sdk.ErrFlushTimeout, ctx.Err())
		}
	}
}

// deadlineLoop wakes waiters often enough for flush_timeout to be kept within
// a tenth of it.
func (s *Store) deadlineLoop() {
	defer close(s.deadlineDone)
	tick := time.NewTicker(min(max(time.Duration(s.cfg.FlushTimeout)/10, time.Millisecond), 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			if s.waiters.Load() > 0 {
				s.wake()
			}
		}
	}
}

// waitState returns the channel closed at the next change of durable, and
// the store's sticky failure.
func (s *Store) waitState() (chan struct{}, error) {
	ch := s.notify.Load()
	if err := s.failed.Load(); err != nil {
		return *ch, *err
	}
	return *ch, nil
}

func (s *Store) failure() error {
	_, err := s.waitState()
	return err
}

// Read returns messages of one queue that are as durable as the flush policy
// demands. Called concurrently; it reads the files without holding the lock.
func (s *Store) Read(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	var msgs []*sdk.Message
	resp, err := s.readRecords(ctx, req, func(n int) { msgs = make([]*sdk.Message, 0, n) },
		func(rec []byte, off int64) error {
			m, err := decodeRecord(rec, req.Topic)
			if err == nil && (m.Offset != off || m.Topic != req.Topic || m.Queue != req.Queue) {
				err = fmt.Errorf("it holds %s/%d@%d, the index says %s/%d@%d", m.Topic, m.Queue, m.Offset, req.Topic, req.Queue, off)
			}
			if err == nil {
				msgs = append(msgs, m)
			}
			return err
		})
	if resp != nil {
		resp.Messages = msgs
	}
	return resp, err
}

// ReadWire is Read with the messages in their wire form (sdk.WireReader):
// each record's message as appendRecord encoded it, and the queue, offset
// and time of storing from the record's header, which win over what the
// encoding holds. The record is checked (its checksum, and that it is the
// record the index says) but its message is not decoded.
func (s *Store) ReadWire(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, []sdk.WireMessage, error) {
	var msgs []sdk.WireMessage
	resp, err := s.readRecords(ctx, req, func(n int) { msgs = make([]sdk.WireMessage, 0, n) },
		func(rec []byte, off int64) error {
			tl, il, err := checkRecord(rec)
			if err != nil {
				return err
			}
			topic := rec[recordHeaderSize : recordHeaderSize+tl]
			queue := int32(binary.LittleEndian.Uint32(rec[16:]))
			offset := int64(binary.LittleEndian.Uint64(rec[20:]))
			if offset != off || queue != req.Queue || string(topic) != req.Topic {
				return fmt.Errorf("it holds %s/%d@%d, the index says %s/%d@%d", topic, queue, offset, req.Topic, req.Queue, off)
			}
			msgs = append(msgs, sdk.WireMessage{Wire: rec[recordHeaderSize+tl+il:], Queue: queue, Offset: offset,
				Stored: int64(binary.LittleEndian.Uint64(rec[28:]))})
			return nil
		})
	if err != nil {
		return nil, nil, err
	}
	return resp, msgs, nil
}

// readRecords finds the records of a read (as durable as the flush policy
// demands, within its limits), reads them and hands each to each, in order,
// with the offset the index gives it; start is told how many there are
// first. A record each refuses ends the read: the records before it are
// answered, and when it is the first the read fails with ErrCorrupt (the
// next read, from its offset, answers for it alone).
func (s *Store) readRecords(ctx context.Context, req *sdk.ReadRequest, start func(n int), each func(rec []byte, off int64) error) (*sdk.ReadResponse, error) {
	if err := checkQueue(req.GetTopic(), req.GetQueue()); err != nil {
		return nil, err
	}
	maxMsgs := int(req.MaxMessages)
	if maxMsgs <= 0 {
		maxMsgs = defaultReadMessages
	}
	maxBytes := req.MaxBytes
	if maxBytes <= 0 {
		maxBytes = defaultReadBytes
	}
	maxBytes = min(maxBytes, maxReadBytes)

	s.mu.RLock()
	if err := s.usable(); err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	resp := &sdk.ReadResponse{Offsets: &sdk.QueueOffsets{Topic: req.Topic, Queue: req.Queue, Committed: -1}}
	q := s.queues[queueKey{req.Topic, req.Queue}]
	if q == nil {
		s.mu.RUnlock()
		start(0)
		return resp, nil
	}
	vend := q.visibleEnd(s.durable.Load())
	resp.Offsets.Start, resp.Offsets.End = q.start, vend
	from := max(req.Offset, q.start)
	var ents []entry
	var total int64
	for off := from; off < vend && len(ents) < maxMsgs; off++ {
		e := q.ents[off-q.start]
		if e.size == 0 {
			// A hole: recovery found this offset's record
			// damaged. Answered alone, so that what precedes it
			// is delivered first.
			if len(ents) == 0 {
				s.mu.RUnlock()
				return nil, fmt.Errorf("%w: %s/%d offset %d: its record was damaged on disk (log position %d) and skipped by recovery; "+
					"see `ferry storage check %s`", sdk.ErrCorrupt, req.Topic, req.Queue, off, e.pos, s.dir)
			}
			break
		}
		if len(ents) > 0 && total+int64(e.size) > maxBytes {
			break
		}
		ents = append(ents, e)
		total += int64(e.size)
	}
	runs := s.planReads(ents)
	s.mu.RUnlock()
	defer func() {
		for _, r := range runs {
			r.seg.release()
		}
	}()

	start(len(ents))
	read := 0
	for _, r := range runs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		buf := make([]byte, r.bytes)
		if _, err := r.seg.f.ReadAt(buf, segmentHeaderSize+r.ents[0].pos-r.seg.base); err != nil {
			return nil, fmt.Errorf("storage-file: read %s: %w", r.seg.path, err)
		}
		for _, e := range r.ents {
			off := from + int64(read)
			if err := each(buf[:e.size:e.size], off); err != nil {
				if read > 0 {
					// The messages before it go out; the
					// next read, from its offset, answers
					// for it alone.
					return resp, nil
				}
				s.log.Error("corrupt record not delivered", "segment", r.seg.path, "position", e.pos, "topic", req.Topic, "queue", req.Queue, "offset", off, "error", err)
				return nil, fmt.Errorf("%w: %s/%d offset %d: %s at log position %d: %v", sdk.ErrCorrupt, req.Topic, req.Queue, off, r.seg.path, e.pos, err)
			}
			buf = buf[e.size:]
			read++
		}
	}
	return resp, nil
}

// readRun is a stretch of adjacent records in one segment, read with one
// ReadAt.
type readRun struct {
	seg   *segment
	ents  []entry
	bytes int64
}

// planReads groups entries into runs and takes a reference on each run's
// segment. Called with mu held.
func (s *Store) planReads(ents []entry) []readRun {
	var runs []readRun
	for i, e := range ents {
		if n := len(runs); n > 0 {
			r := &runs[n-1]
			last := r.ents[len(r.ents)-1]
			if last.pos+int64(last.size) == e.pos && s.segmentAt(e.pos) == r.seg {
				r.ents = ents[i-len(r.ents) : i+1]
				r.bytes += int64(e.size)
				continue
			}
		}
		seg := s.segmentAt(e.pos)
		seg.refs.Add(1)
		runs = append(runs, readRun{seg: seg, ents: ents[i : i+1], bytes: int64(e.size)})
	}
	return runs
}

// segmentAt returns the segment holding log position pos. Called with mu held.
func (s *Store) segmentAt(pos int64) *segment {
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].base > pos })
	return s.segs[i-1]
}

// CommitOffsets records a group's next offsets and returns once they are on
// disk (the offsets file is rewritten atomically). Called concurrently.
func (s *Store) CommitOffsets(ctx context.Context, group string, offsets []*sdk.GroupOffset) error {
	if group == "" {
		return fmt.Errorf("%w: empty group", sdk.ErrInvalidArgument)
	}
	for _, o := range offsets {
		if err := checkQueue(o.GetTopic(), o.GetQueue()); err != nil {
			return err
		}
		if o.Offset < 0 {
			return fmt.Errorf("%w: negative offset %d for %s/%d", sdk.ErrInvalidArgument, o.Offset, o.Topic, o.Queue)
		}
	}
	s.mu.RLock()
	err := s.usable()
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	s.offMu.Lock()
	g := s.offsets[group]
	if g == nil {
		g = make(map[queueKey]int64)
		s.offsets[group] = g
	}
	for _, o := range offsets {
		g[queueKey{o.Topic, o.Queue}] = o.Offset
	}
	s.offVersion++
	mine := s.offVersion
	s.offMu.Unlock()

	// Group commit of the offsets file: one writer at a time writes the
	// latest state; a commit whose update a write already covered returns
	// without writing again.
	s.offWriteMu.Lock()
	defer s.offWriteMu.Unlock()
	if s.offWritten >= mine {
		return nil
	}
	s.mu.RLock()
	err = s.usable()
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	return s.writeOffsets()
}

// writeOffsets rewrites the offsets file with the latest state. Called with
// offWriteMu held, or by open.
func (s *Store) writeOffsets() error {
	s.offMu.Lock()
	version := s.offVersion
	snapshot := offsetsFile{Version: formatVersion, Groups: make(map[string][]queueOffsetJSON, len(s.offsets))}
	for name, m := range s.offsets {
		snapshot.Groups[name] = sortedOffsets(m)
	}
	s.offMu.Unlock()
	if err := writeState(s.dir, offsetsFileName, snapshot); err != nil {
		return err
	}
	s.offWritten = version
	return nil
}

// GetOffsets reports each queue's start, visible end and the group's
// committed offset. Called concurrently.
func (s *Store) GetOffsets(ctx context.Context, group string, queues []*sdk.QueueRef) ([]*sdk.QueueOffsets, error) {
	for _, r := range queues {
		if err := checkQueue(r.GetTopic(), r.GetQueue()); err != nil {
			return nil, err
		}
	}
	out := make([]*sdk.QueueOffsets, len(queues))
	s.mu.RLock()
	if err := s.usable(); err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	durable := s.durable.Load()
	for i, r := range queues {
		o := &sdk.QueueOffsets{Topic: r.Topic, Queue: r.Queue, Committed: -1}
		if q := s.queues[queueKey{r.Topic, r.Queue}]; q != nil {
			o.Start, o.End = q.start, q.visibleEnd(durable)
		}
		out[i] = o
	}
	s.mu.RUnlock()
	if group != "" {
		s.offMu.Lock()
		for _, o := range out {
			if off, ok := s.offsets[group][queueKey{o.Topic, o.Queue}]; ok {
				o.Committed = off
			}
		}
		s.offMu.Unlock()
	}
	return out, nil
}

// Close flushes and fsyncs everything appended, stops the background
// goroutines and releases the directory lock. Appends still waiting are
// answered by the final flush. Called once.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed || !s.configured {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.closing)
	s.life.Lock()
	defer s.life.Unlock()
	s.stopLoops()
	err := s.failure()
	if err == nil {
		// Everything is fsynced now: index the sealed segments the
		// janitor had not got to, so the next open reads no segment
		// but the last.
		if ierr := s.writeSealedIndexes(); ierr != nil {
			s.log.Warn("segment index", "error", ierr)
		}
	}
	s.mu.Lock()
	if err == nil && len(s.segs) > 0 && s.segs[len(s.segs)-1].f != nil {
		// Cut the zeros a preallocated segment has after its data, so
		// that a closed store's newest file ends with its newest record.
		g := s.segs[len(s.segs)-1]
		if st, serr := g.f.Stat(); serr == nil && st.Size() > segmentHeaderSize+g.size {
			err = g.f.Truncate(segmentHeaderSize + g.size)
			if err == nil {
				err = syncFile(g.f)
			}
		}
	}
	for _, g := range s.segs {
		g.release()
	}
	s.segs = nil
	s.mu.Unlock()
	// A commit that passed its closed check finishes before the lock goes.
	s.offWriteMu.Lock()
	var cerr error
	if s.lock != nil { // nil after a failed reopen
		cerr = s.lock.Close()
	}
	s.offWriteMu.Unlock()
	if err == nil {
		err = cerr
	}
	if errors.Is(err, sdk.ErrClosed) {
		err = nil
	}
	return err
}

// fail makes err the store's sticky failure and wakes every waiter. A full
// disk starts the goroutine that reopens the store once there is space.
func (s *Store) fail(err error) {
	first := s.failed.CompareAndSwap(nil, &err)
	// Full is true before any waiter sees the failure.
	start := first && errors.Is(err, sdk.ErrFull) && s.recovering.CompareAndSwap(false, true)
	if start {
		s.fullErr.Store(&err)
		s.fullSince.Store(time.Now().UnixNano())
	}
	s.wake()
	s.wakeWritten()
	if start {
		go s.recoverWhenSpace()
	}
}

// advance publishes a new durable position and wakes every waiter.
func (s *Store) advance(pos int64) {
	s.durable.Store(pos)
	s.wake()
}

// wake wakes every waiter, to look at durable, failed and the clock again.
func (s *Store) wake() {
	ch := make(chan struct{})
	close(*s.notify.Swap(&ch))
}

// checkUTF8 rejects what protobuf refuses to encode: strings that are not
// UTF-8.
func checkUTF8(m *sdk.Message) error {
	ok := utf8.ValidString(m.Topic) && utf8.ValidString(m.Id) && utf8.ValidString(m.Key)
	for k, v := range m.Headers {
		ok = ok && utf8.ValidString(k) && utf8.ValidString(v)
	}
	if !ok {
		return fmt.Errorf("%w: topic, id, key and headers must be UTF-8", sdk.ErrInvalidArgument)
	}
	return nil
}

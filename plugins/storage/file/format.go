package file

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/ferrymq/ferry/core/sdk"
)

// On-disk names and format. Every number here is part of the format: change
// one and bump formatVersion.
const (
	// dirName is the store's directory under the broker's data dir.
	dirName = "storage-file"
	// lockFileName is flock'ed while a process has the store open.
	lockFileName = "LOCK"
	// segmentSuffix ends every commit log segment; the name is the global
	// log position of its first record, zero-padded ("%020d.log") so that
	// names sort in log order.
	segmentSuffix     = ".log"
	segmentNameFormat = "%020d" + segmentSuffix
	// offsetsFileName holds the committed offsets of consumer groups.
	offsetsFileName = "offsets.json"
	// queuesFileName holds each queue's first offset, written before
	// retention deletes a segment so that a queue whose messages all
	// expired keeps its offsets across a restart.
	queuesFileName = "queues.json"
	// spareFileName is a preallocated (zero-filled, fsynced) file of
	// segment_bytes, renamed to the next segment when the log rolls.
	spareFileName = "next-segment.zero"
	// tmpSuffix marks a file being written for an atomic rename.
	tmpSuffix = ".tmp"

	// formatVersion is the version of the segment and record format.
	formatVersion = 1

	// Segment header (little-endian):
	//   0  [8]byte magic "FERRYLOG"
	//   8  u32     format version
	//   12 u32     header size (32)
	//   16 u64     base: global log position of the first record
	//   24 u32     CRC32C of bytes [0, 24)
	//   28 u32     reserved, zero
	segmentMagic      = "FERRYLOG"
	segmentHeaderSize = 32

	// Record (little-endian); records follow each other without padding:
	//   0  u32 magic recordMagic
	//   4  u32 size of the whole record, header included
	//   8  u32 CRC32C of bytes [12, size)
	//   12 u8  kind (kindMessage)
	//   13 u8  flags, zero
	//   14 u16 topic length
	//   16 i32 queue
	//   20 i64 offset within the queue
	//   28 i64 stored time, Unix nanoseconds
	//   36 u16 id length
	//   38 topic bytes, id bytes, then the Message in protobuf encoding
	// Header fields are authoritative over the same fields in the protobuf.
	recordMagic      uint32 = 0x43455246 // "FREC"
	recordHeaderSize        = 38
	kindMessage             = 1
	maxNameLen              = 1<<16 - 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrIncompatible: the directory holds a store this build cannot read (another
// format version, or files that are not Ferry segments).
var ErrIncompatible = errors.New("incompatible store format")

func segmentHeader(base int64) []byte {
	h := make([]byte, segmentHeaderSize)
	copy(h, segmentMagic)
	binary.LittleEndian.PutUint32(h[8:], formatVersion)
	binary.LittleEndian.PutUint32(h[12:], segmentHeaderSize)
	binary.LittleEndian.PutUint64(h[16:], uint64(base))
	binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(h[:24], castagnoli))
	return h
}

// errTornHeader: a segment header is incomplete or fails its checksum, which
// a crash while creating the newest segment, or damage, can leave.
var errTornHeader = errors.New("torn or damaged segment header")

// parseSegmentHeader checks a segment header and returns its base. A header
// whose checksum holds but whose magic or version is not this build's is
// ErrIncompatible; one that fails its checksum is errTornHeader (damage: the
// caller decides from the records whether the file is a segment).
func parseSegmentHeader(h []byte) (int64, error) {
	if len(h) < segmentHeaderSize || isZeros(h) {
		// Short, or a preallocated file renamed into place whose
		// header was not written yet.
		return 0, errTornHeader
	}
	if crc32.Checksum(h[:24], castagnoli) != binary.LittleEndian.Uint32(h[24:]) {
		return 0, fmt.Errorf("%w: checksum mismatch", errTornHeader)
	}
	if string(h[:8]) != segmentMagic {
		return 0, fmt.Errorf("%w: not a Ferry commit log segment (bad magic %q)", ErrIncompatible, h[:8])
	}
	if v := binary.LittleEndian.Uint32(h[8:]); v != formatVersion {
		return 0, fmt.Errorf("%w: segment format version %d, this build reads version %d", ErrIncompatible, v, formatVersion)
	}
	return int64(binary.LittleEndian.Uint64(h[16:])), nil
}

func isZeros(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// recordSize is the encoded size of m, used to check limits before a batch
// changes anything.
func recordSize(m *sdk.Message) int {
	return recordHeaderSize + len(m.Topic) + len(m.Id) + m.SizeVT()
}

// sizeBound is at least recordSize(m), without encoding: each protobuf field
// costs at most a tag byte and a 10-byte length or varint.
func sizeBound(m *sdk.Message) int {
	n := recordHeaderSize + 2*(len(m.Topic)+len(m.Id)) + len(m.Key) + len(m.Body) + 9*11
	for k, v := range m.Headers {
		n += len(k) + len(v) + 3*11
	}
	return n
}

// appendRecord encodes m with its assigned offset and stored time at the end
// of buf.
func appendRecord(buf []byte, m *sdk.Message, offset, stored int64) ([]byte, error) {
	// The message in protobuf's encoding, by vtprotobuf's generated code
	// (reflection-free: protobuf-go's encoder was a tenth of the storage
	// plugin's CPU under async produce); protobuf-go decodes it.
	return appendRecordOf(buf, m.Topic, m.Id, m.Queue, offset, stored, m.SizeVT(), func(b []byte) error {
		if _, err := m.MarshalToSizedBufferVT(b); err != nil {
			return fmt.Errorf("%w: encode message: %v", sdk.ErrInvalidArgument, err)
		}
		return nil
	})
}

// appendWireRecord is appendRecord of a message in its wire form: its bytes
// are the record's message as they are.
func appendWireRecord(buf []byte, w *sdk.WireAppend, offset, stored int64) []byte {
	buf, _ = appendRecordOf(buf, w.Info.Topic, w.Info.ID, w.Info.Queue, offset, stored, len(w.Wire), func(b []byte) error {
		copy(b, w.Wire)
		return nil
	})
	return buf
}

// appendRecordOf appends a record of a message of topic, id and queue at
// the end of buf: the header, topic and id, then size bytes of the message's
// encoding, which put writes.
func appendRecordOf[S string | []byte](buf []byte, topic, id S, queue int32, offset, stored int64, size int, put func([]byte) error) ([]byte, error) {
	start := len(buf)
	buf = slices.Grow(buf, recordHeaderSize+len(topic)+len(id)+size)
	buf = buf[:start+recordHeaderSize]
	buf = append(buf, topic...)
	buf = append(buf, id...)
	at := len(buf)
	buf = buf[:at+size]
	if err := put(buf[at:]); err != nil {
		return buf[:start], err
	}
	h := buf[start:]
	binary.LittleEndian.PutUint32(h[0:], recordMagic)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(h)))
	h[12] = kindMessage
	h[13] = 0
	binary.LittleEndian.PutUint16(h[14:], uint16(len(topic)))
	binary.LittleEndian.PutUint32(h[16:], uint32(queue))
	binary.LittleEndian.PutUint64(h[20:], uint64(offset))
	binary.LittleEndian.PutUint64(h[28:], uint64(stored))
	binary.LittleEndian.PutUint16(h[36:], uint16(len(id)))
	binary.LittleEndian.PutUint32(h[8:], crc32.Checksum(h[12:], castagnoli))
	return buf, nil
}

// recordMeta is what recovery needs of a record without decoding its message.
type recordMeta struct {
	size   int
	topic  string
	queue  int32
	offset int64
	stored int64
	id     string
}

// Reasons a record is rejected; recovery stops at the first one.
var (
	errTornRecord = errors.New("torn record")
	errBadRecord  = errors.New("record fails its checksum")
)

// errZeros: zeros where a record would start, the end of the data in a
// preallocated segment.
var errZeros = errors.New("zeros (end of data)")

// recordLen reads the size field of a record header, checking its magic.
// avail is how many bytes the file holds from the record on.
func recordLen(h []byte, avail int64) (int, error) {
	if len(h) < 8 {
		return 0, errTornRecord
	}
	if binary.LittleEndian.Uint64(h) == 0 {
		return 0, errZeros
	}
	if binary.LittleEndian.Uint32(h) != recordMagic {
		return 0, fmt.Errorf("%w: bad magic", errBadRecord)
	}
	n := int64(binary.LittleEndian.Uint32(h[4:]))
	if n < recordHeaderSize {
		return 0, fmt.Errorf("%w: size %d", errBadRecord, n)
	}
	if n > avail {
		return 0, errTornRecord
	}
	return int(n), nil
}

// parseRecord checks one whole record (rec is exactly its bytes).
func parseRecord(rec []byte) (recordMeta, error) {
	tl, il, err := checkRecord(rec)
	if err != nil {
		return recordMeta{}, err
	}
	return recordMeta{
		size:   len(rec),
		topic:  string(rec[recordHeaderSize : recordHeaderSize+tl]),
		queue:  int32(binary.LittleEndian.Uint32(rec[16:])),
		offset: int64(binary.LittleEndian.Uint64(rec[20:])),
		stored: int64(binary.LittleEndian.Uint64(rec[28:])),
		id:     string(rec[recordHeaderSize+tl : recordHeaderSize+tl+il]),
	}, nil
}

// checkRecord checks one whole record's header and checksum and returns
// the lengths of its topic and id.
func checkRecord(rec []byte) (tl, il int, err error) {
	if len(rec) < recordHeaderSize {
		return 0, 0, errTornRecord
	}
	if binary.LittleEndian.Uint32(rec) != recordMagic || int(binary.LittleEndian.Uint32(rec[4:])) != len(rec) {
		return 0, 0, fmt.Errorf("%w: bad header", errBadRecord)
	}
	if crc32.Checksum(rec[12:], castagnoli) != binary.LittleEndian.Uint32(rec[8:]) {
		return 0, 0, fmt.Errorf("%w: CRC mismatch", errBadRecord)
	}
	tl = int(binary.LittleEndian.Uint16(rec[14:]))
	il = int(binary.LittleEndian.Uint16(rec[36:]))
	if rec[12] != kindMessage || recordHeaderSize+tl+il > len(rec) {
		return 0, 0, fmt.Errorf("%w: bad kind or lengths", errBadRecord)
	}
	return tl, il, nil
}

// decodeRecord checks a record and decodes its message. A record that fails
// is ErrCorrupt: it is never delivered.
//
// The message's body aliases rec, which the caller gives up (a read's own
// buffer): the body is not copied again. Its strings get memory of their
// own, so that a kept key or header does not hold the whole read; its topic
// is topic itself when it is that topic (a read's messages are all of the
// queue's topic).
func decodeRecord(rec []byte, topic string) (*sdk.Message, error) {
	tl, il, err := checkRecord(rec)
	if err != nil {
		return nil, err
	}
	m := &sdk.Message{}
	payload := rec[recordHeaderSize+tl+il:]
	// vtprotobuf's decoder: reflection-free, and it aliases instead of
	// copying; protobuf-go's was most of a read's CPU in the store.
	if err := m.UnmarshalVTUnsafe(payload); err != nil {
		return nil, fmt.Errorf("%w: decode message: %v", errBadRecord, err)
	}
	if t := rec[recordHeaderSize : recordHeaderSize+tl]; string(t) == topic {
		m.Topic = topic
	} else {
		m.Topic = string(t)
	}
	m.Id = string(rec[recordHeaderSize+tl : recordHeaderSize+tl+il])
	m.Queue = int32(binary.LittleEndian.Uint32(rec[16:]))
	m.Offset = int64(binary.LittleEndian.Uint64(rec[20:]))
	m.StoredUnixNano = int64(binary.LittleEndian.Uint64(rec[28:]))
	// The decoder checks no UTF-8 (protobuf-go's did); a record that
	// passed its checksum was written valid, but a stored string is
	// checked all the same before it is delivered.
	if !utf8.ValidString(m.Key) {
		return nil, fmt.Errorf("%w: decode message: key is not UTF-8", errBadRecord)
	}
	m.Key = strings.Clone(m.Key)
	if len(m.Headers) > 0 {
		h := make(map[string]string, len(m.Headers))
		for k, v := range m.Headers {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, fmt.Errorf("%w: decode message: a header is not UTF-8", errBadRecord)
			}
			h[strings.Clone(k)] = strings.Clone(v)
		}
		m.Headers = h
	}
	m.Body = m.Body[:len(m.Body):len(m.Body)]
	return m, nil
}

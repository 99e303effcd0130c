// Package file is Ferry's durable storage plugin: a commit log on local disk,
// after RocketMQ's CommitLog/ConsumeQueue design.
//
// # Layout
//
// One commit log holds the messages of every queue, interleaved in append
// order, in segment files of segment_bytes named by the global log position
// of their first record ("00000000000067108864.log"). Because all queues share
// one file, one fsync makes every queue's recent appends durable: group commit
// works across queues, and the disk sees one sequential stream however many
// queues there are. Each queue has an index (the ConsumeQueue): entry i holds
// the log position and size of the message with offset start+i. The index and
// the de-dup window (the last sdk.DedupWindow message ids per queue) live in
// memory; open rebuilds them from the sealed segments' index files and the
// records of the segment being written (see Recovery).
//
//	<dir>/LOCK                      flock'ed while a process has the store open
//	<dir>/00000000000000000000.log  segment: 32-byte header, then records
//	<dir>/00000000000000000000.idx  index of a sealed segment (see index.go)
//	<dir>/offsets.json              committed offsets of consumer groups
//	<dir>/queues.json               queue start offsets, kept by retention
//	<dir>/next-segment.zero         preallocated spare segment (preallocate)
//
// A closed store's newest segment ends with its newest record (the zeros of
// a preallocated file are cut on Close and restored on open).
//
// A segment starts with a header holding a magic, the format version and its
// base position; a store of another version is refused with ErrIncompatible
// before anything is touched. Each record holds a magic, its length, a CRC32C
// (Castagnoli) of the rest, the topic, queue, offset, stored time and message
// id in a fixed header (what recovery needs without decoding), then the
// message in protobuf encoding. See format.go.
//
// # Writing
//
// The broker calls Append from one goroutine, in order. Append checks the
// batch, assigns offsets, encodes the records into an in-memory buffer and
// returns at once; an id already in the queue's de-dup window gets its
// original offset and nothing is stored. One flusher goroutine swaps the
// buffer out, writes it with one pwrite per segment and, per the flush policy,
// fsyncs:
//
//   - flush: sync. Every write is followed by fdatasync; an append is
//     answered when an fsync covered it. Appends that arrive while an fsync
//     runs wait for the next one, so one fsync answers all of them (group
//     commit). After an fsync that answered several messages the flusher
//     waits for as many to come back before it fsyncs again, at most
//     group_commit_max_wait and a quarter of the last fsync's time (longer
//     waits cost more than they gather when CPUs are busy); a lone producer
//     never waits. An append whose fsync has
//     not come within flush_timeout (or the caller's deadline) is answered
//     sdk.ErrFlushTimeout with its offsets.
//   - flush: async. Data is written as soon as it is there and an append is
//     answered once written (it is then in the OS page cache and survives a
//     crash of the plugin process, not of the machine); fsync runs every
//     flush_interval or after flush_bytes.
//
// Under flush: sync, segment files are preallocated by default (preallocate):
// a background goroutine keeps a zero-filled, fsynced spare file ready and the
// log rolls into it, as RocketMQ warms its mapped files. An fsync after
// overwriting allocated blocks needs no filesystem journal commit; measured
// on ext4 it takes about half as long for small groups. The price is writing
// each segment twice, so a spare is made only while group commits average
// under 64KiB: large groups gain little and pay the zeroing.
//
// Reads see only what the policy calls durable: fsynced data under sync,
// written data under async. GetOffsets reports the same visible end.
//
// A failed write or fsync is sticky: the data it covered is answered with
// the error and the store takes no more appends, because after a failed
// fsync the page cache cannot be trusted. The broker restarts the plugin,
// which recovers from what is on disk. A full disk (ENOSPC, EDQUOT:
// sdk.ErrFull) needs no restart: the store probes for space and, once there
// is some, reopens itself from its files in place (see full.go); Full
// reports the state meanwhile.
//
// # Recovery
//
// Opening the store takes the directory lock (a second opener gets a clear
// error), checks every segment header, then reads the sealed segments' index
// files and scans the records of the rest, checking each one's CRC, its length
// and that its queue offset follows the previous one. Recovery never deletes
// a record that passes its checks:
//
//   - A damaged segment header (checksum, zeros, a base other than the file
//     name's) is rebuilt from the file name when a record follows it. Only
//     the newest segment may be removed, and only when it holds neither a
//     header nor a record (a crash while creating it). A file that has
//     neither a Ferry header nor a Ferry record is refused (ErrIncompatible,
//     naming it).
//   - A bad record that valid records follow (a flipped bit, a damaged
//     size field: the scan finds the next record by its magic) is skipped:
//     the records after it are kept, and the offsets it held become holes,
//     read as sdk.ErrCorrupt and never given to another message. A segment
//     with a damaged stretch gets no index file and is scanned at every
//     open.
//   - A bad stretch at the end of the newest segment that nothing valid
//     follows is a torn tail, the incomplete last write of a process or
//     machine that died (under flush: sync nothing in it was acknowledged):
//     it is cut. Zeros in the newest segment end its data.
//   - A group's committed offset past its queue's recovered end (the log
//     lost its tail) is moved back to the end and written, so that the
//     group consumes the messages stored from then on.
//
// A corrupt record is never indexed and so never delivered; reads check the
// CRC again and answer sdk.ErrCorrupt instead of delivering damaged data (the
// messages before it are answered first). `ferry storage check` (Check)
// reports all of this without changing anything.
// What the scan accepts is fsynced before the store serves it: after the
// plugin process (not the machine) died, its last writes are in the page
// cache, read back whole, and the broker's retried appends are answered with
// them, so they must be on disk first.
//
// Once a segment is sealed and fsynced, the janitor writes its index file
// ("<base>.idx": the fixed header, topic and id of every record, no message
// bodies, with a CRC32C). The sealed segments are the recovery checkpoint:
// open reads their index files, a few percent of the log, and scans only the
// segment being written. A missing, damaged or mismatched index file is
// ignored and its segment scanned. Damage inside a sealed, indexed segment is
// therefore found when the record is read (sdk.ErrCorrupt), not at open.
//
// # Retention
//
// retention_bytes and retention_age delete whole segments from the oldest,
// never the one being written. Queue start offsets move past them (and are
// written to queues.json first, so a queue whose messages all expired keeps
// its offsets after a restart); a read below a queue's start is answered from
// the start.
//
// # Config
//
//	flush: sync                 # or async
//	group_commit_max_wait: 2ms  # sync: wait for more appends before fsync; 0 = never
//	flush_timeout: 5s           # sync: answer FLUSH_TIMEOUT after this
//	flush_interval: 500ms       # async: fsync at least this often
//	flush_bytes: 4MiB           # async: fsync after this much unsynced data
//	segment_bytes: 64MiB        # 4KiB .. 1GiB
//	preallocate: true           # zero-fill segments ahead; default true under sync only
//	retention_bytes: 0          # 0 = unlimited
//	retention_age: 0s           # 0 = forever
//	dir: ""                     # default <data_dir>/storage-file
package file

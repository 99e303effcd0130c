// Package ring is Ferry's shared-memory data plane between the core and a
// plugin process: two single-producer, single-consumer byte rings in one
// shared mapping (a memfd the host creates and hands to the plugin at start),
// one ring per direction, carrying length-prefixed, checksummed records.
//
// The control plane stays on go-plugin and gRPC (handshake, Configure,
// health); the data plane is negotiated at Configure and carries the hot
// calls (storage appends and reads, transport requests) as protobuf frames,
// without gRPC's framing and, above all, without its thread wake-ups: a
// reader that finds its ring empty spins a little, then announces in a word
// of the mapping that it sleeps and waits on the ring's eventfd (its bell);
// a writer rings the bell only when it sees that announcement.
//
// The peer is untrusted: every index and record header read from the
// mapping is bounds-checked, payloads are copied out before they are
// checked, and any violation breaks the connection (the host then replaces
// the plugin process) without ever corrupting or crashing the reader.
//
// The wire layout, memory ordering and the wake-up rule are specified in
// docs/ring-protocol.md, for implementers in other languages.
package ring

//go:build ferry_faults

package sdk

import (
	"os"
	"strconv"
	"strings"

	"github.com/ferrymq/ferry/core/ring"
)

// Fault injection on the data plane, in test builds only (go build -tags
// ferry_faults): FERRY_FAULT_RING=KIND:garbage:N makes a plugin of KIND
// (storage, transport, replication) publish a corrupt record after it read N frames;
// KIND:mute:N makes it stop reading its ring then; transport:undecodable:N
// makes a transport publish a sound record that does not decode. With
// FERRY_FAULT_RING_ONCE=PATH the fault fires in one process only: the first
// creates PATH, later ones (the restarted plugin) see it and behave.
func init() {
	parts := strings.Split(os.Getenv("FERRY_FAULT_RING"), ":")
	if len(parts) != 3 {
		return
	}
	kind, mode := parts[0], parts[1]
	after, err := strconv.Atoi(parts[2])
	if err != nil || (mode != "garbage" && mode != "mute" && mode != "undecodable") {
		return
	}
	once := os.Getenv("FERRY_FAULT_RING_ONCE")
	ringFault = func(conn *ring.Conn, k string, n int) {
		if k != kind || n != after {
			return
		}
		if once != "" {
			f, err := os.OpenFile(once, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return // fired already, in an earlier process
			}
			f.Close()
		}
		pluginLog().Warn("fault injection: data plane", "mode", mode, "after_frames", n)
		switch mode {
		case "garbage":
			_ = conn.InjectCorrupt()
		case "mute":
			select {} // this reader never reads again
		case "undecodable":
			// A sound record (its checksum matches) whose payload is not
			// a TransportFrame: what a client's bad bytes forwarded as they
			// came would look like.
			_ = conn.Write(KindTransportFrame, 1<<62, []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
		}
	}
}

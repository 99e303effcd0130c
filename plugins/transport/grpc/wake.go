package grpctransport

import (
	"net"

	"github.com/ferrymq/ferry/core/sdk"
)

// wakeOnRead returns lis with its connections waking the core whenever a
// read brings a client's bytes, when the core is in another process on the
// ring data plane (sdk.CoreWaker). gRPC reads a request, decodes it and
// hands it to a handler before the transport sends it to the core: 10 to 20
// µs here, about what the core's reader takes to wake from its sleep on the
// ring's bell. Woken at the first byte, the core's wake-up (and its store's,
// which it pokes then) overlaps that work instead of following it. A read
// that brings no request (a ping, a window update) costs a sleeping core one
// short spin; an awake core costs an atomic load.
func wakeOnRead(lis net.Listener, core sdk.Core) net.Listener {
	w, ok := core.(sdk.CoreWaker)
	if !ok {
		return lis
	}
	return wakingListener{Listener: lis, wake: w.WakeCore}
}

type wakingListener struct {
	net.Listener
	wake func()
}

func (l wakingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return wakingConn{Conn: c, wake: l.wake}, nil
}

type wakingConn struct {
	net.Conn
	wake func()
}

func (c wakingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.wake()
	}
	return n, err
}

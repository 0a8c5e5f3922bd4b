//go:build unix

package postgres

import (
	"errors"
	"net"
	"syscall"
)

// peerClosed reports whether the server end of c, a connection idle in the
// pool, has closed (or, on a plain connection, has sent something nobody
// asked for, such as the error a terminated session gets before it is
// closed). It peeks at the socket without blocking, so a healthy
// connection costs one system call and no round trip. A connection it
// cannot look at counts as open.
//
// The peek runs under Control, not Read: pgconn's background reader may
// still be parked in a Read of an idle connection, holding its read lock
// until data comes, and a Read here would wait for it forever.
func peerClosed(c net.Conn) bool {
	// Bytes pending under TLS may be a record the TLS layer has yet to
	// read; only the end of the stream says something there.
	bytesCount := true
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c, bytesCount = tc.NetConn(), false
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.EINTR):
			// Nothing to read: open and idle. (Interrupted: no news.)
		case err != nil: // reset
			closed = true
		case n == 0: // end of file
			closed = true
		default:
			closed = bytesCount
		}
	})
	return err == nil && closed
}

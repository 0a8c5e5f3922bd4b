//go:build unix

package sockpeek

import (
	"errors"
	"net"
	"syscall"
)

// Look returns the state of c's socket. It peeks at the socket without
// blocking and takes no byte from it, so a healthy connection costs one
// system call and no round trip. A connection it cannot look at is Open.
//
// The peek runs under Control, not Read: another goroutine may be parked
// in a Read of the connection, holding its read lock until data comes,
// and a Read here would wait for it forever.
func Look(c net.Conn) State {
	for {
		nc, ok := c.(interface{ NetConn() net.Conn }) // *tls.Conn, a wrapper
		if !ok {
			break
		}
		c = nc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return Open
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return Open
	}
	st := Open
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK), errors.Is(err, syscall.EINTR):
			// Nothing to read: open and idle. (Interrupted: no news.)
		case err != nil: // reset
			st = Closed
		case n == 0: // end of file
			st = Closed
		default:
			st = Pending
		}
	})
	if err != nil {
		return Open
	}
	return st
}

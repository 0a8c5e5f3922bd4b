//go:build !unix

package postgres

import "net"

// peerClosed cannot look at a socket without blocking here: connections
// count as open, and a dead one fails the call that uses it.
func peerClosed(net.Conn) bool { return false }

//go:build !unix

package sockpeek

import "net"

// Look cannot look at a socket without blocking here: connections count
// as open, and a dead one fails the call that uses it.
func Look(net.Conn) State { return Open }

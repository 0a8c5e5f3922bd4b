// Package sockpeek tells, without waiting and without reading anything,
// whether the other end of a connection has closed it: for connections
// that nothing reads for long spells, such as those idle in a pool or
// carrying a stream one way.
package sockpeek

// State is what a look at a socket found.
type State uint8

const (
	// Open: nothing waits to be read.
	Open State = iota
	// Pending: bytes wait to be read. Under TLS they may be a record the
	// TLS layer has yet to read; on a plain connection, bytes no one
	// asked for.
	Pending
	// Closed: the peer closed or reset the connection.
	Closed
)

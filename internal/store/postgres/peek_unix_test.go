//go:build unix

package postgres

import (
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// peerClosedSoon runs peerClosed on c in a goroutine and fails t if it
// does not return: it must never wait for the connection.
func peerClosedSoon(t *testing.T, c net.Conn) bool {
	t.Helper()
	res := make(chan bool, 1)
	go func() { res <- peerClosed(c) }()
	select {
	case closed := <-res:
		return closed
	case <-time.After(30 * time.Second):
		t.Fatal("peerClosed blocked")
		return false
	}
}

// waitFor polls cond, which the kernel makes true soon after a peer's
// action on loopback, for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen within 10s", what)
		}
	}
}

func TestPeerClosed(t *testing.T) {
	t.Run("open and idle", func(t *testing.T) {
		c, _ := tcpPair(t)
		if peerClosedSoon(t, c) {
			t.Fatal("an open, idle connection counts as closed")
		}
	})
	t.Run("closed by the peer", func(t *testing.T) {
		c, s := tcpPair(t)
		s.Close()
		waitFor(t, "end of file", func() bool { return peerClosedSoon(t, c) })
	})
	t.Run("unasked data", func(t *testing.T) {
		c, s := tcpPair(t)
		if _, err := s.Write([]byte("E")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "pending byte", func() bool { return peerClosedSoon(t, c) })
		// The peek consumed nothing.
		b := make([]byte, 1)
		if n, err := c.Read(b); n != 1 || b[0] != 'E' {
			t.Fatalf("read after the peek = %d %q %v", n, b[:n], err)
		}
	})
	// pgconn's background reader can still be parked in a Read of a
	// connection that is back in the pool; the look must not wait for it.
	t.Run("with a read in progress", func(t *testing.T) {
		c, s := tcpPair(t)
		read := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			read <- err
		}()
		time.Sleep(10 * time.Millisecond) // let the Read park; the check holds either way
		if peerClosedSoon(t, c) {
			t.Fatal("an open connection with a read in progress counts as closed")
		}
		s.Write([]byte("x"))
		if err := <-read; err != nil {
			t.Fatal(err)
		}
	})
}

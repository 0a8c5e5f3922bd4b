//go:build unix

package sockpeek

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

// lookSoon runs Look on c in a goroutine and fails t if it does not
// return: it must never wait for the connection.
func lookSoon(t *testing.T, c net.Conn) State {
	t.Helper()
	res := make(chan State, 1)
	go func() { res <- Look(c) }()
	select {
	case st := <-res:
		return st
	case <-time.After(30 * time.Second):
		t.Fatal("Look blocked")
		return Open
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

func TestLook(t *testing.T) {
	t.Run("open and idle", func(t *testing.T) {
		c, _ := tcpPair(t)
		if st := lookSoon(t, c); st != Open {
			t.Fatalf("an open, idle connection is %d", st)
		}
	})
	t.Run("closed by the peer", func(t *testing.T) {
		c, s := tcpPair(t)
		s.Close()
		waitFor(t, "end of file", func() bool { return lookSoon(t, c) == Closed })
	})
	t.Run("unasked data", func(t *testing.T) {
		c, s := tcpPair(t)
		if _, err := s.Write([]byte("E")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "pending byte", func() bool { return lookSoon(t, c) == Pending })
		// The peek consumed nothing.
		b := make([]byte, 1)
		if n, err := c.Read(b); n != 1 || b[0] != 'E' {
			t.Fatalf("read after the peek = %d %q %v", n, b[:n], err)
		}
	})
	// A reader can be parked in a Read of the connection (pgconn's, of
	// one back in its pool); the look must not wait for it.
	t.Run("with a read in progress", func(t *testing.T) {
		c, s := tcpPair(t)
		read := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			read <- err
		}()
		time.Sleep(10 * time.Millisecond) // let the Read park; the check holds either way
		if st := lookSoon(t, c); st != Open {
			t.Fatalf("an open connection with a read in progress is %d", st)
		}
		s.Write([]byte("x"))
		if err := <-read; err != nil {
			t.Fatal(err)
		}
	})
}

// Package pgtest gives tests a fresh, empty PostgreSQL database, and
// servers of their own to crash and restart.
//
// The first call to URL in a test binary starts one throwaway PostgreSQL
// server from the machine's binaries (initdb and postgres, found on PATH or
// under /usr/lib/postgresql/*/bin) in a temporary directory, listening on a
// free loopback port. Every call then creates a new database on that server,
// so tests never see each other's data. Packages that call URL must stop the
// server when their tests end by calling Main from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// NewServer starts another server, for one test alone, which the test can
// crash (Server.Crash) or stop cleanly (Server.Stop) and start again on the
// same data (Server.Restart); it is stopped and removed when the test ends.
//
// NewProxy puts a TCP proxy in front of a server that counts the
// connections a client opens. NewFormation starts a pg_auto_failover
// formation (a monitor, a primary and a synchronous secondary) for tests
// of failover. Binary finds the client programs (pg_dump, pg_restore) that
// match the servers.
//
// Environment:
//
//	KV_TEST_POSTGRES_URL  use this server instead of starting one; its user
//	                      must be allowed to CREATE DATABASE. A test cannot
//	                      crash an external server, so NewServer skips its
//	                      test when this is set, even with KV_REQUIRE_POSTGRES=1.
//	KV_REQUIRE_POSTGRES=1 fail, rather than skip, when no server is available
//	KV_REQUIRE_FAILOVER=1 fail, rather than skip, when NewFormation finds no
//	                      pg_auto_failover (pg_autoctl and its extension)
//
// PostgreSQL refuses to run as root; when the tests run as root the servers
// run as the "postgres" system user.
package pgtest

import (
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/pgserver"
)

// Environment variables read by the harness.
const (
	EnvURL     = "KV_TEST_POSTGRES_URL"
	EnvRequire = "KV_REQUIRE_POSTGRES"
)

// shared is the server of this test binary that URL creates databases on.
var (
	once   sync.Once
	shared *pgserver.Server
	srvErr error
)

// Main runs the tests of m and then stops the server started for them, if
// any, and exits with the tests' status. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main for a TestMain with work of its own after the tests: it runs
// them, stops the server and returns their exit code.
func Run(m *testing.M) int {
	code := m.Run()
	if shared != nil {
		shared.Remove()
	}
	return code
}

// URL returns the URL of a new, empty database that only this test uses,
// and drops the database when the test ends. When no PostgreSQL is
// available it skips the test, or fails it when KV_REQUIRE_POSTGRES=1.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(func() { shared, srvErr = start() })
	if srvErr != nil {
		unavailable(t, srvErr)
	}
	u, name, err := shared.CreateDatabase()
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		// FORCE ends sessions a test left open (PostgreSQL 13+); servers
		// that do not know it get a plain DROP.
		if err := shared.ExecAdmin(fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			if err := shared.ExecAdmin(fmt.Sprintf("DROP DATABASE IF EXISTS %s", name)); err != nil {
				t.Logf("pgtest: drop database %s: %v", name, err)
			}
		}
	})
	return u
}

// unavailable skips t, or fails it when KV_REQUIRE_POSTGRES=1, because
// no server could be had.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("pgtest: %v", err)
	}
	t.Skipf("pgtest: %v\n(install PostgreSQL, e.g. apt-get install postgresql, or set %s to a server's URL; set %s=1 to fail instead of skip)", err, EnvURL, EnvRequire)
}

// Server is a PostgreSQL server that one test has to itself, started from
// the machine's binaries like the shared one. The test can crash it, or
// stop it cleanly, and start it again on the same data directory and port; it is stopped and
// its directory removed when the test ends. Its methods are meant for the
// test's goroutine and are not safe for concurrent use.
type Server struct {
	s    *pgserver.Server
	down bool
}

// NewServer starts a server for t alone and waits until it accepts
// connections. Without PostgreSQL binaries it skips t, or fails it when
// KV_REQUIRE_POSTGRES=1. When KV_TEST_POSTGRES_URL names an external
// server it always skips t: that server cannot be crashed, and the tests
// are then meant to run against it alone.
func NewServer(t testing.TB) *Server {
	t.Helper()
	if os.Getenv(EnvURL) != "" {
		t.Skipf("pgtest: this test crashes and restarts a PostgreSQL server of its own, and %s is set: the tests use that external server, which they cannot crash; unset %s to run this test on a local server", EnvURL, EnvURL)
	}
	s, err := pgserver.Start()
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(s.Remove)
	return &Server{s: s}
}

// URL returns the URL of a new, empty database on the server. The
// database goes with the server when the test ends.
func (s *Server) URL(t testing.TB) string {
	t.Helper()
	u, _, err := s.s.CreateDatabase()
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	return u
}

// Crash stops the server the way a crash would: an immediate shutdown
// (SIGQUIT to the postmaster), in which every server process exits at once,
// without a checkpoint and without waiting for its clients, so that the
// next start recovers from the write-ahead log. It returns once the
// postmaster has exited: the port then refuses connections. A postmaster
// still running after 15s is killed.
func (s *Server) Crash(t testing.TB) {
	t.Helper()
	if s.down {
		t.Fatal("pgtest: Crash of a server that is down")
	}
	s.s.Crash()
	s.down = true
}

// Stop stops the server cleanly: a fast shutdown (SIGINT to the
// postmaster), which ends every session and writes a checkpoint, as an
// operator's restart or a planned maintenance does. It returns once the
// postmaster has exited: the port then refuses connections.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if s.down {
		t.Fatal("pgtest: Stop of a server that is down")
	}
	s.s.Kill()
	s.down = true
}

// Restart starts the server, crashed or stopped, again on the same data
// directory and port, and returns once it accepts connections, that is,
// once it has recovered. It fails t if the server does not come back.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if !s.down {
		t.Fatal("pgtest: Restart of a server that is running")
	}
	// The port was just given up; if something else holds it for a
	// moment, try again.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.s.Launch(); err == nil {
			s.down = false
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pgtest: restart: %v", err)
}

// Addr is the server's host:port on loopback, the same across restarts.
func (s *Server) Addr() string { return s.s.Addr() }

// Log returns the server's log so far, of every start.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.s.LogPath())
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	return string(b)
}

func start() (*pgserver.Server, error) {
	if s := os.Getenv(EnvURL); s != "" {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", EnvURL, err)
		}
		return pgserver.External(u), nil
	}
	return pgserver.Start()
}

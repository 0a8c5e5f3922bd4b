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
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables read by the harness.
const (
	EnvURL     = "KV_TEST_POSTGRES_URL"
	EnvRequire = "KV_REQUIRE_POSTGRES"
)

const (
	startTimeout = 60 * time.Second
	stopTimeout  = 15 * time.Second
)

// shared is the server of this test binary that URL creates databases on.
var (
	once   sync.Once
	shared *server
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
		shared.remove()
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
	u, name, err := shared.createDatabase()
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		// FORCE ends sessions a test left open (PostgreSQL 13+); servers
		// that do not know it get a plain DROP.
		if err := shared.execAdmin(fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			if err := shared.execAdmin(fmt.Sprintf("DROP DATABASE IF EXISTS %s", name)); err != nil {
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
	s    *server
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
	s, err := startLocal()
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(s.remove)
	return &Server{s: s}
}

// URL returns the URL of a new, empty database on the server. The
// database goes with the server when the test ends.
func (s *Server) URL(t testing.TB) string {
	t.Helper()
	u, _, err := s.s.createDatabase()
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
	s.s.crash()
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
	s.s.kill()
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
		if err = s.s.launch(); err == nil {
			s.down = false
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pgtest: restart: %v", err)
}

// Addr is the server's host:port on loopback, the same across restarts.
func (s *Server) Addr() string { return s.s.url.Host }

// Log returns the server's log so far, of every start.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.s.logPath())
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	return string(b)
}

// Throwaway starts a PostgreSQL server of its own outside any test (the
// benchmark uses it), from the machine's binaries as for tests, and returns
// the URL of a new, empty database on it and a function that stops the
// server and removes its files.
func Throwaway() (dbURL string, stop func(), err error) {
	s, err := startLocal()
	if err != nil {
		return "", nil, err
	}
	u, _, err := s.createDatabase()
	if err != nil {
		s.remove()
		return "", nil, err
	}
	return u, s.remove, nil
}

// server is a running PostgreSQL: one started here (bin set) or an
// external one.
type server struct {
	url *url.URL // admin URL: database "postgres", or the external one's

	// A local server's binaries, directory (holding data/ and server.log)
	// and user to run as (nil: this process's).
	bin  string
	dir  string
	cred *runAs

	// The running postmaster, when started here; exited is closed once it
	// has exited.
	cmd    *exec.Cmd
	exited chan struct{}

	adminMu sync.Mutex // serializes statements on the admin connection
	admin   *pgx.Conn
}

func start() (*server, error) {
	if s := os.Getenv(EnvURL); s != "" {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", EnvURL, err)
		}
		return &server{url: u}, nil
	}
	return startLocal()
}

// findBinaries returns the directory holding initdb and postgres.
func findBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dir = filepath.Dir(real)
		}
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first.
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, postgres) on PATH or under /usr/lib/postgresql/*/bin")
}

// Binary returns the path of one of the PostgreSQL client or server
// programs (pg_dump, pg_restore, psql, ...) of the installation the test
// servers are started from, so that its major version matches theirs.
func Binary(name string) (string, error) {
	dir, err := findBinaries()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no %s beside the server binaries in %s: %v", name, dir, err)
	}
	return p, nil
}

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// startLocal creates a cluster in a new temporary directory and starts a
// server on it, on a free loopback port.
func startLocal() (*server, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	s := &server{bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root, but there is no postgres user to run it as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &runAs{uid: uint32(uid), gid: uint32(gid)}
	}
	if s.dir, err = os.MkdirTemp("", "kv-pgtest-"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(s.dir)
		}
	}()
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.uid), int(s.cred.gid)); err != nil {
			return nil, err
		}
	}

	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", s.dataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = s.dir
	initdb.SysProcAttr = sysProcAttr(s.cred, false)
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}

	// A free port can be taken between probing and binding: try again.
	for attempt := 0; attempt < 3; attempt++ {
		var port int
		if port, err = freePort(); err != nil {
			return nil, err
		}
		s.url = &url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/postgres", RawQuery: "sslmode=disable"}
		if err = s.launch(); err == nil {
			ok = true
			return s, nil
		}
	}
	return nil, err
}

func (s *server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *server) logPath() string { return filepath.Join(s.dir, "server.log") }

// launch starts the postmaster of a local server on its data directory
// and port, and waits until it accepts connections.
func (s *server) launch() error {
	logFile, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(s.bin, "postgres"),
		"-D", s.dataDir(),
		"-p", s.url.Port(),
		"-k", s.dir, // unix socket in the temp dir, away from /var/run/postgresql
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=300",
		"-c", "shared_buffers=128MB",
		"-c", "logging_collector=off",
	)
	cmd.Dir = s.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr(s.cred, true)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %v", err)
	}
	exited := make(chan struct{})
	s.cmd, s.exited = cmd, exited
	go func() { cmd.Wait(); close(exited) }()

	if err := s.waitReady(); err != nil {
		s.kill()
		log, _ := os.ReadFile(s.logPath())
		return fmt.Errorf("postgres did not start: %v\nserver log:\n%s", err, log)
	}
	return nil
}

// waitReady polls by connecting until the server answers, it exits, or
// startTimeout passes.
func (s *server) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("server exited: %v", s.cmd.ProcessState)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, s.url.String())
		if err == nil {
			err = c.Ping(ctx)
			c.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %v", startTimeout, last)
}

// running reports whether a local server's postmaster is up.
func (s *server) running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// stopWith sends sig to the postmaster and waits for it to exit, killing
// it after stopTimeout.
func (s *server) stopWith(sig os.Signal) {
	if !s.running() {
		return
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// kill stops a local server with a fast shutdown (SIGINT).
func (s *server) kill() { s.stopWith(os.Interrupt) }

// crash stops a local server with an immediate shutdown (SIGQUIT). The
// postmaster passes it on to every server process, which exits at once,
// and exits itself once they have all gone.
func (s *server) crash() { s.stopWith(syscall.SIGQUIT) }

// remove stops a local server and deletes its directory.
func (s *server) remove() {
	s.adminMu.Lock()
	if s.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.admin.Close(ctx)
		cancel()
		s.admin = nil
	}
	s.adminMu.Unlock()
	if s.bin == "" {
		return
	}
	s.kill()
	os.RemoveAll(s.dir)
}

// createDatabase creates a new, empty database and returns its URL and
// name.
func (s *server) createDatabase() (string, string, error) {
	name := "kvtest_" + randomHex(8)
	if err := s.execAdmin(fmt.Sprintf("CREATE DATABASE %s", name)); err != nil {
		return "", "", err
	}
	u := *s.url
	u.Path = "/" + name
	return u.String(), name, nil
}

// execAdmin runs sql on the admin connection, connecting again if the
// connection was lost (as a crash does).
func (s *server) execAdmin(sql string) error {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if s.admin != nil && (s.admin.IsClosed() || s.admin.Ping(ctx) != nil) {
		s.admin.Close(ctx)
		s.admin = nil
	}
	if s.admin == nil {
		c, err := pgx.Connect(ctx, s.url.String())
		if err != nil {
			return err
		}
		s.admin = c
	}
	_, err := s.admin.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// runAs is the user a local server runs as when the tests run as root.
type runAs struct{ uid, gid uint32 }

// Package pgtest gives tests a fresh, empty PostgreSQL database.
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
// Environment:
//
//	KV_TEST_POSTGRES_URL  use this server instead of starting one; its user
//	                      must be allowed to CREATE DATABASE
//	KV_REQUIRE_POSTGRES=1 fail, rather than skip, when no server is available
//
// PostgreSQL refuses to run as root; when the tests run as root the server
// runs as the "postgres" system user.
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

// server is the one server of this test binary.
var (
	once    sync.Once
	srv     *server
	srvErr  error
	adminMu sync.Mutex // serializes CREATE DATABASE on the admin connection
	admin   *pgx.Conn
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
	stop()
	return code
}

// URL returns the URL of a new, empty database that only this test uses,
// and drops the database when the test ends. When no PostgreSQL is
// available it skips the test, or fails it when KV_REQUIRE_POSTGRES=1.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(func() { srv, srvErr = start() })
	if srvErr != nil {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("pgtest: %v", srvErr)
		}
		t.Skipf("pgtest: %v\n(install PostgreSQL, e.g. apt-get install postgresql, or set %s to a server's URL; set %s=1 to fail instead of skip)", srvErr, EnvURL, EnvRequire)
	}
	name := "kvtest_" + randomHex(8)
	if err := execAdmin(fmt.Sprintf("CREATE DATABASE %s", name)); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		// FORCE ends sessions a test left open (PostgreSQL 13+); servers
		// that do not know it get a plain DROP.
		if err := execAdmin(fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			if err := execAdmin(fmt.Sprintf("DROP DATABASE IF EXISTS %s", name)); err != nil {
				t.Logf("pgtest: drop database %s: %v", name, err)
			}
		}
	})
	u := *srv.url
	u.Path = "/" + name
	return u.String()
}

func execAdmin(sql string) error {
	adminMu.Lock()
	defer adminMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if admin == nil || admin.IsClosed() {
		c, err := pgx.Connect(ctx, srv.url.String())
		if err != nil {
			return err
		}
		admin = c
	}
	_, err := admin.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	return err
}

// server is a running PostgreSQL: one started here (cmd set) or an
// external one (cmd nil).
type server struct {
	url    *url.URL // admin URL, database "postgres" or the external one's
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

func start() (*server, error) {
	if s := os.Getenv(EnvURL); s != "" {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", EnvURL, err)
		}
		return &server{url: u}, nil
	}
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	var s *server
	// A free port can be taken between probing and binding: try again.
	for attempt := 0; attempt < 3; attempt++ {
		s, err = startLocal(bin)
		if err == nil {
			return s, nil
		}
	}
	return nil, err
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

func versionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func startLocal(bin string) (*server, error) {
	var cred *runAs
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root, but there is no postgres user to run it as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &runAs{uid: uint32(uid), gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "kv-pgtest-")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.uid), int(cred.gid)); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "server.log")

	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = sysProcAttr(cred, false)
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(bin, "postgres"),
		"-D", data,
		"-p", strconv.Itoa(port),
		"-k", dir, // unix socket in the temp dir, away from /var/run/postgresql
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=300",
		"-c", "shared_buffers=128MB",
		"-c", "logging_collector=off",
	)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr(cred, true)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %v", err)
	}
	s := &server{
		url:    &url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/postgres", RawQuery: "sslmode=disable"},
		dir:    dir,
		cmd:    cmd,
		exited: make(chan struct{}),
	}
	go func() { cmd.Wait(); close(s.exited) }()

	if err := s.waitReady(); err != nil {
		s.kill()
		log, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("postgres did not start: %v\nserver log:\n%s", err, log)
	}
	ok = true
	return s, nil
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
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %v", startTimeout, last)
}

// kill stops a local server: a fast shutdown (SIGINT), then SIGKILL.
func (s *server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

func stop() {
	adminMu.Lock()
	if admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		admin.Close(ctx)
		cancel()
		admin = nil
	}
	adminMu.Unlock()
	if srv == nil || srv.cmd == nil {
		return
	}
	srv.kill()
	os.RemoveAll(srv.dir)
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

// Package pgserver starts and stops PostgreSQL servers from the machine's
// binaries (initdb and postgres, found on PATH or under
// /usr/lib/postgresql/*/bin), in temporary directories, on free loopback
// ports, as the "postgres" user when run as root (PostgreSQL refuses to run
// as root). The tests use it through internal/pgtest; the benchmark uses
// Throwaway. It does not import package testing, so it may be linked into
// commands.
package pgserver

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
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	startTimeout = 60 * time.Second
	stopTimeout  = 15 * time.Second
)

// External is a server started elsewhere, reached at its admin URL u (a
// user allowed to CREATE DATABASE); it cannot be launched or stopped here.
func External(u *url.URL) *Server { return &Server{url: u} }

// Throwaway starts a PostgreSQL server of its own outside any test (the
// benchmark uses it), from the machine's binaries as for tests, and returns
// the URL of a new, empty database on it and a function that stops the
// server and removes its files.
func Throwaway() (dbURL string, stop func(), err error) {
	s, err := Start()
	if err != nil {
		return "", nil, err
	}
	u, _, err := s.CreateDatabase()
	if err != nil {
		s.Remove()
		return "", nil, err
	}
	return u, s.Remove, nil
}

// Server is a running PostgreSQL: one started here (bin set) or an
// external one.
type Server struct {
	url *url.URL // admin URL: database "postgres", or the external one's

	// A local server's binaries, directory (holding data/ and server.log)
	// and user to run as (nil: this process's).
	bin  string
	dir  string
	cred *RunAs

	// The running postmaster, when started here; exited is closed once it
	// has exited.
	cmd    *exec.Cmd
	exited chan struct{}

	adminMu sync.Mutex // serializes statements on the admin connection
	admin   *pgx.Conn
}

// FindBinaries returns the directory holding initdb and postgres.
func FindBinaries() (string, error) {
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
	sort.Slice(dirs, func(i, j int) bool { return VersionOf(dirs[i]) > VersionOf(dirs[j]) })
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
	dir, err := FindBinaries()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no %s beside the server binaries in %s: %v", name, dir, err)
	}
	return p, nil
}

func VersionOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Start creates a cluster in a new temporary directory and starts a
// server on it, on a free loopback port.
func Start() (*Server, error) {
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root, but there is no postgres user to run it as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &RunAs{UID: uint32(uid), GID: uint32(gid)}
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
		if err := os.Chown(s.dir, int(s.cred.UID), int(s.cred.GID)); err != nil {
			return nil, err
		}
	}

	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", s.DataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = s.dir
	initdb.SysProcAttr = SysProcAttr(s.cred, false)
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}

	// A free port can be taken between probing and binding: try again.
	for attempt := 0; attempt < 3; attempt++ {
		var port int
		if port, err = FreePort(); err != nil {
			return nil, err
		}
		s.url = &url.URL{Scheme: "postgres", User: url.User("postgres"), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Path: "/postgres", RawQuery: "sslmode=disable"}
		if err = s.Launch(); err == nil {
			ok = true
			return s, nil
		}
	}
	return nil, err
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.url.Host }

// DataDir is a local server's data directory; LogPath its log.
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) LogPath() string { return filepath.Join(s.dir, "server.log") }

// Launch starts the postmaster of a local server on its data directory
// and port, and waits until it accepts connections.
func (s *Server) Launch() error {
	logFile, err := os.OpenFile(s.LogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(s.bin, "postgres"),
		"-D", s.DataDir(),
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
	cmd.SysProcAttr = SysProcAttr(s.cred, true)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %v", err)
	}
	exited := make(chan struct{})
	s.cmd, s.exited = cmd, exited
	go func() { cmd.Wait(); close(exited) }()

	if err := s.waitReady(); err != nil {
		s.Kill()
		log, _ := os.ReadFile(s.LogPath())
		return fmt.Errorf("postgres did not start: %v\nserver log:\n%s", err, log)
	}
	return nil
}

// waitReady polls by connecting until the server answers, it exits, or
// startTimeout passes.
func (s *Server) waitReady() error {
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
func (s *Server) running() bool {
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
func (s *Server) stopWith(sig os.Signal) {
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

// Kill stops a local server with a fast shutdown (SIGINT).
func (s *Server) Kill() { s.stopWith(os.Interrupt) }

// Crash stops a local server with an immediate shutdown (SIGQUIT). The
// postmaster passes it on to every server process, which exits at once,
// and exits itself once they have all gone.
func (s *Server) Crash() { s.stopWith(syscall.SIGQUIT) }

// Remove stops a local server and deletes its directory.
func (s *Server) Remove() {
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
	s.Kill()
	os.RemoveAll(s.dir)
}

// CreateDatabase creates a new, empty database and returns its URL and
// name.
func (s *Server) CreateDatabase() (string, string, error) {
	name := "kvtest_" + RandomHex(8)
	if err := s.ExecAdmin(fmt.Sprintf("CREATE DATABASE %s", name)); err != nil {
		return "", "", err
	}
	u := *s.url
	u.Path = "/" + name
	return u.String(), name, nil
}

// ExecAdmin runs sql on the admin connection, connecting again if the
// connection was lost (as a crash does).
func (s *Server) ExecAdmin(sql string) error {
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

func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// PostgresUser is the user PostgreSQL's programs are run as: nil (this
// process's) unless this process is root, whom PostgreSQL refuses to run
// as, and then the "postgres" system user.
func PostgresUser() (*RunAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root, but there is no postgres user to run it as: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &RunAs{UID: uint32(uid), GID: uint32(gid)}, nil
}

// RunAs is the user PostgreSQL's programs run as when this process is root.
type RunAs struct{ UID, GID uint32 }

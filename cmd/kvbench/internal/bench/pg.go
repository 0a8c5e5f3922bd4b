package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgekv/kv/internal/pgserver"
	"github.com/jackc/pgx/v5"
)

// pgEnv is the PostgreSQL server of a run: kvd's database on it, the
// database holding the tables of the pg-* workloads, and what kvbench
// knows of the server's processes.
type pgEnv struct {
	kvdURL string // kvd's database
	// benchURL is the database of the pg-* workloads' tables: a database
	// of its own on a throwaway server, kvd's database for a server given
	// by URL (the tables are then dropped at the end).
	benchURL string
	ownDB    bool
	// dataDir is the throwaway server's data directory, whose
	// postmaster.pid names the server's process; "" for a server given by
	// URL, whose CPU is not measured.
	dataDir string
	// statements says pg_stat_statements can be read: it is preloaded
	// and the extension exists in benchURL's database.
	statements bool
	// dropExtension says the extension was created here, in a database
	// that is not kvbench's own, and is dropped at the end.
	dropExtension bool
	notes         []string
	stop          func()

	pidOnce sync.Once
	pid     int
}

// extension is the contrib module whose statistics --profile reads.
const extension = "pg_stat_statements"

// startThrowaway starts a PostgreSQL server of kvbench's own from the
// machine's binaries, with pg_stat_statements preloaded when the module is
// installed (tracking statements only when profile is set, so that a run
// without --profile does not pay for it), and creates kvd's database and
// the pg-* workloads' database on it.
func startThrowaway(profile bool, log func(string, ...any)) (*pgEnv, error) {
	s, err := pgserver.Start()
	if err != nil {
		return nil, err
	}
	env := &pgEnv{dataDir: s.DataDir(), ownDB: true, stop: s.Remove}
	ok := false
	defer func() {
		if !ok {
			s.Remove()
		}
	}()
	preloaded, why := preloadStatements(s)
	if !preloaded {
		env.notes = append(env.notes, "pg_stat_statements not loaded: "+why)
		log("PostgreSQL: pg_stat_statements not loaded: %s", why)
	}
	if env.kvdURL, _, err = s.CreateDatabase(); err != nil {
		return nil, err
	}
	if env.benchURL, _, err = s.CreateDatabase(); err != nil {
		return nil, err
	}
	if preloaded {
		track := "none"
		if profile {
			track = "top"
		}
		for _, q := range []string{"ALTER SYSTEM SET pg_stat_statements.track = '" + track + "'", "SELECT pg_reload_conf()"} {
			if err := s.ExecAdmin(q); err != nil {
				return nil, fmt.Errorf("%s: %w", q, err)
			}
		}
		if profile {
			if err := env.createExtension(); err != nil {
				env.notes = append(env.notes, "pg_stat_statements unavailable: "+firstLine(err.Error()))
			}
		}
	}
	ok = true
	return env, nil
}

// preloadStatements restarts server s with pg_stat_statements in
// shared_preload_libraries when the module is installed beside the
// server's binaries; it says whether it is loaded, or why not.
func preloadStatements(s *pgserver.Server) (bool, string) {
	bin, err := pgserver.FindBinaries()
	if err != nil {
		return false, err.Error()
	}
	lib := filepath.Join(filepath.Dir(bin), "lib", extension+".so")
	if _, err := os.Stat(lib); err != nil {
		return false, fmt.Sprintf("no %s (install PostgreSQL's contrib modules)", lib)
	}
	if err := s.ExecAdmin("ALTER SYSTEM SET shared_preload_libraries = '" + extension + "'"); err != nil {
		return false, err.Error()
	}
	s.Kill()
	err = launch(s)
	if err == nil {
		return true, ""
	}
	// Back to the settings it started with: ALTER SYSTEM's file holds only
	// the line written above.
	os.Remove(filepath.Join(s.DataDir(), "postgresql.auto.conf"))
	if err2 := launch(s); err2 != nil {
		return false, err2.Error()
	}
	return false, "the server did not start with it: " + firstLine(err.Error())
}

// launch starts s again on its data directory and port; the port was just
// given up, so a moment's conflict is tried again.
func launch(s *pgserver.Server) error {
	var err error
	for range 3 {
		if err = s.Launch(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// openPostgres returns the PostgreSQL server of a run given --postgres
// spec (a URL, PostgresAuto, PostgresOff or ""), with the notes the report
// keeps of it: nil when there is none, or a throwaway one could not be
// started (a note says why). profile is as for startThrowaway. The caller
// closes the server.
func openPostgres(spec string, profile bool, log func(string, ...any)) (*pgEnv, []string) {
	var pg *pgEnv
	switch spec {
	case "", PostgresOff:
		return nil, nil
	case PostgresAuto:
		env, err := startThrowaway(profile, log)
		if err != nil {
			log("kvd on PostgreSQL left out: %v", err)
			return nil, []string{"kvd on PostgreSQL left out: " + firstLine(err.Error())}
		}
		log("PostgreSQL: a throwaway server from this machine's binaries")
		pg = env
	default:
		pg = urlEnv(spec, profile)
	}
	d := pg.describe()
	log("%s", d)
	return pg, append([]string{d}, pg.notes...)
}

// urlEnv is the environment of a server given by URL: the pg-* tables go
// into kvd's database, beside kvd's own, and pg_stat_statements is used if
// the server preloads it.
func urlEnv(url string, profile bool) *pgEnv {
	env := &pgEnv{kvdURL: url, benchURL: url, stop: func() {}}
	if profile {
		if err := env.createExtension(); err != nil {
			env.notes = append(env.notes, "pg_stat_statements unavailable (statement profiles left out): "+firstLine(err.Error()))
		}
	}
	env.notes = append(env.notes, "PostgreSQL given by URL: its CPU is not measured")
	return env
}

// createExtension creates pg_stat_statements in the bench database and
// checks that it can be read.
func (e *pgEnv) createExtension() error {
	return e.withConn(e.benchURL, func(ctx context.Context, c *pgx.Conn) error {
		var had bool
		if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = $1)", extension).Scan(&had); err != nil {
			return err
		}
		if !had {
			if _, err := c.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS "+extension); err != nil {
				return err
			}
			e.dropExtension = !e.ownDB
		}
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM "+extension).Scan(&n); err != nil {
			return err
		}
		e.statements = true
		return nil
	})
}

// withConn runs fn on a new connection to url.
func (e *pgEnv) withConn(url string, fn func(ctx context.Context, c *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return fn(ctx, c)
}

// close drops what kvbench left in a server given by URL, and stops a
// throwaway server.
func (e *pgEnv) close() {
	if !e.ownDB {
		e.withConn(e.benchURL, func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, "DROP TABLE IF EXISTS "+pgKVTable+", "+pgRangeTable)
			if e.dropExtension {
				c.Exec(ctx, "DROP EXTENSION IF EXISTS "+extension)
			}
			return err
		})
	}
	e.stop()
}

// postmaster returns the throwaway server's process id, 0 if unknown.
func (e *pgEnv) postmaster() int {
	e.pidOnce.Do(func() {
		if e.dataDir == "" {
			return
		}
		b, err := os.ReadFile(filepath.Join(e.dataDir, "postmaster.pid"))
		if err != nil {
			return
		}
		line, _, _ := strings.Cut(string(b), "\n")
		e.pid, _ = strconv.Atoi(strings.TrimSpace(line))
	})
	return e.pid
}

// cpu returns the CPU time the throwaway server's processes have used.
func (e *pgEnv) cpu() time.Duration {
	pid := e.postmaster()
	if pid == 0 {
		return 0
	}
	d, _ := treeCPU(pid)
	return d
}

// knowsCPU says whether cpu measures anything.
func (e *pgEnv) knowsCPU() bool { return e.postmaster() != 0 }

// describe returns a line about the server: version and the settings that
// shape durable writes.
func (e *pgEnv) describe() string {
	var parts []string
	err := e.withConn(e.benchURL, func(ctx context.Context, c *pgx.Conn) error {
		for _, name := range []string{"server_version", "fsync", "synchronous_commit", "wal_sync_method", "shared_buffers", "max_connections"} {
			var v string
			if err := c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
				return err
			}
			parts = append(parts, name+" "+v)
		}
		return nil
	})
	if err != nil {
		return "PostgreSQL: " + firstLine(err.Error())
	}
	return "PostgreSQL: " + strings.Join(parts, ", ")
}

// vacuum runs VACUUM (ANALYZE) on the database at url and then a
// checkpoint, so that a measurement neither starts autovacuum on the rows
// a fill left nor pays for the fill's checkpoint. A checkpoint needs a
// superuser (or pg_checkpoint, 15+); without one it is left out.
func (e *pgEnv) vacuum(url, tables string) error {
	return e.withConn(url, func(ctx context.Context, c *pgx.Conn) error {
		if _, err := c.Exec(ctx, "VACUUM (ANALYZE) "+tables); err != nil {
			return fmt.Errorf("vacuum: %w", err)
		}
		c.Exec(ctx, "CHECKPOINT")
		return nil
	})
}

// errNoPostgres is the error of a pg-* workload asked for without a
// PostgreSQL server.
var errNoPostgres = errors.New("bench: the pg-* workloads need PostgreSQL (--postgres auto or a URL)")

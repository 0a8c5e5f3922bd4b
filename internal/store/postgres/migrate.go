package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Migrations are files migrations/NNNN_name.sql, applied in order of NNNN.
// A migration is never edited once released; a change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("postgres: migration file %s is not named NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{v, e.Name(), string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("postgres: two migrations numbered %d", ms[i].version)
		}
	}
	return ms, nil
}

const sqlCreateMigrations = `CREATE TABLE IF NOT EXISTS kv_migrations (
	version    INT         NOT NULL PRIMARY KEY,
	name       TEXT        NOT NULL,
	applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`

// migrate brings the schema up to date. Several processes may run it at
// once against the same database. Each migration runs in a transaction that
// first inserts its version into kv_migrations: the version's primary key
// makes concurrent appliers of one migration wait for the first, after
// which they find the version taken and skip it. Races that a database
// reports as errors instead (concurrent CREATE TABLE IF NOT EXISTS in
// PostgreSQL can fail with a unique violation on its catalog; CockroachDB
// reports contention as serialization failures) are retried. Advisory locks
// would be simpler but CockroachDB and YugabyteDB do not offer them.
func migrate(ctx context.Context, c *pgx.Conn) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	const attempts = 20
	for i := 0; ; i++ {
		err = migrateOnce(ctx, c, ms)
		if err == nil || !retryable(err) || i == attempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(10*(i+1)) * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

func migrateOnce(ctx context.Context, c *pgx.Conn, ms []migration) error {
	if _, err := c.Exec(ctx, sqlCreateMigrations); err != nil {
		return err
	}
	applied := map[int]bool{}
	rows, _ := c.Query(ctx, `SELECT version FROM kv_migrations`)
	var v int
	if _, err := pgx.ForEachRow(rows, []any{&v}, func() error { applied[v] = true; return nil }); err != nil {
		return err
	}
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `INSERT INTO kv_migrations (version, name) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING`, m.version, m.name)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return nil // another process applied it meanwhile
			}
			// Simple protocol: a migration holds several statements.
			_, err = tx.Exec(ctx, m.sql, pgx.QueryExecModeSimpleProtocol)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}

// retryable reports errors that a concurrent process can cause and that
// running the same work again resolves.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "40001", // serialization_failure
		"40P01", // deadlock_detected
		"23505", // unique_violation (catalog races of IF NOT EXISTS)
		"42P07", // duplicate_table
		"42710": // duplicate_object
		return true
	}
	return false
}

package postgres

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edgekv/kv/internal/store"
)

var _ store.Backlogger = (*DB)(nil)

// Stats is what the engine reports for metrics.
type Stats struct {
	// Pool is the connection pool's own statistics.
	Pool *pgxpool.Stat
	// Errors counts the failed calls by kind, as wrap maps them.
	Errors ErrorCounts
	// BreakerOpen reports that the last attempt to connect failed: new
	// connections are refused until the next attempt succeeds.
	BreakerOpen bool
	// Reads and Writes count the key reads and the plain writes that
	// could share statements and transactions (getbatch.go, putgroup.go).
	Reads, Writes Shared
}

// Shared counts calls that could share statements, since Open: Calls of
// them were served by Runs statements (or transactions), alone ones
// included.
type Shared struct {
	Calls, Runs int64
}

// ErrorCounts counts failed calls, since Open, by kind. Calls whose
// context ended, and the contract's answers (not found, name taken, ...),
// are not failures.
type ErrorCounts struct {
	// Unavailable: the database could not be reached, the connection was
	// lost, the server is read-only, or the breaker refused a connection.
	Unavailable int64
	// TimedOut: the server canceled a statement (statement_timeout).
	TimedOut int64
	// EngineFailures: anything else, reported to clients as internal
	// errors.
	EngineFailures int64
}

// errorCounters are the counters behind ErrorCounts.
type errorCounters struct {
	unavailable, timedOut, failures atomic.Int64
}

// count records the outcome of a call that ended with err (already
// mapped by wrap).
func (c *errorCounters) count(ctx context.Context, err error) {
	switch {
	case err == nil, ctx.Err() != nil:
	case timedOut(err):
		c.timedOut.Add(1)
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrNotReached):
		c.unavailable.Add(1)
	case contractError(err), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
	default:
		c.failures.Add(1)
	}
}

// Stats returns the engine's statistics. It is safe for concurrent use and
// does not touch the database.
func (db *DB) Stats() Stats {
	return Stats{
		Pool: db.pool.Stat(),
		Errors: ErrorCounts{
			Unavailable:    db.errs.unavailable.Load(),
			TimedOut:       db.errs.timedOut.Load(),
			EngineFailures: db.errs.failures.Load(),
		},
		BreakerOpen: db.breaker.open(),
		Reads:       Shared{Calls: db.gets.calls.Load(), Runs: db.gets.groups.Load()},
		Writes:      Shared{Calls: db.puts.calls.Load(), Runs: db.puts.groups.Load()},
	}
}

// open reports whether the last connection attempt failed.
func (b *breaker) open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures > 0
}

const sqlJobBacklog = `SELECT status, count(*), min(updated_at) FROM namespaces
WHERE status IN ('pending', 'deleting') GROUP BY status`

// JobBacklog implements store.Backlogger with one query on the lifecycle
// index.
func (db *DB) JobBacklog(ctx context.Context) (store.JobBacklog, error) {
	var b store.JobBacklog
	err := db.conn(ctx, "job backlog", func(c *pgx.Conn) error {
		b = store.JobBacklog{}
		rows, err := c.Query(ctx, sqlJobBacklog)
		if err != nil {
			return err
		}
		var (
			status string
			n      int
			oldest time.Time
		)
		_, err = pgx.ForEachRow(rows, []any{&status, &n, &oldest}, func() error {
			switch status {
			case statusPending:
				b.Pending = n
			case statusDeleting:
				b.Deleting = n
			}
			if b.Oldest.IsZero() || oldest.Before(b.Oldest) {
				b.Oldest = oldest.UTC()
			}
			return nil
		})
		return err
	})
	return b, err
}

// Package postgres is a store.Store on PostgreSQL, for deployments where
// several kvd processes share one database.
//
// The SQL stays within what CockroachDB and YugabyteDB also accept: no
// advisory locks, no system columns (xmax, ctid), no extensions, no
// LISTEN/NOTIFY. Where a statement is shaped by that, a comment says so.
// The change feed (changes.go) is the exception: it reads PostgreSQL's
// transaction ids and snapshots (PostgreSQL 13 or later).
//
// Consistency rests on row locks taken in the same statement as the work:
// every key write locks its namespace row FOR SHARE while it checks the
// namespace's owner and status, and every change of a namespace's status
// updates that row, which waits for the writers holding it and makes later
// writers see the new status. So once MarkDeleting has returned no key write
// can succeed, in this process or any other.
//
// Usage metering (usage.go) rides on the same statements: each key write,
// delete and sweep adds its counts and its change of stored bytes to the
// usage table in the statement that makes the change, and MarkDeleting
// ends a namespace's stored bytes in the transaction of its status change.
package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/sockpeek"
	"github.com/edgekv/kv/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DB is a store.Store on a PostgreSQL database. It is safe for concurrent
// use, and any number of DBs, in any number of processes, may share one
// database.
type DB struct {
	pool    *pgxpool.Pool
	breaker *breaker
	closed  atomic.Bool

	// resetAt is when the pool was last emptied because a statement found
	// the server read-only (Unix nanoseconds); see dropReadOnly.
	resetAt atomic.Int64

	// purgeBatch is the most keys, or changes, PurgeNamespace deletes per
	// statement.
	purgeBatch int

	// feed is the change feed's head (changes.go).
	feed *feed

	// snapshotHook, when set (by tests), is called by Snapshot between its
	// steps: "head" once it has h0, "taken" once its snapshot is.
	snapshotHook func(step string)

	// errs counts failed calls by kind, for metrics (Stats).
	errs errorCounters

	// gets coalesces concurrent key reads (getbatch.go).
	gets *coalescer[*getCall]

	// puts coalesces concurrent plain writes (putgroup.go).
	puts *coalescer[*putCall]

	// listByScan makes ListKeys decode its rows through Scan, as it does
	// when they do not come as it expects (tests).
	listByScan bool
	// getByScan makes key reads decode their rows through Scan, as they
	// do rows of other column types (tests).
	getByScan bool
}

var (
	_ store.Store   = (*DB)(nil)
	_ store.Changes = (*DB)(nil)
)

// defaultPurgeBatch keeps each statement of a purge to a bounded
// transaction; see PurgeNamespace.
const defaultPurgeBatch = 10000

// openLogEvery is the least time between two lines of Open saying that it
// is still waiting for the database.
const openLogEvery = 5 * time.Second

// Open connects to the database at url (a postgres:// URL or a libpq
// key=value string, as pgx.ParseConfig accepts; several hosts with
// target_session_attrs=read-write follow a failover), applies any schema
// migrations it lacks, and returns the engine. Several processes may Open
// the same empty database at once.
//
// A database that does not accept connections yet is waited for, up to
// cfg.OpenTimeout, with a growing pause between attempts; Open logs why it
// waits, at most every few seconds, and returns the last attempt's error
// when it gives up, or ctx's when ctx ends first.
func Open(ctx context.Context, url string, cfg Config) (*DB, error) {
	cfg = cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pc.MaxConns = int32(cfg.MaxConns)
	cc := pc.ConnConfig
	cc.ConnectTimeout = cfg.ConnectTimeout
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	timeout := int64(0)
	if cfg.StatementTimeout > 0 {
		timeout = cfg.StatementTimeout.Milliseconds()
	}
	cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(timeout, 10)
	cc.RuntimeParams["application_name"] = cfg.ApplicationName
	// When a caller's context ends mid-statement, ask the server to cancel
	// the statement and wait for it to stop, rather than dropping the
	// connection at once: a statement waiting for a lock on a dropped
	// connection would carry on and could still commit after the caller had
	// been told it failed. The connection is dropped only if the server does
	// not answer the cancel request in time.
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 5 * time.Second}
	}

	// A connection idle in the pool when the server went away (a restart,
	// a crash, a terminated session) is dead, but nothing tells the client
	// until it sends a statement, which then fails with an outcome the
	// caller cannot know, although the server is back. So every connection
	// is looked at as it leaves the pool, and one the server has closed is
	// replaced by another (pgxpool pings only connections idle for over a
	// second).
	pc.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
		return !serverClosed(c.PgConn().Conn()), nil
	}

	// Every new connection asks the breaker first, and reports to it how
	// the attempt went (the attempt is the connection's tracer).
	br := newBreaker()
	pc.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		a, err := br.admit()
		if err != nil {
			return err
		}
		cc.Tracer = a
		return nil
	}

	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	db := &DB{pool: pool, breaker: br, purgeBatch: defaultPurgeBatch}
	db.gets = newGetCoalescer(db, cfg.MaxConns)
	db.puts = newPutCoalescer(db, cfg.MaxConns)
	c, err := db.waitForDatabase(ctx, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	err = migrate(ctx, c.Conn())
	c.Release()
	if err != nil {
		pool.Close()
		return nil, err
	}
	br.setLogger(cfg.Logger)
	db.feed = newFeed()
	return db, nil
}

// waitForDatabase returns a connection of the pool as soon as the database
// gives one, trying at the breaker's pace for up to cfg.OpenTimeout.
func (db *DB) waitForDatabase(ctx context.Context, cfg Config) (*pgxpool.Conn, error) {
	start := time.Now()
	if cfg.OpenTimeout < 0 {
		c, err := db.pool.Acquire(ctx)
		if err != nil {
			return nil, &lineError{"postgres: connect: " + oneLine(err), err}
		}
		return c, nil
	}
	actx, cancel := context.WithTimeout(ctx, cfg.OpenTimeout)
	defer cancel()
	var logged time.Time
	for attempt := 1; ; attempt++ {
		c, err := db.pool.Acquire(actx)
		if err == nil {
			if attempt > 1 {
				cfg.Logger.Info("postgres: connected to the database", "attempts", attempt, "waited", time.Since(start).Round(time.Millisecond))
			}
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("postgres: stopped waiting for the database: %w", ctx.Err())
		}
		if last := db.breaker.lastError(); errors.Is(err, errBreakerOpen) && last != nil {
			err = last // refused before dialing: the last attempt says why
		}
		if actx.Err() != nil {
			// The attempt under way at the deadline was cut short:
			// the one before it tells why the database is not there.
			if last := db.breaker.lastError(); last != nil {
				err = last
			}
			return nil, &lineError{fmt.Sprintf("postgres: the database did not accept a connection within %v (%d attempts); the last attempt: %s", cfg.OpenTimeout, attempt, oneLine(err)), err}
		}
		if now := time.Now(); logged.IsZero() || now.Sub(logged) >= openLogEvery {
			logged = now
			cfg.Logger.Warn("postgres: waiting for the database", "attempt", attempt, "err", oneLine(err),
				"waited", now.Sub(start).Round(time.Millisecond), "gives_up_in", (cfg.OpenTimeout - now.Sub(start)).Round(time.Second))
		}
		db.breaker.wait(actx) // the next Acquire sees actx's end, if it came
	}
}

// oneLine is err's message on one line: pgx puts each host it tried (a
// multi-host URL, or sslmode=prefer's two tries) on a line of its own.
func oneLine(err error) string {
	s := strings.ReplaceAll(err.Error(), ":\n", ": ")
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// lineError is an error with a message of its own, on one line, that wraps
// its cause.
type lineError struct {
	msg string
	err error
}

func (e *lineError) Error() string { return e.msg }
func (e *lineError) Unwrap() error { return e.err }

// Close waits for calls in flight and closes the engine's connections.
// Calls after Close return an error.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return store.ErrClosed
	}
	db.feed.close() // waiters return, the poller stops
	db.pool.Close()
	return nil
}

// conn runs fn with a connection of the pool and maps its error. The pool
// destroys, rather than reuses, a connection left broken or inside a
// transaction. A call that needs a new connection while the breaker is open
// fails at once with errNotConnecting.
func (db *DB) conn(ctx context.Context, op string, fn func(c *pgx.Conn) error) (err error) {
	defer func() { db.errs.count(ctx, err) }()
	return db.run(ctx, op, fn)
}

// run is conn without counting the failure: for callers that count it
// for each call they serve themselves.
func (db *DB) run(ctx context.Context, op string, fn func(c *pgx.Conn) error) error {
	if db.closed.Load() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err // called with a done context: nothing is tried
	}
	c, err := db.pool.Acquire(ctx)
	if errors.Is(err, errBreakerOpen) {
		// The breaker logs the outage; one line per refused call would
		// bury it.
		return errNotConnecting
	}
	if err != nil {
		return wrap(ctx, op, err, false)
	}
	defer c.Release()
	err = fn(c.Conn())
	if readOnly(err) {
		db.dropReadOnly(c)
	}
	// A call that failed on a connection that is now closed lost it: the
	// server went away, or the network failed, in the middle of the call.
	return wrap(ctx, op, err, err != nil && c.Conn().IsClosed())
}

// resetEvery is the least time between two resets of the pool by
// dropReadOnly.
const resetEvery = time.Second

// dropReadOnly handles a statement on c that found the server read-only: a
// primary demoted to a standby, or a server a failover manager has made
// read-only while it promotes another. c is closed, so that the pool
// destroys it rather than reuse it, and so is every other connection of the
// pool, made to the same server as like as not: new connections go where
// the URL sends them, which with target_session_attrs=read-write is the
// server that accepts writes now. Resets are at most one a second, so a
// URL that leads to a read-only server alone does not have every write
// empty the pool.
func (db *DB) dropReadOnly(c *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c.Conn().Close(ctx)
	cancel()
	now := time.Now().UnixNano()
	last := db.resetAt.Load()
	if now-last >= int64(resetEvery) && db.resetAt.CompareAndSwap(last, now) {
		db.pool.Reset()
	}
}

// errNotConnecting is the store's answer to a call that needed a new
// connection while the breaker is open: the last attempt to connect
// failed, and the next is not due yet. The call reached no database. Until
// the next attempt succeeds (one interval, at most breakerMax, after the
// database is back), calls get it although the database may be up again.
var errNotConnecting = fmt.Errorf("postgres: the database could not be reached at the last attempt, and the next attempt is not due yet: %w", store.ErrNotReached)

// wrap maps an error to the store's vocabulary: the contract's errors
// pass through; a failure to reach the database, the loss of the
// connection (lost), or a statement the server canceled (statement_timeout)
// matches store.ErrUnavailable (store.ErrNotReached when no connection
// could be made, so nothing was done), and so does a server that has
// become read-only; a call whose context ended matches ctx's
// error; anything else is an engine failure named after op. The original
// error stays in the chain, for logs.
func wrap(ctx context.Context, op string, err error, lost bool) error {
	switch {
	case err == nil:
		return nil
	case contractError(err):
		return err
	case ctx.Err() != nil && !errors.Is(err, ctx.Err()):
		return fmt.Errorf("postgres: %s: %w: %w", op, ctx.Err(), err)
	case ctx.Err() == nil && notReached(err):
		return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrNotReached, err)
	case ctx.Err() == nil && (lost || unreachable(err) || readOnly(err) || timedOut(err)):
		return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// contractError reports whether err is one of the store's own errors,
// which pass through wrap as they are.
func contractError(err error) bool {
	var nr *store.NotReadyError
	if errors.As(err, &nr) {
		return true
	}
	for _, e := range []error{store.ErrNamespaceNotFound, store.ErrKeyNotFound, store.ErrTokenNotFound, store.ErrNameTaken,
		store.ErrIDTaken, store.ErrAlreadyDeleting, store.ErrNotDeleting, store.ErrInvalidArgument, store.ErrUnavailable, store.ErrNotReached, store.ErrClosed,
		store.ErrHistoryGone} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// notReached reports whether err says no connection could be made, so the
// call reached no database.
func notReached(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}

// timedOut reports whether err is a statement the server canceled:
// query_canceled, which statement_timeout raises.
func timedOut(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "57014"
}

// readOnly reports whether err is a write refused by a read-only server:
// read_only_sql_transaction, which a standby raises, and a primary whose
// default_transaction_read_only was turned on.
func readOnly(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "25006"
}

// unreachable reports whether err says that the database cannot be
// reached or is not serving: no connection could be made (refused,
// unreachable, or rejected by a server starting up, shutting down or out
// of connection slots, or for any other reason), or the server ended the
// session (shutdown, crash of another server process, a connection
// failure).
func unreachable(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57P01", // admin_shutdown
			"57P02", // crash_shutdown
			"57P03", // cannot_connect_now
			"53300": // too_many_connections
			return true
		}
		return strings.HasPrefix(pe.Code, "08") // connection_exception
	}
	return false
}

const (
	statusReady    = string(kv.StatusProvisionOK)
	statusPending  = string(kv.StatusPending)
	statusDeleting = string(kv.StatusDeleting)
)

// nsCheck maps the status a key operation found for its namespace (nil:
// no such namespace for the organization) to the operation's error.
func nsCheck(status *string) error {
	switch {
	case status == nil:
		return store.ErrNamespaceNotFound
	case *status != statusReady:
		return &store.NotReadyError{Status: kv.Status(*status)}
	}
	return nil
}

// checkKeyRow maps the outcome of a key statement that returns one row
// for the namespace: no row is a missing namespace (or another org's),
// otherwise the namespace's status decides.
func checkKeyRow(err error, status *string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNamespaceNotFound
	}
	if err != nil {
		return err
	}
	return nsCheck(status)
}

// Times of keys are stored as Unix nanoseconds; 0 is never used. A time
// past 2262 (beyond int64 nanoseconds) is stored as the last representable
// instant, one before 1970 as its first nanosecond.
func encodeTime(t time.Time) int64 {
	if t.After(maxTime) {
		return math.MaxInt64
	}
	n := t.UnixNano()
	if n < 1 {
		return 1
	}
	return n
}

var maxTime = time.Unix(0, math.MaxInt64)

func decodeTime(n int64) time.Time { return time.Unix(0, n).UTC() }

// encodeExpiry maps a zero time (never expires) to NULL.
func encodeExpiry(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := encodeTime(t)
	return &n
}

// ---- namespaces

const nsColumns = `id, org, name, status, created_at, updated_at`

const (
	sqlCreateNamespace = `INSERT INTO namespaces (id, org, name, status, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6)`
	sqlGetNamespace = `SELECT ` + nsColumns + ` FROM namespaces WHERE id = $1 AND org = $2`

	// One statement, so the total and the page come from one snapshot.
	sqlListNamespaces = `SELECT t.total, n.id, n.org, n.name, n.status, n.created_at, n.updated_at
FROM (SELECT count(*) AS total FROM namespaces WHERE org = $1) t
LEFT JOIN LATERAL (
	SELECT ` + nsColumns + ` FROM namespaces
	WHERE org = $1
	ORDER BY created_at, id
	OFFSET $2 LIMIT $3
) n ON true
ORDER BY n.created_at, n.id`

	// MarkDeleting also drops any lease: a provisioning worker's lease would
	// otherwise hold off the purge until it expired, and its CompleteProvision
	// changes nothing once the namespace is deleting.
	sqlMarkDeleting = `UPDATE namespaces
SET status = 'deleting', updated_at = $3, lease_holder = NULL, lease_until = NULL
WHERE id = $1 AND org = $2 AND status <> 'deleting'
RETURNING ` + nsColumns

	// The inner SELECT picks the oldest unleased job, skipping rows another
	// claimer has locked; the outer conditions are evaluated again on the
	// row as it is once locked. CockroachDB accepts FOR UPDATE SKIP LOCKED
	// (since 22.2), as does YugabyteDB.
	sqlClaimLifecycleJob = `UPDATE namespaces
SET lease_holder = $1, lease_until = $3
WHERE id = (
	SELECT id FROM namespaces
	WHERE status IN ('pending', 'deleting') AND (lease_until IS NULL OR lease_until <= $2)
	ORDER BY updated_at
	LIMIT 1
	FOR UPDATE SKIP LOCKED
) AND status IN ('pending', 'deleting') AND (lease_until IS NULL OR lease_until <= $2)
RETURNING ` + nsColumns

	sqlCompleteProvision = `UPDATE namespaces
SET status = $2, updated_at = $3, lease_holder = NULL, lease_until = NULL
WHERE id = $1 AND status = 'pending'`

	sqlNamespaceStatus = `SELECT status FROM namespaces WHERE id = $1`

	// sqlPurgeKeys deletes up to $2 keys of a namespace that is deleting.
	sqlPurgeKeys = `DELETE FROM keys
WHERE ns_id = $1 AND key IN (SELECT key FROM keys WHERE ns_id = $1 ORDER BY key LIMIT $2)
AND EXISTS (SELECT 1 FROM namespaces WHERE id = $1 AND status = 'deleting')`

	// sqlPurgeChanges deletes up to $2 changes of a namespace that is
	// deleting, and returns how many it found (it deletes fewer when a
	// compaction removes some first).
	sqlPurgeChanges = `WITH c AS (
	SELECT rev FROM changes
	WHERE ns_id = $1 AND EXISTS (SELECT 1 FROM namespaces WHERE id = $1 AND status = 'deleting')
	ORDER BY rev LIMIT $2
), d AS (
	DELETE FROM changes WHERE ns_id = $1 AND rev IN (SELECT rev FROM c) RETURNING 1
)
SELECT count(*) FROM c`

	// sqlPurgeNamespace deletes a deleting namespace and whatever keys and
	// changes it still has, and its feed's horizon, in one statement.
	// Writable CTEs on different tables are accepted by CockroachDB and
	// YugabyteDB.
	sqlPurgeNamespace = `WITH ns AS (
	DELETE FROM namespaces WHERE id = $1 AND status = 'deleting' RETURNING id
), k AS (
	DELETE FROM keys WHERE ns_id = (SELECT id FROM ns) RETURNING 1
), c AS (
	DELETE FROM changes WHERE ns_id = (SELECT id FROM ns) RETURNING 1
), h AS (
	DELETE FROM change_horizons WHERE ns_id = (SELECT id FROM ns) RETURNING 1
)
SELECT count(*) FROM ns`
)

type rowScanner interface{ Scan(...any) error }

func scanNamespace(r rowScanner) (kv.Namespace, error) {
	var (
		id                 [16]byte
		status             string
		ns                 kv.Namespace
		created, updatedAt time.Time
	)
	if err := r.Scan(&id, &ns.Org, &ns.Name, &status, &created, &updatedAt); err != nil {
		return kv.Namespace{}, err
	}
	ns.ID = kv.ID(id)
	ns.Status = kv.Status(status)
	ns.CreatedAt = created.UTC()
	ns.UpdatedAt = updatedAt.UTC()
	return ns, nil
}

// CreateNamespace implements store.Store. A name already used in ns.Org is
// an error matching kv.ErrConflict.
func (db *DB) CreateNamespace(ctx context.Context, ns kv.Namespace) error {
	id := [16]byte(ns.ID)
	return db.conn(ctx, "create namespace", func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, sqlCreateNamespace, id, ns.Org, ns.Name, string(ns.Status), ns.CreatedAt, ns.UpdatedAt)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			if pe.ConstraintName == "namespaces_org_name_key" {
				return store.ErrNameTaken
			}
			return store.ErrIDTaken
		}
		return err
	})
}

// GetNamespace implements store.Store.
func (db *DB) GetNamespace(ctx context.Context, org string, id kv.ID) (kv.Namespace, error) {
	nsID := [16]byte(id)
	var ns kv.Namespace
	err := db.conn(ctx, "get namespace", func(c *pgx.Conn) error {
		var err error
		ns, err = scanNamespace(c.QueryRow(ctx, sqlGetNamespace, nsID, org))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNamespaceNotFound
		}
		return err
	})
	return ns, err
}

// ListNamespaces implements store.Store.
func (db *DB) ListNamespaces(ctx context.Context, org string, offset, limit int) ([]kv.Namespace, int, error) {
	if offset < 0 || limit < 1 {
		return nil, 0, fmt.Errorf("postgres: ListNamespaces offset %d, limit %d: %w", offset, limit, store.ErrInvalidArgument)
	}
	var (
		page  []kv.Namespace
		total int
	)
	err := db.conn(ctx, "list namespaces", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, sqlListNamespaces, org, offset, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id               *[16]byte
				o, name, status  *string
				created, updated *time.Time
			)
			if err := rows.Scan(&total, &id, &o, &name, &status, &created, &updated); err != nil {
				return err
			}
			if id == nil {
				continue // the page is empty
			}
			page = append(page, kv.Namespace{
				ID: kv.ID(*id), Org: *o, Name: *name, Status: kv.Status(*status),
				CreatedAt: created.UTC(), UpdatedAt: updated.UTC(),
			})
		}
		return rows.Err()
	})
	if err != nil {
		return nil, 0, err
	}
	return page, total, nil
}

// MarkDeleting implements store.Store. The UPDATE waits for key writes
// and sweeps in flight on the namespace (they hold its row FOR SHARE), and
// writes that start later find it deleting. In the same transaction, with
// a snapshot taken after the UPDATE (READ COMMITTED: each statement takes
// its own), sqlEndStorage ends the namespace's stored bytes at now.
func (db *DB) MarkDeleting(ctx context.Context, org string, id kv.ID, now time.Time) (kv.Namespace, error) {
	nsID := [16]byte(id)
	var ns kv.Namespace
	err := db.conn(ctx, "mark deleting", func(c *pgx.Conn) error {
		// The namespace can change between the UPDATE and the look that
		// explains why it matched nothing; then try again.
		for range 5 {
			var updated bool
			err := retryTransient(ctx, func() error {
				updated = false
				return pgx.BeginTxFunc(ctx, c, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
					var err error
					ns, err = scanNamespace(tx.QueryRow(ctx, sqlMarkDeleting, nsID, org, now))
					if errors.Is(err, pgx.ErrNoRows) {
						return nil
					}
					if err != nil {
						return err
					}
					a := atTime(now)
					if _, err := tx.Exec(ctx, sqlEndStorage, nsID, org, a.ns, a.month, a.offset, shardOf(tx.Conn())); err != nil {
						return err
					}
					updated = true
					return nil
				})
			})
			if err != nil || updated {
				return err
			}
			cur, err := scanNamespace(c.QueryRow(ctx, sqlGetNamespace, nsID, org))
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				return store.ErrNamespaceNotFound
			case err != nil:
				return err
			case cur.Status == kv.StatusDeleting:
				return store.ErrAlreadyDeleting
			}
		}
		return errors.New("namespace changed under every attempt")
	})
	return ns, err
}

// ClaimLifecycleJob implements store.Store. Lease times have microsecond
// precision.
func (db *DB) ClaimLifecycleJob(ctx context.Context, holder string, now time.Time, lease time.Duration) (kv.Namespace, bool, error) {
	var (
		ns kv.Namespace
		ok bool
	)
	err := db.conn(ctx, "claim lifecycle job", func(c *pgx.Conn) error {
		var err error
		ns, err = scanNamespace(c.QueryRow(ctx, sqlClaimLifecycleJob, holder, now, now.Add(lease)))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		ok = err == nil
		return err
	})
	return ns, ok, err
}

// CompleteProvision implements store.Store. It does not check that holder
// still holds the lease: completing a provision twice is harmless, and the
// second completion finds the namespace no longer pending.
func (db *DB) CompleteProvision(ctx context.Context, id kv.ID, holder string, to kv.Status, now time.Time) error {
	if to != kv.StatusProvisionOK && to != kv.StatusProvisionFailed {
		return fmt.Errorf("postgres: CompleteProvision to status %q: %w", to, store.ErrInvalidArgument)
	}
	nsID := [16]byte(id)
	return db.conn(ctx, "complete provision", func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, sqlCompleteProvision, nsID, string(to), now)
		return err
	})
}

// PurgeNamespace implements store.Store. A namespace that exists but is
// not deleting is left alone and reported as an error matching
// kv.ErrConflict. holder is not checked: purging is idempotent.
//
// The keys go first, in statements of at most purgeBatch keys, and the last
// of them with the namespace row in one statement. One statement for any
// number of keys would be simplest, but on a very large namespace it is one
// huge transaction: it holds its locks and WAL for as long as it runs,
// hits statement_timeout, and on CockroachDB exceeds its transaction size
// limits. Deleting in batches is safe because no key can be added to a
// namespace once it is deleting.
//
// The namespace's changes go the same way, after its keys (no change is
// recorded once it is deleting either), until none is found: a compaction
// that removed some of them meanwhile has then committed, its horizon
// with it, which the last statement removes.
func (db *DB) PurgeNamespace(ctx context.Context, id kv.ID, holder string) error {
	nsID := [16]byte(id)
	return db.conn(ctx, "purge namespace", func(c *pgx.Conn) error {
		for {
			tag, err := c.Exec(ctx, sqlPurgeKeys, nsID, db.purgeBatch)
			if err != nil {
				return err
			}
			if tag.RowsAffected() < int64(db.purgeBatch) {
				break
			}
		}
		for {
			var found int
			if err := c.QueryRow(ctx, sqlPurgeChanges, nsID, db.purgeBatch).Scan(&found); err != nil {
				return err
			}
			if found == 0 {
				break
			}
		}
		var n int
		if err := c.QueryRow(ctx, sqlPurgeNamespace, nsID).Scan(&n); err != nil {
			return err
		}
		if n == 1 {
			return nil
		}
		var status string
		err := c.QueryRow(ctx, sqlNamespaceStatus, nsID).Scan(&status)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil // purged already
		case err != nil:
			return err
		}
		return store.ErrNotDeleting
	})
}

// ---- keys

const (
	// One statement: the namespace and the key are read from one snapshot.
	sqlGetKey = `SELECT n.status, k.value, k.content_type, k.updated_at, k.expires_at, k.revision
FROM namespaces n
LEFT JOIN keys k ON n.status = 'provision_ok' AND k.ns_id = n.id AND k.key = $3
WHERE n.id = $1 AND n.org = $2`

	// The LATERAL subquery is a range scan of the primary key in key
	// order, bounded by [$4, $5) and after $3. A nested loop over the one
	// namespace row gives its rows in that order, but SQL does not promise
	// that a join keeps it, and an outer ORDER BY would sort rows that
	// already come in order (a quarter of the statement's time): ListKeys
	// checks the order, and sorts only if it is not kept. CockroachDB
	// (20.1+) and YugabyteDB accept LATERAL.
	sqlListKeysTemplate = `SELECT n.status, k.key, k.size, k.updated_at, k.revision
FROM namespaces n
LEFT JOIN LATERAL (
	SELECT key, octet_length(value) AS size, updated_at, revision FROM keys
	WHERE ns_id = n.id AND n.status = 'provision_ok'
		AND key > $3::bytea AND key >= $4::bytea %s
		AND (expires_at IS NULL OR expires_at > $6::bigint)
	ORDER BY key
	LIMIT $7
) k ON true
WHERE n.id = $1 AND n.org = $2`
)

// sqlDeleteKey deletes a key of a ready namespace and meters the
// removal in the same statement: one delete at now ($5, $6), and the
// key's bytes stop counting at now, or at its expiry if that has
// passed by now ($4). The namespace row is locked FOR SHARE as in
// sqlPutKey. $7 is the shard (see usage.go). A removal is recorded in
// the change feed under a revision taken once the DELETE holds the row.
var sqlDeleteKey = `WITH ns AS (
	SELECT id, status FROM namespaces WHERE id = $1 AND org = $2 FOR SHARE
), d AS (
	DELETE FROM keys WHERE ns_id = (SELECT id FROM ns WHERE status = 'provision_ok') AND key = $3::bytea
	RETURNING expires_at, (octet_length(key) + octet_length(value))::bigint AS size
), ev AS (
	SELECT $5::date AS month, $6::bigint AS off, 1 AS deletes,
		CASE WHEN d.expires_at IS NULL OR d.expires_at > $4::bigint THEN -d.size ELSE 0 END AS delta
	FROM d
	UNION ALL
	SELECT x.month, x.off, 0, -d.size
	FROM d CROSS JOIN LATERAL ` + sqlAtMonth("d.expires_at") + ` x
	WHERE d.expires_at <= $4::bigint
), u AS (
	INSERT INTO ns_usage AS u (org, ns_id, month, shard, deletes, delta_sum, weighted_sum)
	SELECT $2, $1, month, $7, sum(deletes), sum(delta), sum(delta::numeric * off)
	FROM ev GROUP BY month ORDER BY month
	` + sqlAddAll + `
	RETURNING 1
), ` + sqlDayEvents("deletes", "$7", "") + `, ch AS (
	INSERT INTO changes (ns_id, rev, kind, key, at)
	SELECT $1, kv_next_revision(), ` + changeDelete + `, $3::bytea, $4::bigint FROM d
)
SELECT ns.status, (SELECT count(*) FROM d) FROM ns`

// sqlPutCondition decides a PUT's condition ($12: 0 none, 1 the key must
// exist, 2 it must not, 3 it must exist with a revision in $13) on old,
// the key's row as locked.
const sqlPutCondition = `CASE $12::int
		WHEN 0 THEN true
		WHEN 1 THEN EXISTS (SELECT 1 FROM old WHERE live)
		WHEN 2 THEN NOT EXISTS (SELECT 1 FROM old WHERE live)
		ELSE EXISTS (SELECT 1 FROM old WHERE live AND revision = ANY($13::bigint[]))
	END AS pass`

// sqlRevisionAfterOld is a PUT's new revision, taken after old has read,
// and so locked, the key's row: the aggregate reads old to its end before
// the revision is taken from its one row. w's condition alone does not
// order them: without a condition ($12 = 0) it never reads old, and the
// revision came before the row lock, which the upsert takes; a write that
// waited there for another could then commit after it with the lower
// revision.
const sqlRevisionAfterOld = `(SELECT kv_next_revision() FROM (SELECT count(*) FROM old) AS locked)`

// sqlPutUpsert ends a PUT's insert of the key: an existing row (one old
// saw) takes the new value and revision, and its version goes up by one
// (back to 1 if it had expired).
const sqlPutUpsert = `	ON CONFLICT (ns_id, key) DO UPDATE SET
		value = excluded.value,
		content_type = excluded.content_type,
		updated_at = excluded.updated_at,
		expires_at = excluded.expires_at,
		version = CASE WHEN k.expires_at IS NOT NULL AND k.expires_at <= excluded.updated_at THEN 1 ELSE k.version + 1 END,
		revision = excluded.revision
	WHERE EXISTS (SELECT 1 FROM old)`

// sqlPutKey checks the namespace, writes the key and meters the write in
// one statement. The namespace row is locked FOR SHARE, so MarkDeleting
// (an UPDATE of that row) waits for this write, and a write that starts
// after MarkDeleting sees the new status. INSERT ... ON CONFLICT decides
// the race between concurrent first writes: exactly one inserts, with
// version 1; the others update the row it committed, and see version 1
// again only if that row had expired by their now ($6). So version 1
// means "created", without reading system columns such as xmax, which
// CockroachDB and YugabyteDB do not have. (On CockroachDB, whose default
// isolation is SERIALIZABLE, the namespace read and MarkDeleting's write
// conflict even where FOR SHARE is not a real shared lock, before 23.2.)
//
// Metering needs the size and expiry of the value replaced, which
// RETURNING cannot give (it returns the new row). old reads them, locking
// the row FOR UPDATE, so they are those of the latest version and stay so.
// A row that old could not see (a concurrent first write committed after
// this statement's snapshot) may still be what the INSERT conflicts with;
// the DO UPDATE's WHERE then refuses to update it, nothing is written or
// counted, w returns no row, and PutKey runs the statement again, with a
// snapshot that sees the row.
//
// The write counts at now ($8 month, $9 offset), with the change of live
// bytes: the new size ($11) less the old one if it was live. An old value
// that had expired stops counting at its expiry instead, in its month.
// $10 is the shard (see usage.go).
//
// A condition ($12: 0 none, 1 the key must exist, 2 it must not, 3 it
// must exist with a revision in $13) is decided on old, the latest
// version of the row, locked: ok. When it fails, nothing is written or
// counted, and the statement returns the key's live revision, if any.
// Every write takes the next revision; a row inserted by a concurrent
// first write that old did not see is retried as above, and the retry
// decides the condition on it.
//
// The new revision is taken once old has locked the key's row
// (sqlRevisionAfterOld), so for one key revisions increase in the order
// of the commits, which ETags and the change feed's Snapshot rely on. A
// revision taken for a write that then finds an unseen row is dropped
// with the write (the retry takes another, under the lock). The put is
// recorded in the change feed in the same statement (ch, sqlRecordPut).
// A write that created the key from no row took its revision before its
// insert won, so it is checked once it has (created, sqlRecordPut).
var sqlPutKey = `WITH ns AS (
	SELECT id, status FROM namespaces WHERE id = $1 AND org = $2 FOR SHARE
), old AS (
	SELECT expires_at, (octet_length(key) + octet_length(value))::bigint AS size, revision,
		(expires_at IS NULL OR expires_at > $6::bigint) AS live
	FROM keys WHERE ns_id = (SELECT id FROM ns WHERE status = 'provision_ok') AND key = $3::bytea
	FOR UPDATE
), ok AS (
	SELECT ` + sqlPutCondition + `
), w AS (
	INSERT INTO keys AS k (ns_id, key, value, content_type, updated_at, expires_at, version, revision)
	SELECT id, $3::bytea, $4::bytea, $5::text, $6::bigint, $7::bigint, 1, ` + sqlRevisionAfterOld + `
	FROM ns WHERE status = 'provision_ok' AND (SELECT pass FROM ok)
` + sqlPutUpsert + `
	RETURNING k.version, k.revision
), ev AS (
	SELECT $8::date AS month, $9::bigint AS off, 1 AS writes,
		$11::bigint - COALESCE((SELECT size FROM old WHERE expires_at IS NULL OR expires_at > $6::bigint), 0) AS delta
	UNION ALL
	SELECT x.month, x.off, 0, -old.size
	FROM old CROSS JOIN LATERAL ` + sqlAtMonth("old.expires_at") + ` x
	WHERE old.expires_at <= $6::bigint
), u AS (
	INSERT INTO ns_usage AS u (org, ns_id, month, shard, writes, delta_sum, weighted_sum)
	SELECT $2, $1, month, $10, sum(writes), sum(delta), sum(delta::numeric * off)
	FROM ev WHERE EXISTS (SELECT 1 FROM w)
	GROUP BY month ORDER BY month
	` + sqlAddAll + `
	RETURNING 1
), ` + sqlDayEvents("writes", "$10", "WHERE EXISTS (SELECT 1 FROM w)") + `, ` + sqlRecordPut + `
SELECT ns.status, w.version, w.revision, (SELECT pass FROM ok), (SELECT revision FROM old WHERE live), ` + sqlCheckedCreate + `
FROM ns LEFT JOIN w ON true`

// sqlPutKeyFast is sqlPutKey for the common case: the key is absent, or
// its value is live, and the write's instant is stored as it is (see at),
// so the write is one change at now ($8 month, $9 offset; $14 day, $15 the
// offset in the day, computed by the caller) and adds to one row of each
// usage table, with no grouping, no sort and no date arithmetic in the
// statement: a plan about half the size of sqlPutKey's, which PostgreSQL
// sets up and runs on every execution. The conditions, the locks and the
// retry on an unseen row are sqlPutKey's. When old is a value that has
// expired (its bytes stop counting at its expiry, in another month or
// day), the statement writes and counts nothing and returns fast false,
// and PutKey runs sqlPutKey.
var sqlPutKeyFast = `WITH ns AS (
	SELECT id, status FROM namespaces WHERE id = $1 AND org = $2 FOR SHARE
), old AS (
	SELECT (octet_length(key) + octet_length(value))::bigint AS size, revision,
		(expires_at IS NULL OR expires_at > $6::bigint) AS live
	FROM keys WHERE ns_id = (SELECT id FROM ns WHERE status = 'provision_ok') AND key = $3::bytea
	FOR UPDATE
), ok AS (
	SELECT NOT EXISTS (SELECT 1 FROM old WHERE NOT live) AS fast, ` + sqlPutCondition + `
), w AS (
	INSERT INTO keys AS k (ns_id, key, value, content_type, updated_at, expires_at, version, revision)
	SELECT id, $3::bytea, $4::bytea, $5::text, $6::bigint, $7::bigint, 1, ` + sqlRevisionAfterOld + `
	FROM ns WHERE status = 'provision_ok' AND (SELECT fast AND pass FROM ok)
` + sqlPutUpsert + `
	RETURNING k.version, k.revision, $11::bigint - COALESCE((SELECT size FROM old), 0) AS delta
), u AS (
	INSERT INTO ns_usage AS u (org, ns_id, month, shard, writes, delta_sum, weighted_sum)
	SELECT $2, $1, $8::date, $10, 1, w.delta, w.delta::numeric * $9::bigint FROM w
	` + onConflictAdd(usageMonthKey, "writes", "delta_sum", "weighted_sum") + `
	RETURNING 1
), ud AS (
	INSERT INTO ns_usage_day AS u (org, day, ns_id, shard, writes, delta_sum, weighted_sum)
	SELECT $2, $14::date, $1, $10, 1, w.delta, w.delta::numeric * $15::bigint
	FROM w CROSS JOIN (SELECT count(*) FROM u) after_u
	` + onConflictAdd(usageDayKey, "writes", "delta_sum", "weighted_sum") + `
), ` + sqlRecordPut + `
SELECT ns.status, w.version, w.revision, ok.pass, (SELECT revision FROM old WHERE live), ok.fast, ` + sqlCheckedCreate + `
FROM ns CROSS JOIN ok LEFT JOIN w ON true`

// putKeyArgs are the arguments of sqlPutKey.
func putKeyArgs(id [16]byte, org, key string, data []byte, contentType string, expires time.Time, cond store.Condition, now time.Time, shard int16) []any {
	a := atTime(now)
	mode, revs := 0, []int64(nil)
	switch {
	case cond.Absent:
		mode = 2
	case len(cond.Revisions) > 0:
		mode = 3
		for _, r := range cond.Revisions {
			revs = append(revs, int64(r))
		}
	case cond.Exists:
		mode = 1
	}
	return []any{id, org, []byte(key), data, contentType, a.ns, encodeExpiry(expires), a.month, a.offset, shard, int64(len(key) + len(data)), mode, revs}
}

// sqlSweepExpired removes up to $2 keys expired by $1 (ns). The inner
// SELECT's expiry test is evaluated again on each row as it is once
// locked, and the DELETE's too, so a key rewritten without expiry
// meanwhile stays. A removed key's bytes stop counting at its expiry
// (in its month; $3 is the shard), when its namespace is provision_ok:
// the namespace row is locked FOR SHARE, as key writes do, so a
// MarkDeleting either waits for this sweep and sees its changes, or has
// committed first, and then the sweep records nothing (MarkDeleting has
// ended the namespace's storage, these keys included). Each key removed
// from a provision_ok namespace is recorded in the change feed as an
// expiry at now, under a revision taken once the DELETE holds its row.
var sqlSweepExpired = `WITH d AS (
	DELETE FROM keys
	WHERE (ns_id, key) IN (
		SELECT ns_id, key FROM keys WHERE expires_at <= $1
		ORDER BY expires_at
		LIMIT $2
		FOR UPDATE SKIP LOCKED
	) AND expires_at <= $1
	RETURNING ns_id, key, expires_at, (octet_length(key) + octet_length(value))::bigint AS size
), ns AS (
	SELECT id, org FROM namespaces
	WHERE id IN (SELECT ns_id FROM d) AND status = 'provision_ok'
	FOR SHARE
), ch AS (
	INSERT INTO changes (ns_id, rev, kind, key, at)
	SELECT d.ns_id, kv_next_revision(), ` + changeExpire + `, d.key, $1 FROM d JOIN ns ON ns.id = d.ns_id
), u AS (
	INSERT INTO ns_usage AS u (org, ns_id, month, shard, delta_sum, weighted_sum)
	SELECT ns.org, d.ns_id, x.month, $3, -sum(d.size), -sum(d.size::numeric * x.off)
	FROM d JOIN ns ON ns.id = d.ns_id
	CROSS JOIN LATERAL ` + sqlAtMonth("d.expires_at") + ` x
	GROUP BY ns.org, d.ns_id, x.month
	ORDER BY d.ns_id, x.month
	` + sqlAddStorage + `
	RETURNING 1
), ud AS (
	INSERT INTO ns_usage_day AS u (org, day, ns_id, shard, delta_sum, weighted_sum)
	SELECT ns.org, y.day, d.ns_id, $3, -sum(d.size), -sum(d.size::numeric * y.doff)
	FROM d JOIN ns ON ns.id = d.ns_id
	CROSS JOIN LATERAL ` + sqlAtDay("d.expires_at") + ` y
	CROSS JOIN (SELECT count(*) FROM u) after_u
	GROUP BY ns.org, d.ns_id, y.day
	ORDER BY d.ns_id, y.day
	` + sqlAddDayStorage + `
)
SELECT count(*) FROM d`

var (
	// sqlListKeys bounds the range above by $5; sqlListKeysUnbounded does
	// not (an empty prefix). Two statements rather than "$5 IS NULL OR
	// key < $5", which a cached plan cannot use as an index bound.
	sqlListKeys          = fmt.Sprintf(sqlListKeysTemplate, "AND key < $5::bytea")
	sqlListKeysUnbounded = fmt.Sprintf(sqlListKeysTemplate, "AND $5::bytea IS NULL")
)

// putKey is PutKey run alone, in a statement of its own.
func (db *DB) putKey(ctx context.Context, org string, nsID kv.ID, key string, v store.PutValue, now time.Time) (store.Written, error) {
	id := [16]byte(nsID)
	data := v.Data
	if data == nil {
		data = []byte{} // NULL would violate NOT NULL
	}
	var w store.Written
	err := db.conn(ctx, "put key", func(c *pgx.Conn) error {
		return retryTransient(ctx, func() error {
			var (
				status  *string
				version *int64
				rev     *int64
				pass    *bool
				current *int64
			)
			args := putKeyArgs(id, org, key, data, v.ContentType, v.ExpiresAt, v.If, now, shardOf(c))
			fast := false
			if a := atTime(now); a.exact {
				err := c.QueryRow(ctx, sqlPutKeyFast, append(args, a.day, a.dayOffset)...).Scan(&status, &version, &rev, &pass, &current, &fast, nil)
				if err := checkKeyRow(err, status); err != nil {
					return err
				}
			}
			if !fast {
				// The value replaced has expired (or now is out of
				// the stored range): the full statement.
				err := c.QueryRow(ctx, sqlPutKey, args...).Scan(&status, &version, &rev, &pass, &current, nil)
				if err := checkKeyRow(err, status); err != nil {
					return err
				}
			}
			if pass != nil && !*pass {
				if current != nil {
					return &store.PreconditionError{Exists: true, Revision: store.Revision(*current)}
				}
				return &store.PreconditionError{}
			}
			if version == nil {
				// The key was created by a write this statement's
				// snapshot did not see; see sqlPutKey.
				return errRetry
			}
			w = store.Written{Created: *version == 1, Revision: store.Revision(*rev)}
			return nil
		})
	})
	return w, err
}

// DeleteKey implements store.Store.
func (db *DB) DeleteKey(ctx context.Context, org string, nsID kv.ID, key string, now time.Time) (bool, error) {
	id := [16]byte(nsID)
	var deleted bool
	err := db.conn(ctx, "delete key", func(c *pgx.Conn) error {
		return retryTransient(ctx, func() error {
			var (
				status *string
				n      int64
			)
			a := atTime(now)
			err := c.QueryRow(ctx, sqlDeleteKey, id, org, []byte(key), a.ns, a.month, a.offset, shardOf(c)).Scan(&status, &n)
			deleted = n > 0
			return checkKeyRow(err, status)
		})
	})
	if err != nil {
		return false, err
	}
	return deleted, nil
}

// ListKeys implements store.Store.
func (db *DB) ListKeys(ctx context.Context, org string, nsID kv.ID, prefix, after string, limit int, now time.Time) ([]kv.KeyInfo, bool, error) {
	id := [16]byte(nsID)
	if limit < 1 {
		return nil, false, fmt.Errorf("postgres: ListKeys limit %d: %w", limit, store.ErrInvalidArgument)
	}
	query, hi := sqlListKeysUnbounded, []byte(nil)
	if end := store.PrefixEnd([]byte(prefix)); end != nil {
		query, hi = sqlListKeys, end
	}
	var (
		keys []kv.KeyInfo
		more bool
	)
	err := db.conn(ctx, "list keys", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, query, id, org, []byte(after), []byte(prefix), hi, encodeTime(now), limit+1)
		if err != nil {
			return err
		}
		defer rows.Close()
		keys = make([]kv.KeyInfo, 0, min(limit+1, 1024))
		found := false
		raw := binaryColumns(rows.FieldDescriptions(), listColumns...) && !db.listByScan
		for rows.Next() {
			var (
				status  string
				key     []byte
				size    *int64
				updated *int64
				rev     *int64
			)
			if raw {
				// A page is up to 1,000 rows: decode them here rather
				// than through Scan, which allocates for every column.
				v := rows.RawValues()
				if !found {
					status = string(v[0])
				}
				if v[3] != nil {
					if v[1] == nil || len(v[2]) != 4 || len(v[3]) != 8 || len(v[4]) != 8 {
						return fmt.Errorf("postgres: list keys: a row of %d, %d, %d and %d bytes", len(v[1]), len(v[2]), len(v[3]), len(v[4]))
					}
					keys = append(keys, kv.KeyInfo{
						Key:       string(v[1]),
						Size:      int64(int32(binary.BigEndian.Uint32(v[2]))),
						UpdatedAt: decodeTime(int64(binary.BigEndian.Uint64(v[3]))),
						Revision:  binary.BigEndian.Uint64(v[4]),
					})
				}
			} else {
				if err := rows.Scan(&status, &key, &size, &updated, &rev); err != nil {
					return err
				}
				if updated != nil {
					keys = append(keys, kv.KeyInfo{Key: string(key), Size: *size, UpdatedAt: decodeTime(*updated), Revision: uint64(*rev)})
				}
			}
			if !found {
				found = true
				if err := nsCheck(&status); err != nil {
					return err
				}
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if !found {
			return store.ErrNamespaceNotFound
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	inOrder := func(a, b kv.KeyInfo) int { return strings.Compare(a.Key, b.Key) }
	if !slices.IsSortedFunc(keys, inOrder) {
		slices.SortFunc(keys, inOrder) // see sqlListKeysTemplate
	}
	if len(keys) > limit {
		keys, more = keys[:limit], true
	}
	return keys, more, nil
}

// listColumns are the types of a key listing's columns.
var listColumns = []uint32{pgtype.TextOID, pgtype.ByteaOID, pgtype.Int4OID, pgtype.Int8OID, pgtype.Int8OID}

// binaryColumns reports whether a statement's columns are of the types
// want, in the formats its caller decodes itself: text in either (whose
// two formats are the same bytes), anything else in PostgreSQL's binary
// format.
func binaryColumns(fields []pgconn.FieldDescription, want ...uint32) bool {
	if len(fields) != len(want) {
		return false
	}
	for i, f := range fields {
		if f.DataTypeOID != want[i] || want[i] != pgtype.TextOID && f.Format != pgx.BinaryFormatCode {
			return false
		}
	}
	return true
}

// SweepExpired implements store.Store. Concurrent sweepers skip the rows
// each other has locked rather than wait for them.
func (db *DB) SweepExpired(ctx context.Context, now time.Time, max int) (int, error) {
	if max < 1 {
		return 0, nil
	}
	var n int
	err := db.conn(ctx, "sweep expired", func(c *pgx.Conn) error {
		return retryTransient(ctx, func() error {
			return c.QueryRow(ctx, sqlSweepExpired, encodeTime(now), max, shardOf(c)).Scan(&n)
		})
	})
	return n, err
}

// serverClosed reports whether the server end of c, a connection idle in
// the pool, has closed, or, on a plain connection, has sent something
// nobody asked for (such as the error a terminated session gets before
// it is closed; under TLS, pending bytes may be a record the TLS layer
// has yet to read).
func serverClosed(c net.Conn) bool {
	switch sockpeek.Look(c) {
	case sockpeek.Closed:
		return true
	case sockpeek.Pending:
		_, tls := c.(interface{ NetConn() net.Conn })
		return !tls
	}
	return false
}

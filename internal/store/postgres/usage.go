package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/usagemath"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Usage metering: the model is Pebble's, so that both engines report the
// same numbers for the same history.
//
// Table ns_usage (migrations/0002_usage.sql) holds, per organization,
// namespace, month (UTC) and shard, the month's operation counts and its
// storage events: each change of the namespace's stored bytes (key plus
// value bytes) by delta at time t adds delta to the month's delta_sum and
// delta × (t − month start, in ns) to its weighted_sum. Every change is
// added in the same statement, or transaction, as the write that makes it.
//
// For a namespace that is provision_ok, the sum of all its delta_sum equals
// the size of its rows in keys, expired rows not yet swept included. An
// expired row's bytes stop counting at its expiry: when the row is swept,
// overwritten or deleted, −size is recorded at its expiry, in its month; as
// long as it is not, reports subtract it at its expiry themselves.
//
// MarkDeleting, in the transaction of the status change, records −size at
// the expiry of each unswept expired row and −(the rest) at now, so the
// namespace's sum becomes 0. From then on nothing about its keys is metered
// again: reports handle unswept expired rows of provision_ok namespaces
// only, and a sweep that removes a row of a namespace that is no longer
// provision_ok records nothing. Rows stay untouched until the purge (which
// meters nothing either), so MarkDeleting writes no row of keys, and cannot
// deadlock with a sweep holding some.
//
// Table ns_usage_day (migrations/0003_usage_days.sql) holds the same
// figures per calendar day (UTC), with weighted_sum from the day's start:
// each statement above adds its counts and changes to the rows of their
// days too, and reports split a month by day from them (UsageByDay). A
// statement adds to ns_usage first and to ns_usage_day after (its day
// insert reads the month insert's RETURNING to the end), so two statements
// never take the two tables' row locks in opposite orders.
//
// Shards: with one row per namespace and month, every write to a namespace,
// from every kvd process, would wait on that row's lock until the writer
// commits; see the migration. Every statement picks one shard for
// all the rows it adds to, and adds to several rows in the order (ns_id,
// month), so two statements that meet on a shard lock its rows in one order.

//
// A statement's shard is that of the connection it runs on (the server
// process's PID, which no two open connections share, modulo usageShards):
// a connection runs one statement at a time, so writers on one kvd never
// wait for each other's usage rows as long as its pool has at most
// usageShards connections, and writers of several kvd only when their
// connections' PIDs meet modulo usageShards. A shard picked at random made
// concurrent writers meet on a row (and wait for each other's commit) as
// soon as a few ran at once.

// usageShards is the number of rows each (org, namespace, month) is spread
// over. Reads sum every shard there is, so the number may change.
const usageShards = 64

// shardOf returns the usage shard of statements run on c.
func shardOf(c *pgx.Conn) int16 { return int16(c.PgConn().PID() % usageShards) }

// at is an instant as the usage statements take it: its month (its first
// day, bound to a DATE), the instant in Unix ns, and its offset in ns from
// the month's start; and its day (UTC, bound to a DATE) and offset in ns
// from the day's start, as sqlEvAtDay derives them from the month and
// offset. exact says that t is stored as it is (from 1970 to 2262): only
// then are day and dayOffset what sqlEvAtDay would compute.
type at struct {
	month     time.Time
	ns        int64
	offset    int64
	day       time.Time
	dayOffset int64
	exact     bool
}

func atTime(t time.Time) at {
	m := usagemath.MonthOf(t)
	n := encodeTime(t)
	a := at{month: m.Start(), ns: n, offset: n - m.Start().UnixNano()}
	if !t.Before(time.Unix(0, 1)) && t.Before(maxTime) {
		a.day = usagemath.DayOf(decodeTime(n))
		a.dayOffset = n - a.day.UnixNano()
		a.exact = true
	}
	return a
}

// sqlAtMonth is a subquery, for a LATERAL join, of the month (DATE) and the
// offset from its start (off, ns) of the instant expr (Unix ns, after
// 1970). Month boundaries are whole seconds, so the month of the second
// t/1e9 is t's; to_timestamp of a whole second is exact.
func sqlAtMonth(expr string) string {
	return fmt.Sprintf(`(
	SELECT mm.m::date AS month, %[1]s - extract(epoch FROM mm.m)::bigint * 1000000000 AS off
	FROM (SELECT date_trunc('month', to_timestamp(%[1]s / 1000000000) AT TIME ZONE 'UTC') AS m) mm
)`, expr)
}

// sqlAtDay is sqlAtMonth for the day (UTC): the day (DATE) and the offset
// from its start (doff, ns) of the instant expr.
func sqlAtDay(expr string) string {
	return fmt.Sprintf(`(
	SELECT dd.d::date AS day, %[1]s - extract(epoch FROM dd.d)::bigint * 1000000000 AS doff
	FROM (SELECT date_trunc('day', to_timestamp(%[1]s / 1000000000) AT TIME ZONE 'UTC') AS d) dd
)`, expr)
}

// sqlEvAtDay is sqlAtDay of the instant of an event row ev of (month,
// off), as the usage statements build them.
var sqlEvAtDay = sqlAtDay("(extract(epoch FROM ev.month)::bigint * 1000000000 + ev.off)")

// onConflictAdd is the ON CONFLICT clause of an insert into a usage table
// whose primary key is key: it adds the row's cols to the row there.
func onConflictAdd(key string, cols ...string) string {
	set := make([]string, len(cols))
	for i, c := range cols {
		set[i] = fmt.Sprintf("%[1]s = u.%[1]s + excluded.%[1]s", c)
	}
	return "ON CONFLICT (" + key + ") DO UPDATE SET\n\t\t" + strings.Join(set, ",\n\t\t")
}

// The keys of the usage tables, and the ON CONFLICT clauses of inserts that
// add storage events (sqlAdd...Storage) or counts too (sqlAdd...All), by
// month (ns_usage) and by day (ns_usage_day).
const (
	usageMonthKey = "org, ns_id, month, shard"
	usageDayKey   = "org, day, ns_id, shard"
)

var (
	sqlAddStorage    = onConflictAdd(usageMonthKey, "delta_sum", "weighted_sum")
	sqlAddAll        = onConflictAdd(usageMonthKey, "reads", "writes", "deletes", "lists", "delta_sum", "weighted_sum")
	sqlAddDayStorage = onConflictAdd(usageDayKey, "delta_sum", "weighted_sum")
	sqlAddDayAll     = onConflictAdd(usageDayKey, "reads", "writes", "deletes", "lists", "delta_sum", "weighted_sum")
)

// sqlDayEvents is the CTE ud of a key write's statement: it adds the events
// ev (month, off, delta and the count column count) to ns_usage_day, for
// namespace $1 of org $2 in shard shard, once u (the month's rows) is done;
// where, unless empty, filters them.
func sqlDayEvents(count, shard, where string) string {
	return `ud AS (
	INSERT INTO ns_usage_day AS u (org, day, ns_id, shard, ` + count + `, delta_sum, weighted_sum)
	SELECT $2, y.day, $1, ` + shard + `, sum(ev.` + count + `), sum(ev.delta), sum(ev.delta::numeric * y.doff)
	FROM ev CROSS JOIN LATERAL ` + sqlEvAtDay + ` y
	CROSS JOIN (SELECT count(*) FROM u) after_u
	` + where + `
	GROUP BY y.day ORDER BY y.day
	` + sqlAddDayAll + `
)`
}

// sqlEndStorage is MarkDeleting's second statement, run after the status
// change in its transaction: the namespace's stored bytes stop. $1 id, $2
// org, $3 now (ns), $4 now's month, $5 now's offset, $6 shard. It reads
// with a snapshot taken after the UPDATE that waited for every key write
// and sweep holding the namespace row, so it sees all their changes, and
// no later one meters anything.
var sqlEndStorage = `WITH exp AS (
	SELECT k.expires_at, (octet_length(k.key) + octet_length(k.value))::bigint AS size
	FROM keys k WHERE k.ns_id = $1 AND k.expires_at <= $3::bigint
), ev AS (
	SELECT x.month, x.off, -exp.size AS delta
	FROM exp CROSS JOIN LATERAL ` + sqlAtMonth("exp.expires_at") + ` x
	UNION ALL
	SELECT $4::date, $5::bigint,
		((SELECT COALESCE(sum(size), 0) FROM exp)
			- (SELECT COALESCE(sum(delta_sum), 0) FROM ns_usage WHERE org = $2 AND ns_id = $1))::bigint
), u AS (
	INSERT INTO ns_usage AS u (org, ns_id, month, shard, delta_sum, weighted_sum)
	SELECT $2, $1, month, $6, sum(delta), sum(delta::numeric * off)
	FROM ev GROUP BY month ORDER BY month
	` + sqlAddStorage + `
	RETURNING 1
)
INSERT INTO ns_usage_day AS u (org, day, ns_id, shard, delta_sum, weighted_sum)
SELECT $2, y.day, $1, $6, sum(ev.delta), sum(ev.delta::numeric * y.doff)
FROM ev CROSS JOIN LATERAL ` + sqlEvAtDay + ` y
CROSS JOIN (SELECT count(*) FROM u) after_u
GROUP BY y.day ORDER BY y.day
` + sqlAddDayStorage

// sqlAddUsage adds buffered counts, one row of the arrays per (org,
// namespace, day), to the rows of their months and of their days.
var sqlAddUsage = `WITH t AS (
	SELECT * FROM unnest($1::text[], $2::uuid[], $3::date[], $4::date[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
		AS t(org, ns_id, month, day, reads, writes, deletes, lists)
), u AS (
	INSERT INTO ns_usage AS u (org, ns_id, month, shard, reads, writes, deletes, lists)
	SELECT t.org, t.ns_id, t.month, $9, sum(t.reads), sum(t.writes), sum(t.deletes), sum(t.lists)
	FROM t GROUP BY t.org, t.ns_id, t.month
	ORDER BY t.ns_id, t.month
	` + onConflictAdd(usageMonthKey, "reads", "writes", "deletes", "lists") + `
	RETURNING 1
)
INSERT INTO ns_usage_day AS u (org, day, ns_id, shard, reads, writes, deletes, lists)
SELECT t.org, t.day, t.ns_id, $9, t.reads, t.writes, t.deletes, t.lists
FROM t CROSS JOIN (SELECT count(*) FROM u) after_u
ORDER BY t.ns_id, t.day
` + onConflictAdd(usageDayKey, "reads", "writes", "deletes", "lists")

// sqlUsageTemplate reports the month $2 (a DATE) of org $1 up to $4 (ns),
// the month starting at $3 (ns); %[1]s and %[2]s restrict it to namespace
// $5. u sums the usage rows of the month and the months before; x takes
// the expired, unswept keys of provision_ok namespaces as ends of storage
// at their expiry: before the month, less carried in; within it, a change
// in the month. One statement, so both come from one snapshot: a sweep
// moves a key from the one to the other atomically.
const sqlUsageTemplate = `WITH u AS (
	SELECT ns_id,
		sum(CASE WHEN month < $2 THEN delta_sum ELSE 0 END) AS carried,
		sum(CASE WHEN month = $2 THEN delta_sum ELSE 0 END) AS delta,
		sum(CASE WHEN month = $2 THEN weighted_sum ELSE 0 END) AS weighted,
		sum(CASE WHEN month = $2 THEN reads ELSE 0 END) AS reads,
		sum(CASE WHEN month = $2 THEN writes ELSE 0 END) AS writes,
		sum(CASE WHEN month = $2 THEN deletes ELSE 0 END) AS deletes,
		sum(CASE WHEN month = $2 THEN lists ELSE 0 END) AS lists,
		bool_or(month = $2) AS in_month
	FROM ns_usage
	WHERE org = $1 AND month <= $2 %[1]s
	GROUP BY ns_id
), x AS (
	SELECT k.ns_id,
		sum(CASE WHEN k.expires_at < $3 THEN z.size ELSE 0 END) AS carried,
		sum(CASE WHEN k.expires_at >= $3 THEN z.size ELSE 0 END) AS delta,
		sum(CASE WHEN k.expires_at >= $3 THEN z.size::numeric * (k.expires_at - $3) ELSE 0 END) AS weighted,
		bool_or(k.expires_at >= $3) AS in_month
	FROM namespaces n
	JOIN keys k ON k.ns_id = n.id
	CROSS JOIN LATERAL (SELECT (octet_length(k.key) + octet_length(k.value))::bigint AS size) z
	WHERE n.org = $1 AND n.status = 'provision_ok' AND k.expires_at <= $4 %[2]s
	GROUP BY k.ns_id
)
SELECT COALESCE(u.ns_id, x.ns_id),
	(COALESCE(u.carried, 0) - COALESCE(x.carried, 0))::bigint,
	(COALESCE(u.delta, 0) - COALESCE(x.delta, 0))::bigint,
	(COALESCE(u.weighted, 0) - COALESCE(x.weighted, 0))::text,
	COALESCE(u.reads, 0)::bigint, COALESCE(u.writes, 0)::bigint,
	COALESCE(u.deletes, 0)::bigint, COALESCE(u.lists, 0)::bigint,
	COALESCE(u.in_month, false) OR COALESCE(x.in_month, false)
FROM u FULL JOIN x ON x.ns_id = u.ns_id`

var (
	sqlUsageOrg = fmt.Sprintf(sqlUsageTemplate, "", "")
	sqlUsageNS  = fmt.Sprintf(sqlUsageTemplate, "AND ns_id = $5", "AND n.id = $5")
)

// sqlUsageDaysTemplate reads the days of month [$2, $3) (DATEs) of org $1
// up to $5 (ns), the month starting at $4 (ns); %[1]s and %[2]s restrict
// it to namespace $6. d sums the daily rows; x takes the expired, unswept
// keys of provision_ok namespaces as ends of storage at their expiry, in
// their day, as sqlUsageTemplate does for the month.
const sqlUsageDaysTemplate = `WITH d AS (
	SELECT ns_id, day, sum(reads) AS reads, sum(writes) AS writes, sum(deletes) AS deletes,
		sum(lists) AS lists, sum(delta_sum) AS delta, sum(weighted_sum) AS weighted
	FROM ns_usage_day
	WHERE org = $1 AND day >= $2 AND day < $3 %[1]s
	GROUP BY ns_id, day
), x AS (
	SELECT k.ns_id, y.day, sum(z.size) AS size, sum(z.size::numeric * y.doff) AS weighted
	FROM namespaces n
	JOIN keys k ON k.ns_id = n.id
	CROSS JOIN LATERAL (SELECT (octet_length(k.key) + octet_length(k.value))::bigint AS size) z
	CROSS JOIN LATERAL %[3]s y
	WHERE n.org = $1 AND n.status = 'provision_ok' AND k.expires_at >= $4 AND k.expires_at <= $5 %[2]s
	GROUP BY k.ns_id, y.day
)
SELECT ns_id, day, reads::bigint, writes::bigint, deletes::bigint, lists::bigint, delta::bigint, weighted::text FROM d
UNION ALL
SELECT ns_id, day, 0, 0, 0, 0, -(size::bigint), (-weighted)::text FROM x`

var (
	sqlUsageDaysOrg = fmt.Sprintf(sqlUsageDaysTemplate, "", "", sqlAtDay("k.expires_at"))
	sqlUsageDaysNS  = fmt.Sprintf(sqlUsageDaysTemplate, "AND ns_id = $6", "AND n.id = $6", sqlAtDay("k.expires_at"))
)

// AddUsage implements store.Store with one statement.
func (db *DB) AddUsage(ctx context.Context, counts []store.UsageDelta) error {
	if db.closed.Load() {
		return store.ErrClosed
	}
	type rowKey struct {
		org        string
		id         [16]byte
		month, day time.Time
	}
	sums := map[rowKey]store.UsageCounts{}
	for _, c := range counts {
		id := [16]byte(c.NamespaceID)
		m := usagemath.MonthOf(c.Month)
		k := rowKey{c.Org, id, m.Start(), m.Start().AddDate(0, 0, m.DayInMonth(c.Day)-1)}
		s := sums[k]
		s.Add(c.UsageCounts)
		sums[k] = s
	}
	if len(sums) == 0 {
		return nil
	}
	keys := make([]rowKey, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b rowKey) int {
		return cmp.Or(cmp.Compare(a.org, b.org), slices.Compare(a.id[:], b.id[:]), a.day.Compare(b.day))
	})
	var (
		orgs                          []string
		ids                           [][16]byte
		months, days                  []time.Time
		reads, writes, deletes, lists []int64
	)
	for _, k := range keys {
		s := sums[k]
		orgs, ids, months, days = append(orgs, k.org), append(ids, k.id), append(months, k.month), append(days, k.day)
		reads, writes = append(reads, s.Reads), append(writes, s.Writes)
		deletes, lists = append(deletes, s.Deletes), append(lists, s.Lists)
	}
	return db.conn(ctx, "add usage", func(c *pgx.Conn) error {
		return retryTransient(ctx, func() error {
			_, err := c.Exec(ctx, sqlAddUsage, orgs, ids, months, days, reads, writes, deletes, lists, shardOf(c))
			return err
		})
	})
}

// Usage implements store.Store.
func (db *DB) Usage(ctx context.Context, org string, nsID kv.ID, month, now time.Time) ([]store.NamespaceUsage, error) {
	return db.usage(ctx, org, nsID, month, now, false)
}

// UsageByDay implements store.Store. The month's figures and the days are
// read in one read-only REPEATABLE READ transaction: one snapshot.
func (db *DB) UsageByDay(ctx context.Context, org string, nsID kv.ID, month, now time.Time) ([]store.NamespaceUsage, error) {
	return db.usage(ctx, org, nsID, month, now, true)
}

func (db *DB) usage(ctx context.Context, org string, nsID kv.ID, month, now time.Time, byDay bool) ([]store.NamespaceUsage, error) {
	if db.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m := usagemath.MonthOf(month)
	end := m.End()
	if now.Before(end) {
		end = now
	}
	if end.Before(m.Start()) {
		return nil, nil // a month after now
	}
	start, until := m.Start().UnixNano(), end.UnixNano()
	query, args := sqlUsageOrg, []any{org, m.Start(), start, until}
	daysQuery, daysArgs := sqlUsageDaysOrg, []any{org, m.Start(), m.End(), start, until}
	if !nsID.IsZero() {
		query, args = sqlUsageNS, append(args, [16]byte(nsID))
		daysQuery, daysArgs = sqlUsageDaysNS, append(daysArgs, [16]byte(nsID))
	}
	var out []store.NamespaceUsage
	read := func(q pgxQuerier) error {
		out = out[:0]
		rows, err := q.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id             [16]byte
				carried, delta int64
				weighted       string
				counts         store.UsageCounts
				inMonth        bool
			)
			if err := rows.Scan(&id, &carried, &delta, &weighted, &counts.Reads, &counts.Writes, &counts.Deletes, &counts.Lists, &inMonth); err != nil {
				return err
			}
			if !inMonth && carried == 0 {
				continue
			}
			w, ok := new(big.Int).SetString(weighted, 10)
			if !ok {
				return fmt.Errorf("weighted sum %q is not an integer", weighted)
			}
			out = append(out, store.NamespaceUsage{
				NamespaceID: kv.ID(id),
				UsageCounts: counts,
				ByteNanos:   usagemath.StorageIntegral(carried, delta, w, end.Sub(m.Start())),
				Bytes:       carried + delta,
			})
		}
		return rows.Err()
	}
	readDays := func(q pgxQuerier) error {
		recs := map[kv.ID]map[int]*usagemath.DayRecord{}
		rows, err := q.Query(ctx, daysQuery, daysArgs...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id       [16]byte
				day      time.Time
				r        usagemath.DayRecord
				weighted string
			)
			if err := rows.Scan(&id, &day, &r.Counts.Reads, &r.Counts.Writes, &r.Counts.Deletes, &r.Counts.Lists, &r.Delta, &weighted); err != nil {
				return err
			}
			var ok bool
			if r.Weighted, ok = new(big.Int).SetString(weighted, 10); !ok {
				return fmt.Errorf("weighted sum %q is not an integer", weighted)
			}
			byDay := recs[kv.ID(id)]
			if byDay == nil {
				byDay = map[int]*usagemath.DayRecord{}
				recs[kv.ID(id)] = byDay
			}
			n := m.DayInMonth(day)
			if byDay[n] == nil {
				byDay[n] = &usagemath.DayRecord{}
			}
			byDay[n].Add(r)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for i := range out {
			out[i].Days = usagemath.Days(m, end, out[i].Bytes, recs[out[i].NamespaceID])
		}
		return nil
	}
	err := db.conn(ctx, "usage", func(c *pgx.Conn) error {
		if !byDay {
			return read(c)
		}
		return pgx.BeginTxFunc(ctx, c, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if err := read(tx); err != nil {
				return err
			}
			return readDays(tx)
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pgxQuerier is what the usage reads run on: a connection or a
// transaction.
type pgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// errRetry asks retryTransient to run its function again at once: a
// statement found a state it must not act on, which a new snapshot
// resolves.
var errRetry = errors.New("retry")

// retryTransient runs fn, again when it fails with an error that running
// the same work again resolves: a serialization failure or a deadlock
// (each statement, or transaction, of fn is then rolled back whole), or
// errRetry.
func retryTransient(ctx context.Context, fn func() error) error {
	const attempts = 10
	var err error
	for i := range attempts {
		err = fn()
		if !transient(err) {
			return err
		}
		if errors.Is(err, errRetry) {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(i+1) * time.Duration(1+rand.IntN(5)) * time.Millisecond):
		}
	}
	return fmt.Errorf("gave up after %d attempts: %w", attempts, err)
}

func transient(err error) bool {
	if errors.Is(err, errRetry) {
		return true
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// The change feed (store.Changes).
//
// Every statement or transaction that changes a key inserts the change
// into the changes table (migrations/0006_changes.sql) in the same commit:
// a put under the key's new revision, a delete or a swept expiry under a
// revision of its own, all from the sequence key_revisions, through
// kv_next_revision, which gives the transaction its id before it takes
// the revision. For one key, revisions are taken while the key's row is
// locked, so they increase in the order of the commits; a PUT that
// creates a key has no row to lock, and is checked once its insert has
// won (kv_check_create).
//
// The head. Transactions commit in any order, so the feed reads only up
// to a revision below which every transaction holding a revision has
// ended. It is found from the database's own bookkeeping, with nothing
// added to the write path: a round reads L, the sequence's last value,
// then, in a later statement, the current snapshot X and the next
// transaction id N. A transaction holding a revision at or below L took
// it before L was read, and had its id before that, so at X it has ended,
// or is in X's list of running transactions (xip), or its id is at or
// past X's xmax (which is one past the latest to end, not the next to
// start: transactions younger than every ended one are not listed) and
// below N. Once later snapshots show every one of those ended, every
// revision up to L is final: the head is L. Rounds whose transactions
// are still running wait in a short queue (feed.observe).
// The xip list covers every database of the server, so a transaction that
// stays open holds the head back, and every reader with it, until it
// ends, whether it writes keys or not: a long-running writing
// transaction anywhere on the server stalls the feed for as long as it
// runs. (Read-only transactions have no id and hold nothing back.)
//
// Readers learn of new changes by polling: one goroutine per DB runs a
// round every pollEvery while anyone waits (WaitHead), and stops when
// nobody does, so changes committed by another kvd process appear within
// a few rounds. A NOTIFY from each write would wake readers sooner, but
// NOTIFY takes a lock on the whole database at commit, so that every
// writing transaction of every kvd process would commit one at a time.
//
// The feed needs PostgreSQL 13 or later (xid8, pg_current_snapshot); the
// rest of the engine keeps to what CockroachDB and YugabyteDB accept.

// The kinds of changes in the changes table, for statements:
// store.ChangeKind's values.
var (
	changePut    = strconv.Itoa(int(store.ChangePut))
	changeDelete = strconv.Itoa(int(store.ChangeDelete))
	changeExpire = strconv.Itoa(int(store.ChangeExpire))
)

// maxChangeValue is store.MaxChangeValue, for statements.
var maxChangeValue = strconv.Itoa(store.MaxChangeValue)

// sqlRecordPut is the CTEs ch and created of a PUT statement (sqlPutKey,
// sqlPutKeyFast): ch records the write w made, if any, in the change
// feed, with the value when that is at most store.MaxChangeValue bytes;
// created checks a write that created the key from no row, once its insert
// has won (see kv_check_create in migrations/0006_changes.sql), and fails
// the statement if the key changed meanwhile under a higher revision. The
// statement's last SELECT reads created (sqlCheckedCreate), so that it
// runs. $1 namespace, $3 key, $4 value, $5 content type, $6 now, $7
// expiry.
var sqlRecordPut = `ch AS (
	INSERT INTO changes (ns_id, rev, kind, key, at, size, content_type, updated_at, expires_at, value)
	SELECT $1, w.revision, ` + changePut + `, $3::bytea, $6::bigint, octet_length($4::bytea), $5::text, $6::bigint, $7::bigint,
		CASE WHEN octet_length($4::bytea) <= ` + maxChangeValue + ` THEN $4::bytea END
	FROM w
), created AS (
	SELECT kv_check_create($1, $3::bytea, w.revision) FROM w WHERE NOT EXISTS (SELECT 1 FROM old)
)`

// sqlCheckedCreate is a column of a PUT statement's last SELECT that makes
// it run sqlRecordPut's check.
const sqlCheckedCreate = `(SELECT count(*) FROM created)`

// sqlBatchChanges records a batch's changes ($3.., one row per change;
// see batchChanges) in namespace $1 at now ($2).
var sqlBatchChanges = `INSERT INTO changes (ns_id, rev, kind, key, at, size, content_type, updated_at, expires_at, value)
SELECT $1, c.rev, c.kind, c.key, $2::bigint, c.size, c.content_type,
	CASE WHEN c.kind = ` + changePut + ` THEN $2::bigint END, c.expires_at, c.value
FROM unnest($3::bigint[], $4::smallint[], $5::bytea[], $6::bigint[], $7::text[], $8::bigint[], $9::bytea[])
	AS c(rev, kind, key, size, content_type, expires_at, value)`

// ---- the head

const (
	// pollEvery is the pause between two rounds of the poller, and the
	// longest between two rounds of Head or Snapshot waiting for
	// transactions to end.
	pollEvery = 10 * time.Millisecond
	// pollErrorPause is the poller's pause after a round that failed.
	pollErrorPause = 250 * time.Millisecond
	// roundTimeout bounds one round of the poller.
	roundTimeout = 5 * time.Second
	// maxRounds is the most rounds the head waits on at once; beyond, the
	// oldest two are merged.
	maxRounds = 32
)

const (
	sqlLastRevision = `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM key_revisions`
	// sqlCurrentSnapshot is the statement's snapshot and how far the next
	// transaction id is past its xmin: age reads the next id, without
	// giving the session one, after the snapshot is taken. It reads it once
	// per transaction, and keeps it: so this runs in a transaction of its
	// own.
	sqlCurrentSnapshot = `SELECT pg_current_snapshot()::text, age(pg_snapshot_xmin(pg_current_snapshot())::xid)`
	// sqlLaterSnapshot is the statement's snapshot alone, which tells
	// what has ended since an earlier one (waitSet.prune).
	sqlLaterSnapshot = `SELECT pg_current_snapshot()::text`
)

// feed is a DB's view of the head.
type feed struct {
	mu       sync.Mutex
	head     store.Revision
	rounds   []round       // rounds with transactions not yet seen to end
	advanced chan struct{} // closed, and replaced, when head rises
	waiters  int           // WaitHead calls waiting
	polling  bool          // the poller runs

	// done ends with the DB: waiters return, the poller stops.
	done  context.Context
	close context.CancelFunc
}

// round is L and the transactions of X that may hold revisions up to it
// and have not been seen to end.
type round struct {
	last    store.Revision
	waiting waitSet
}

func newFeed() *feed {
	done, cancel := context.WithCancel(context.Background())
	return &feed{advanced: make(chan struct{}), done: done, close: cancel}
}

// current returns the head and the channel closed when it next rises.
func (f *feed) current() (store.Revision, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.head, f.advanced
}

// observe takes in a round: the sequence's last value, read before the
// snapshot s was taken. s ends the transactions of earlier rounds that it
// does not show running; a round whose transactions have all ended gives
// the head its L. Rounds may come in any order (Head and the poller run
// them at once): what s shows ended has ended, whenever s was taken.
func (f *feed) observe(last store.Revision, s pgSnapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	head := f.head
	var rounds []round
	for _, r := range f.rounds {
		if r.waiting.prune(s) {
			head = max(head, r.last)
		} else {
			rounds = append(rounds, r)
		}
	}
	if w := s.running(); w.empty() {
		head = max(head, last)
	} else {
		rounds = append(rounds, round{last, w})
	}
	// A round at or below the head tells nothing more.
	rounds = slices.DeleteFunc(rounds, func(r round) bool { return r.last <= head })
	if len(rounds) > maxRounds {
		// Merged, two rounds end when the transactions of both have:
		// every revision up to the higher L is final then.
		a, b := rounds[0], rounds[1]
		rounds = append([]round{{max(a.last, b.last), a.waiting.union(b.waiting)}}, rounds[2:]...)
	}
	f.rounds = rounds
	if head > f.head {
		f.head = head
		close(f.advanced)
		f.advanced = make(chan struct{})
	}
}

// round runs one round and returns its L.
func (db *DB) round(ctx context.Context) (store.Revision, error) {
	var (
		last int64
		s    pgSnapshot
	)
	// Two statements, each in a transaction of its own, so the snapshot
	// is taken after the sequence is read, whatever the server's default
	// isolation.
	err := db.conn(ctx, "feed head", func(c *pgx.Conn) error {
		if err := c.QueryRow(ctx, sqlLastRevision).Scan(&last); err != nil {
			return err
		}
		var err error
		s, err = currentSnapshot(ctx, c)
		return err
	})
	if err != nil {
		return 0, err
	}
	db.feed.observe(store.Revision(last), s)
	return store.Revision(last), nil
}

// Head implements store.Changes. It runs rounds until every revision
// taken before it was called is final, soon after one another at first,
// then every pollEvery: so the head it returns is at or above every
// change committed before the call. A transaction holding a revision
// keeps it waiting until it ends.
func (db *DB) Head(ctx context.Context) (store.Revision, error) {
	last, err := db.round(ctx)
	if err != nil {
		return 0, err
	}
	for pause := pollEvery / 8; ; pause = min(2*pause, pollEvery) {
		if h, _ := db.feed.current(); h >= last {
			return h, nil
		}
		if err := db.feed.sleep(ctx, pause); err != nil {
			return 0, err
		}
		if _, err := db.round(ctx); err != nil {
			return 0, err
		}
	}
}

// sleep pauses for d, or until ctx or the DB ends.
func (f *feed) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-f.done.Done():
		return store.ErrClosed
	}
}

// WaitHead implements store.Changes. The DB's poller runs while any call
// waits.
func (db *DB) WaitHead(ctx context.Context, after store.Revision) (store.Revision, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if db.closed.Load() {
		return 0, store.ErrClosed
	}
	f := db.feed
	f.mu.Lock()
	if f.head > after {
		h := f.head
		f.mu.Unlock()
		return h, nil
	}
	f.waiters++
	if !f.polling {
		f.polling = true
		go db.poll()
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.waiters--
		f.mu.Unlock()
	}()
	for {
		h, advanced := f.current()
		if h > after {
			return h, nil
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-f.done.Done():
			return 0, store.ErrClosed
		}
	}
}

// poll runs rounds every pollEvery until nobody waits or the DB closes.
func (db *DB) poll() {
	f := db.feed
	for {
		f.mu.Lock()
		if f.waiters == 0 || f.done.Err() != nil {
			f.polling = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(f.done, roundTimeout)
		_, err := db.round(ctx)
		cancel()
		pause := pollEvery
		if err != nil {
			pause = pollErrorPause // the database is away; WaitHead waits on
		}
		// The pause ends early only when the DB closes; the loop then
		// stops.
		_ = f.sleep(context.Background(), pause)
	}
}

// pgSnapshot is a pg_snapshot: transactions below xmin had ended, xip
// lists those from xmin to xmax that were running, and those from xmax on
// count as running. next, when known, is past every transaction id given
// when the snapshot was taken.
type pgSnapshot struct {
	xmin, xmax uint64
	xip        []uint64 // sorted
	next       uint64
}

// currentSnapshot returns a snapshot of c, with next, in a statement
// that is a transaction of its own.
func currentSnapshot(ctx context.Context, c *pgx.Conn) (pgSnapshot, error) {
	var (
		text string
		age  int64
	)
	if err := c.QueryRow(ctx, sqlCurrentSnapshot).Scan(&text, &age); err != nil {
		return pgSnapshot{}, err
	}
	return parseSnapshotAge(text, age)
}

// parseSnapshotAge parses a snapshot and how far the next transaction id
// was past its xmin.
func parseSnapshotAge(text string, age int64) (pgSnapshot, error) {
	s, err := parseSnapshot(text)
	if err != nil {
		return pgSnapshot{}, err
	}
	if age < 0 {
		return pgSnapshot{}, fmt.Errorf("snapshot %s: the next transaction id is %d before its xmin", text, -age)
	}
	s.next = max(s.xmin+uint64(age), s.xmax)
	return s, nil
}

// parseSnapshot parses a pg_snapshot's text form, xmin:xmax:xip,xip,...
func parseSnapshot(s string) (pgSnapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return pgSnapshot{}, fmt.Errorf("snapshot %q is not xmin:xmax:xip", s)
	}
	var (
		p   pgSnapshot
		err error
	)
	if p.xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return pgSnapshot{}, fmt.Errorf("snapshot %q: %w", s, err)
	}
	if p.xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return pgSnapshot{}, fmt.Errorf("snapshot %q: %w", s, err)
	}
	if p.xmax < p.xmin {
		return pgSnapshot{}, fmt.Errorf("snapshot %q: xmax below xmin", s)
	}
	if parts[2] != "" {
		for x := range strings.SplitSeq(parts[2], ",") {
			id, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return pgSnapshot{}, fmt.Errorf("snapshot %q: %w", s, err)
			}
			if id < p.xmin || id >= p.xmax {
				return pgSnapshot{}, fmt.Errorf("snapshot %q: %d is outside [xmin, xmax)", s, id)
			}
			p.xip = append(p.xip, id)
		}
	}
	slices.Sort(p.xip)
	p.xip = slices.Compact(p.xip)
	return p, nil
}

// running is the transactions s shows running that were given their ids
// before s was taken: its xip, and those from xmax to next.
func (s pgSnapshot) running() waitSet {
	return waitSet{xids: slices.Clone(s.xip), from: s.xmax, to: max(s.next, s.xmax)}
}

// waitSet is transactions not yet seen to end: those of xids, and every
// one from from to to (excluded), which are not listed since a snapshot
// does not list the running transactions younger than every one that has
// ended.
type waitSet struct {
	xids     []uint64 // sorted
	from, to uint64
}

func (w waitSet) empty() bool { return len(w.xids) == 0 && w.from >= w.to }

// prune drops from w the transactions that s shows ended, and reports
// whether w is then empty: a transaction below s's xmax has ended unless
// s lists it. Of the range, the part below s's xmax becomes the
// transactions s lists there.
func (w *waitSet) prune(s pgSnapshot) bool {
	w.xids = slices.DeleteFunc(w.xids, func(x uint64) bool {
		_, in := slices.BinarySearch(s.xip, x)
		return x < s.xmax && !in
	})
	if w.from < w.to && w.from < s.xmax {
		for _, x := range s.xip {
			if x >= w.from && x < w.to {
				w.xids = append(w.xids, x)
			}
		}
		slices.Sort(w.xids)
		w.xids = slices.Compact(w.xids)
		w.from = min(w.to, s.xmax)
	}
	return w.empty()
}

// union is the transactions of w and v: their lists, and a range that
// covers both ranges (and what lies between, which costs a wait for
// transactions that may hold nothing).
func (w waitSet) union(v waitSet) waitSet {
	u := waitSet{xids: slices.Compact(slices.Sorted(slices.Values(append(slices.Clip(w.xids), v.xids...))))}
	switch {
	case w.from >= w.to:
		u.from, u.to = v.from, v.to
	case v.from >= v.to:
		u.from, u.to = w.from, w.to
	default:
		u.from, u.to = min(w.from, v.from), max(w.to, v.to)
	}
	return u
}

// ---- reading the feed

// readBudget bounds the bytes of the keys and values one ReadChanges
// holds, whatever its limit: past it, the call returns the changes it has
// with their last revision as its head, from which the reader goes on.
const readBudget = 16 << 20

// changeOverhead is what a Change costs beyond its key and value bytes,
// for readBudget.
const changeOverhead = 128

// sqlReadChangesTemplate reads the changes of namespace $1 of org $2 with
// revisions in ($3, $4] and keys in [$5, $6) (%s bounds the range above)
// up to $7 of them, in revision order, with their values if $8, unless
// $3 is below the namespace's horizon (the feed refuses it then). One row
// with the namespace's status and horizon comes back in any case, while
// the namespace exists.
const sqlReadChangesTemplate = `SELECT n.status, COALESCE(h.rev, 0), c.rev, c.kind, c.key, c.at, c.size, c.content_type, c.updated_at, c.expires_at, c.value
FROM namespaces n
LEFT JOIN change_horizons h ON h.ns_id = n.id
LEFT JOIN LATERAL (
	SELECT rev, kind, key, at, size, content_type, updated_at, expires_at, CASE WHEN $8::bool THEN value END AS value
	FROM changes
	WHERE ns_id = n.id AND n.status = 'provision_ok' AND $3::bigint >= COALESCE(h.rev, 0)
		AND rev > $3::bigint AND rev <= $4::bigint AND key >= $5::bytea %s
	ORDER BY rev
	LIMIT $7
) c ON true
WHERE n.id = $1 AND n.org = $2
ORDER BY c.rev`

var (
	// Two statements, as for ListKeys: an empty prefix has no bound
	// above.
	sqlReadChanges          = fmt.Sprintf(sqlReadChangesTemplate, "AND key < $6::bytea")
	sqlReadChangesUnbounded = fmt.Sprintf(sqlReadChangesTemplate, "AND $6::bytea IS NULL")
)

// changeRow is a row of the changes table as statements return it.
type changeRow struct {
	rev              int64
	kind             int16
	key              []byte
	at               int64
	size             *int64
	contentType      *string
	updated, expires *int64
	value            []byte
}

// change is r as a store.Change.
func (r *changeRow) change() store.Change {
	c := store.Change{
		Revision: store.Revision(r.rev),
		Kind:     store.ChangeKind(r.kind),
		Key:      string(r.key),
		At:       decodeTime(r.at),
	}
	if c.Kind != store.ChangePut {
		return c
	}
	if r.size != nil {
		c.Size = *r.size
	}
	if r.contentType != nil {
		c.ContentType = *r.contentType
	}
	if r.updated != nil {
		c.UpdatedAt = decodeTime(*r.updated)
	}
	if r.expires != nil {
		c.ExpiresAt = decodeTime(*r.expires)
	}
	if r.value != nil {
		c.HasValue, c.Value = true, r.value
	}
	return c
}

// ReadChanges implements store.Changes. It reads up to the head this DB
// knows, or, when that is not above after, up to a head it finds first
// (see Head), so a reader that does not wait (WaitHead) still sees the
// writes that were committed before it called.
func (db *DB) ReadChanges(ctx context.Context, org string, nsID kv.ID, prefix string, after store.Revision, limit int, withValues bool) ([]store.Change, store.Revision, error) {
	if limit < 1 {
		return nil, 0, fmt.Errorf("postgres: ReadChanges limit %d: %w", limit, store.ErrInvalidArgument)
	}
	head, _ := db.feed.current()
	if head <= after {
		h, err := db.Head(ctx)
		if err != nil {
			return nil, 0, err
		}
		head = h
	}
	id := [16]byte(nsID)
	query, hi := sqlReadChangesUnbounded, []byte(nil)
	if end := store.PrefixEnd([]byte(prefix)); end != nil {
		query, hi = sqlReadChanges, end
	}
	var changes []store.Change
	err := db.conn(ctx, "read changes", func(c *pgx.Conn) error {
		changes = nil
		rows, err := c.Query(ctx, query, id, org, bigint(after), bigint(head), []byte(prefix), hi, limit, withValues)
		if err != nil {
			return err
		}
		defer rows.Close()
		found, budget := false, readBudget
		for rows.Next() {
			var (
				status  string
				horizon int64
				rev, at *int64
				kind    *int16
				r       changeRow
			)
			if err := rows.Scan(&status, &horizon, &rev, &kind, &r.key, &at, &r.size, &r.contentType, &r.updated, &r.expires, &r.value); err != nil {
				return err
			}
			found = true
			if err := nsCheck(&status); err != nil {
				return err
			}
			if store.Revision(horizon) > after {
				return &store.HistoryGoneError{Oldest: store.Revision(horizon)}
			}
			if rev == nil {
				continue // no changes
			}
			if budget -= changeOverhead + len(r.key) + len(r.value); budget < 0 && len(changes) > 0 {
				// The reader goes on from the last change kept.
				head = changes[len(changes)-1].Revision
				return nil
			}
			r.rev, r.kind, r.at = *rev, *kind, *at
			changes = append(changes, r.change())
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
		return nil, 0, err
	}
	return changes, head, nil
}

// bigint is r as a BIGINT: a revision past the largest (none is ever
// given) as the largest.
func bigint(r store.Revision) int64 { return int64(min(r, math.MaxInt64)) }

// ---- snapshots

// snapshotBatch is the most rows Snapshot fetches at a time from each of
// its cursors: with values of up to store.MaxChangeValue, a few MiB.
const snapshotBatch = 64

// snapshotAttempts is how many times Snapshot starts again when a
// compaction ran under it.
const snapshotAttempts = 5

// sqlSnapshotKeysTemplate declares the cursor of Snapshot's keys: the live
// keys ($5: now) of namespace $1 of org $2 in [$3, $4) (%s bounds the
// range above), in key order, with their values if $6 and they are short
// enough for a change. Its first row also carries the cursor's snapshot,
// the namespace's status (NULL: no such namespace) and horizon, and the
// highest revision of the namespace's changes in the snapshot; a
// namespace without keys gives that row alone, with no key. The join has
// no ORDER BY of its own, which would sort every key before the first
// FETCH: it keeps the order of its inner side, for its one outer row, and
// Snapshot checks that it does.
var sqlSnapshotKeysTemplate = `DECLARE kv_snapshot_keys NO SCROLL CURSOR FOR
SELECT CASE WHEN COALESCE(k.n, 1) = 1 THEN pg_current_snapshot()::text END,
	CASE WHEN COALESCE(k.n, 1) = 1 THEN age(pg_snapshot_xmin(pg_current_snapshot())::xid) END,
	h.status, h.horizon, h.top,
	k.key, k.revision, k.size, k.content_type, k.updated_at, k.expires_at, k.value
FROM (
	SELECT n.status, COALESCE(hz.rev, 0) AS horizon,
		COALESCE((SELECT max(rev) FROM changes WHERE ns_id = n.id), 0) AS top
	FROM (SELECT 1) one
	LEFT JOIN namespaces n ON n.id = $1 AND n.org = $2
	LEFT JOIN change_horizons hz ON hz.ns_id = n.id
) h
LEFT JOIN LATERAL (
	SELECT key, revision, octet_length(value)::bigint AS size, content_type, updated_at, expires_at,
		CASE WHEN $6::bool AND octet_length(value) <= ` + maxChangeValue + ` THEN value END AS value,
		row_number() OVER (ORDER BY key) AS n
	FROM keys
	WHERE ns_id = $1 AND h.status = 'provision_ok' AND key >= $3::bytea %s
		AND (expires_at IS NULL OR expires_at > $5::bigint)
	ORDER BY key
) k ON true`

// sqlSnapshotLateTemplate declares the cursor of the changes Snapshot's
// snapshot ($7) does not see, of namespace $1 with revisions in ($2, $3]
// and keys in [$4, $5): each key's latest, in key order, with its value if
// $6.
const sqlSnapshotLateTemplate = `DECLARE kv_snapshot_late NO SCROLL CURSOR FOR
SELECT DISTINCT ON (key) key, rev, kind, at, size, content_type, updated_at, expires_at, CASE WHEN $6::bool THEN value END
FROM changes
WHERE ns_id = $1 AND rev > $2::bigint AND rev <= $3::bigint AND key >= $4::bytea %s
	AND NOT pg_visible_in_snapshot(xid, $7::text::pg_snapshot)
ORDER BY key, rev DESC`

const sqlHorizon = `SELECT COALESCE((SELECT rev FROM change_horizons WHERE ns_id = $1), 0)`

var (
	sqlSnapshotKeys          = fmt.Sprintf(sqlSnapshotKeysTemplate, "AND key < $4::bytea")
	sqlSnapshotKeysUnbounded = fmt.Sprintf(sqlSnapshotKeysTemplate, "AND $4::bytea IS NULL")
	sqlSnapshotLate          = fmt.Sprintf(sqlSnapshotLateTemplate, "AND key < $5::bytea")
	sqlSnapshotLateUnbounded = fmt.Sprintf(sqlSnapshotLateTemplate, "AND $5::bytea IS NULL")
)

// errCompactedUnder is Snapshot's note to itself that a compaction may
// have removed changes it had to read: it starts again.
var errCompactedUnder = errors.New("compacted under the snapshot")

// Snapshot implements store.Changes.
//
// The keys are read from one snapshot S, taken by the DECLARE of a cursor
// in a READ COMMITTED, READ ONLY transaction, and fetched in batches: the
// transaction holds no lock a writer waits for, and each FETCH is a short
// statement (statement_timeout), while later statements of the same
// transaction see what committed after S, on the same connection. (A
// REPEATABLE READ transaction would need a second connection for those,
// held with the first: snapshots in flight could take every connection of
// the pool and wait for one more.) A server's
// idle_in_transaction_session_timeout, if set, bounds how slow fn may be.
//
// The revision it returns, M, is the highest of h0 (a head found before S
// was taken), the namespace's horizon and the highest revision of its
// changes in S: a revision S's keys hold, or passed. Every change at or
// below M was taken before S (its transaction, or the compaction that
// passed it, committed before S), so its transaction had its id before
// S: at S it had ended, or S shows it running (see the head, above).
// Snapshot waits until those have ended; then every change at or below M
// is final, and a statement now sees each one that committed.
//
// The late changes are those at or below M that S does not see. None is
// at or below h0 (final before S, so committed before S, or never). So
// they are the changes in (h0, M] whose transaction S does not see as
// ended, read by a second cursor, declared after the wait. For one key,
// revisions increase in the order of the commits, so of a key's changes
// at or below M, S sees those up to some revision and not one after: a
// key with late changes is, at M, as its latest late change left it; a
// key without is as S has it, since S holds no change of it above M.
// Merging the two cursors in key order, the late change's state replacing
// S's, gives every live key as of M: each key once (one row per key from
// each cursor), none missing (a key is in S or has a late put), none
// from after M (S has no change above M, and late ones are at most M).
// Compaction could remove a late change between S and the second
// cursor's snapshot: when the namespace's horizon moved past h0 meanwhile,
// Snapshot starts again, having called fn with nothing.
func (db *DB) Snapshot(ctx context.Context, org string, nsID kv.ID, prefix string, now time.Time, withValues bool, fn func(store.Change) error) (store.Revision, error) {
	for range snapshotAttempts - 1 {
		at, err := db.snapshot(ctx, org, nsID, prefix, now, withValues, fn)
		if !errors.Is(err, errCompactedUnder) {
			return at, err
		}
	}
	at, err := db.snapshot(ctx, org, nsID, prefix, now, withValues, fn)
	if errors.Is(err, errCompactedUnder) {
		err = fmt.Errorf("postgres: snapshot: compaction ran under each of %d attempts", snapshotAttempts)
	}
	return at, err
}

func (db *DB) snapshot(ctx context.Context, org string, nsID kv.ID, prefix string, now time.Time, withValues bool, fn func(store.Change) error) (store.Revision, error) {
	h0, err := db.Head(ctx)
	if err != nil {
		return 0, err
	}
	db.hook("head")
	id := [16]byte(nsID)
	keysQuery, lateQuery, hi := sqlSnapshotKeysUnbounded, sqlSnapshotLateUnbounded, []byte(nil)
	if end := store.PrefixEnd([]byte(prefix)); end != nil {
		keysQuery, lateQuery, hi = sqlSnapshotKeys, sqlSnapshotLate, end
	}
	var (
		at    store.Revision
		fnErr error // fn's error: the caller's, neither counted nor wrapped
	)
	err = db.conn(ctx, "snapshot", func(c *pgx.Conn) error {
		return pgx.BeginTxFunc(ctx, c, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, keysQuery, id, org, []byte(prefix), hi, encodeTime(now), withValues); err != nil {
				return err
			}
			var hdr snapshotHeader
			keys := &cursor{tx: tx, fetch: "FETCH " + strconv.Itoa(snapshotBatch) + " FROM kv_snapshot_keys", scan: hdr.scanKey}
			if _, err := keys.peek(ctx); err != nil {
				return err
			}
			if !hdr.seen {
				return errors.New("the snapshot's cursor returned no row")
			}
			db.hook("taken")
			if err := nsCheck(hdr.status); err != nil {
				return err
			}
			if hdr.snap == nil || hdr.age == nil {
				return errors.New("the snapshot's first row carries no snapshot")
			}
			s, err := parseSnapshotAge(*hdr.snap, *hdr.age)
			if err != nil {
				return err
			}
			at = max(h0, store.Revision(hdr.horizon), store.Revision(hdr.top))
			late := &cursor{tx: tx, fetch: "FETCH " + strconv.Itoa(snapshotBatch) + " FROM kv_snapshot_late", scan: scanLate, done: true}
			if at > h0 {
				if err := waitEnded(ctx, tx, db.feed, s.running()); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, lateQuery, id, int64(h0), int64(at), []byte(prefix), hi, withValues, *hdr.snap); err != nil {
					return err
				}
				var horizon int64
				if err := tx.QueryRow(ctx, sqlHorizon, id).Scan(&horizon); err != nil {
					return err
				}
				if horizon != hdr.horizon && store.Revision(horizon) > h0 {
					return errCompactedUnder
				}
				late.done = false
			}
			nowNS := encodeTime(now)
			var last []byte // the last key given to fn
			for {
				k, err := keys.peek(ctx)
				if err != nil {
					return err
				}
				l, err := late.peek(ctx)
				if err != nil {
					return err
				}
				var out *changeRow
				switch {
				case k == nil && l == nil:
					return nil
				case l == nil || k != nil && bytes.Compare(k.key, l.key) < 0:
					out = k
					keys.next()
				default:
					if k != nil && bytes.Equal(k.key, l.key) {
						keys.next() // S's state gives way to the late change's
					}
					late.next()
					if store.ChangeKind(l.kind) != store.ChangePut || l.expires != nil && *l.expires <= nowNS {
						continue // deleted, or expired, as of at
					}
					out = l
				}
				// The merge needs each cursor in key order; a plan that
				// broke it would give keys twice, or lose some.
				if last != nil && bytes.Compare(out.key, last) <= 0 {
					return fmt.Errorf("snapshot keys out of order: %q after %q", out.key, last)
				}
				last = out.key
				if fnErr = fn(out.change()); fnErr != nil {
					return nil // the transaction only read: end it, and return fnErr
				}
			}
		})
	})
	if fnErr != nil {
		return 0, fnErr
	}
	if err != nil {
		return 0, err
	}
	return at, nil
}

// hook calls the test's snapshotHook, if any.
func (db *DB) hook(step string) {
	if db.snapshotHook != nil {
		db.snapshotHook(step)
	}
}

// snapshotHeader is what the first row of Snapshot's keys cursor carries
// besides a key.
type snapshotHeader struct {
	seen         bool
	snap, status *string
	age          *int64 // of the next transaction id (sqlCurrentSnapshot)
	horizon, top int64
}

// scanKey reads a row of Snapshot's keys cursor into r, and the header
// from the first; a row without a key (a namespace without keys, or not
// ready) is no key.
func (h *snapshotHeader) scanKey(rows pgx.Rows, r *changeRow) (bool, error) {
	var (
		snap, status *string
		age, rev     *int64
		horizon, top int64
	)
	if err := rows.Scan(&snap, &age, &status, &horizon, &top, &r.key, &rev, &r.size, &r.contentType, &r.updated, &r.expires, &r.value); err != nil {
		return false, err
	}
	if !h.seen {
		*h = snapshotHeader{true, snap, status, age, horizon, top}
	}
	if rev == nil {
		return false, nil
	}
	r.rev, r.kind, r.at = *rev, 1, *r.updated
	return true, nil
}

// scanLate reads a row of Snapshot's late cursor into r.
func scanLate(rows pgx.Rows, r *changeRow) (bool, error) {
	return true, rows.Scan(&r.key, &r.rev, &r.kind, &r.at, &r.size, &r.contentType, &r.updated, &r.expires, &r.value)
}

// waitEnded waits, running statements on tx (READ COMMITTED: each takes a
// snapshot of its own), until every transaction of w has ended.
func waitEnded(ctx context.Context, tx pgx.Tx, f *feed, w waitSet) error {
	for pause := pollEvery / 8; ; pause = min(2*pause, pollEvery) {
		var text string
		if err := tx.QueryRow(ctx, sqlLaterSnapshot).Scan(&text); err != nil {
			return err
		}
		s, err := parseSnapshot(text)
		if err != nil {
			return err
		}
		if w.prune(s) {
			return nil
		}
		if err := f.sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// cursor reads a declared cursor of tx batch by batch.
type cursor struct {
	tx    pgx.Tx
	fetch string // the FETCH statement
	// scan reads a row into r and reports whether it is one (false: skip
	// it).
	scan func(rows pgx.Rows, r *changeRow) (bool, error)
	buf  []changeRow
	i    int
	done bool // the cursor has no more rows
}

// peek returns the cursor's current row, fetching a batch when it has
// none, or nil at the end.
func (c *cursor) peek(ctx context.Context) (*changeRow, error) {
	for c.i == len(c.buf) {
		if c.done {
			return nil, nil
		}
		c.buf, c.i = c.buf[:0], 0
		rows, err := c.tx.Query(ctx, c.fetch)
		if err != nil {
			return nil, err
		}
		n := 0
		for rows.Next() {
			n++
			var r changeRow
			ok, err := c.scan(rows, &r)
			if err != nil {
				rows.Close()
				return nil, err
			}
			if ok {
				c.buf = append(c.buf, r)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		c.done = n < snapshotBatch
	}
	return &c.buf[c.i], nil
}

// next moves the cursor past its current row.
func (c *cursor) next() { c.i++ }

// ---- compaction

// compactBatch is the most changes one statement of CompactChanges
// removes.
const compactBatch = 10000

// sqlCompactChanges removes up to $2 changes made before $1, oldest first,
// skipping those another compaction has locked, and raises the horizon of
// each namespace it removed changes of to the highest revision removed, in
// one statement. The horizons are upserted in namespace order, so that
// two compactions wait for each other in one order.
const sqlCompactChanges = `WITH d AS (
	DELETE FROM changes
	WHERE (ns_id, rev) IN (
		SELECT ns_id, rev FROM changes WHERE at < $1
		ORDER BY at
		LIMIT $2
		FOR UPDATE SKIP LOCKED
	)
	RETURNING ns_id, rev
), h AS (
	INSERT INTO change_horizons AS h (ns_id, rev)
	SELECT ns_id, max(rev) FROM d GROUP BY ns_id ORDER BY ns_id
	ON CONFLICT (ns_id) DO UPDATE SET rev = GREATEST(h.rev, excluded.rev)
	RETURNING 1
)
SELECT count(*) FROM d`

// CompactChanges implements store.Changes, in statements of at most
// compactBatch changes. Concurrent compactions skip the changes each
// other is removing.
func (db *DB) CompactChanges(ctx context.Context, before time.Time, max int) (int, error) {
	if max < 1 {
		return 0, nil
	}
	removed := 0
	err := db.conn(ctx, "compact changes", func(c *pgx.Conn) error {
		for removed < max {
			want := min(max-removed, compactBatch)
			var n int
			err := retryTransient(ctx, func() error {
				return c.QueryRow(ctx, sqlCompactChanges, encodeTime(before), want).Scan(&n)
			})
			if err != nil {
				return err
			}
			removed += n
			if n < want {
				return nil
			}
		}
		return nil
	})
	return removed, err
}

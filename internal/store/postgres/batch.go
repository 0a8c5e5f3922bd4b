package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// A batch is one READ COMMITTED transaction that first locks every key
// it names, in key order (so batches never wait for each other in a
// cycle): it locks the namespace row FOR SHARE (as single-key writes do),
// then inserts a placeholder row for each key that does not exist and
// locks each row that does (sqlBatchLock). From then until it commits no
// other writer can change, create or delete any of its keys, so its
// checks and gets read one state, the latest, and its writes land on
// that state. The ops are then played in memory, and each key's final
// state is written, with the usage, in the same transaction; the
// placeholders of keys it leaves absent are deleted before the commit, so
// no other transaction ever sees one. The statements go in two pipelines
// (applyBatch): the BEGIN and everything up to the revisions, then every
// write and the COMMIT.
//
// Every op that changes a key (a put, an incr, a delete that removes a
// key) is recorded in the change feed, in the same transaction, under a
// revision of its own, in the order of the ops. The revisions are taken
// once every key is locked, so for one key they increase in the order of
// the commits.

const (
	sqlBatchNamespace = `SELECT status FROM namespaces WHERE id = $1 AND org = $2 FOR SHARE`

	// The ON CONFLICT branch updates nothing (revisions are never
	// negative) but locks the existing row, as DO UPDATE does before it
	// tests its WHERE. It returns the keys that had no row. It runs in the
	// pipeline of sqlBatchNamespace, which may find the namespace missing,
	// another organization's ($3) or not ready: then it locks nothing.
	sqlBatchLock = `INSERT INTO keys AS k (ns_id, key, value, content_type, updated_at, expires_at, version, revision)
SELECT $1, u.key, ''::bytea, '', 1, 1, 1, 0 FROM unnest($2::bytea[]) AS u(key)
WHERE EXISTS (SELECT 1 FROM namespaces WHERE id = $1 AND org = $3 AND status = 'provision_ok')
ORDER BY u.key
ON CONFLICT (ns_id, key) DO UPDATE SET version = k.version WHERE k.revision < 0
RETURNING k.key`

	// The rows of the batch's keys ($2), locked already; the value only
	// of the rows an incr reads ($3), when short enough to be an integer.
	sqlBatchRows = `SELECT key, content_type, updated_at, expires_at, revision,
	octet_length(value)::bigint,
	CASE WHEN key = ANY($3::bytea[]) AND octet_length(value) <= 20 THEN value END
FROM keys WHERE ns_id = $1 AND key = ANY($2::bytea[])`

	sqlBatchValues = `SELECT key, value FROM keys WHERE ns_id = $1 AND key = ANY($2::bytea[])`

	sqlBatchRevisions = `SELECT kv_next_revision() FROM generate_series(1, $1::int)`

	sqlBatchUpsert = `INSERT INTO keys AS k (ns_id, key, value, content_type, updated_at, expires_at, version, revision)
VALUES ($1, $2::bytea, $3::bytea, $4::text, $5::bigint, $6::bigint, 1, $7::bigint)
ON CONFLICT (ns_id, key) DO UPDATE SET
	value = excluded.value,
	content_type = excluded.content_type,
	updated_at = excluded.updated_at,
	expires_at = excluded.expires_at,
	version = k.version + 1,
	revision = excluded.revision`

	sqlBatchDelete = `DELETE FROM keys WHERE ns_id = $1 AND key = ANY($2::bytea[])`
)

// sqlBatchUsage adds a batch's usage events to namespace $1 of org $2 in
// shard $7: each event is a time ($3, Unix ns), a change of stored bytes
// ($4), and counts of writes ($5) and deletes ($6).
var sqlBatchUsage = `WITH ev AS (
	SELECT x.month, x.off, e.w AS writes, e.dl AS deletes, e.d AS delta
	FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) AS e(t, d, w, dl)
	CROSS JOIN LATERAL ` + sqlAtMonth("e.t") + ` x
), u AS (
	INSERT INTO ns_usage AS u (org, ns_id, month, shard, writes, deletes, delta_sum, weighted_sum)
	SELECT $2, $1, month, $7, sum(writes), sum(deletes), sum(delta), sum(delta::numeric * off)
	FROM ev GROUP BY month ORDER BY month
	` + sqlAddAll + `
	RETURNING 1
), ud AS (
	INSERT INTO ns_usage_day AS u (org, day, ns_id, shard, writes, deletes, delta_sum, weighted_sum)
	SELECT $2, y.day, $1, $7, sum(ev.writes), sum(ev.deletes), sum(ev.delta), sum(ev.delta::numeric * y.doff)
	FROM ev CROSS JOIN LATERAL ` + sqlEvAtDay + ` y
	CROSS JOIN (SELECT count(*) FROM u) after_u
	GROUP BY y.day ORDER BY y.day
	` + sqlAddDayAll + `
	RETURNING 1
)
SELECT (SELECT count(*) FROM u) + (SELECT count(*) FROM ud)`

// batchRow is a key as the batch found it, then as its ops leave it.
type batchRow struct {
	exists      bool
	contentType string
	updated     int64
	expires     *int64
	rev         int64
	size        int64 // key plus value bytes
	short       []byte

	// After the ops: whether one wrote or deleted it, and what it holds.
	touched bool
	written bool
	data    []byte
	ct      string
	wexp    *int64
	wrev    int64
	wsize   int64
	start   *batchRow // the state found, when touched
}

func (r *batchRow) live(now int64) bool {
	if r.touched {
		return r.written
	}
	return r.exists && (r.expires == nil || *r.expires > now)
}

// batchPlan is what a batch's statements need to know of its ops before
// they run: the keys named (each once, in the order of the ops), those an
// incr reads, and how many ops write (puts and incrs) and delete.
type batchPlan struct {
	keys, incrKeys  [][]byte
	writes, deletes int
}

// planBatch returns the plan of ops, or ErrInvalidArgument for an op of an
// unknown kind.
func planBatch(ops []store.Op) (batchPlan, error) {
	var p batchPlan
	seen := make(map[string]bool, len(ops))
	for _, op := range ops {
		switch op.Kind {
		case store.OpPut:
			p.writes++
		case store.OpIncr:
			p.writes++
			p.incrKeys = append(p.incrKeys, []byte(op.Key))
		case store.OpDelete:
			p.deletes++
		case store.OpCheck, store.OpGet:
		default:
			return batchPlan{}, fmt.Errorf("postgres: op kind %d: %w", op.Kind, store.ErrInvalidArgument)
		}
		if !seen[op.Key] {
			seen[op.Key] = true
			p.keys = append(p.keys, []byte(op.Key))
		}
	}
	return p, nil
}

// Apply implements store.Store.
func (db *DB) Apply(ctx context.Context, org string, nsID kv.ID, ops []store.Op, now time.Time) ([]store.Result, error) {
	if len(ops) < 1 || len(ops) > store.MaxBatchOps {
		return nil, fmt.Errorf("postgres: a batch of %d ops: %w", len(ops), store.ErrInvalidArgument)
	}
	plan, err := planBatch(ops)
	if err != nil {
		return nil, err
	}
	id := [16]byte(nsID)
	var results []store.Result
	err = db.conn(ctx, "batch", func(c *pgx.Conn) error {
		return retryTransient(ctx, func() error {
			var err error
			results, err = applyBatch(ctx, c, id, org, ops, plan, now)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// applyBatch runs ops, whose plan is p, in a transaction of their own on
// c. It takes two round trips
// (three with gets of stored values), the commit included: none of the
// statements before the ops are played needs another's outcome, so they
// go in one pipeline with the BEGIN, and every write goes in one with the
// COMMIT. On an error the transaction is rolled back.
func applyBatch(ctx context.Context, c *pgx.Conn, id [16]byte, org string, ops []store.Op, p batchPlan, now time.Time) (results []store.Result, err error) {
	var b pgx.Batch
	b.Queue("BEGIN")
	b.Queue(sqlBatchNamespace, id, org)
	b.Queue(sqlBatchLock, id, p.keys, org)
	b.Queue(sqlBatchRows, id, p.keys, p.incrKeys)
	n := p.writes + p.deletes
	if n > 0 {
		b.Queue(sqlBatchRevisions, n)
	}
	defer func() {
		if err != nil {
			rollback(ctx, c)
		}
	}()
	br := c.SendBatch(ctx, &b)
	state, isPlaceholder, revs, err := readBatchState(br, n)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	results, w, err := playBatch(ctx, c, id, org, ops, state, isPlaceholder, revs, p.writes, now)
	if err != nil {
		return nil, err
	}
	w.Queue("COMMIT")
	if err := c.SendBatch(ctx, w).Close(); err != nil {
		return nil, err
	}
	return results, nil
}

// rollback ends c's transaction after a failure, under a deadline of its
// own (ctx may be what ended). If it fails too the connection is left
// in a transaction, and the pool closes it instead of reusing it.
func rollback(ctx context.Context, c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _ = c.Exec(ctx, "ROLLBACK")
}

// readBatchState reads the outcomes of a batch's first pipeline: the
// namespace check, the locks (the keys that had no row, now placeholders),
// the rows found, and n revisions.
func readBatchState(br pgx.BatchResults, n int) (state map[string]*batchRow, isPlaceholder map[string]bool, revs []int64, err error) {
	if _, err := br.Exec(); err != nil { // BEGIN
		return nil, nil, nil, err
	}
	var status *string
	err = br.QueryRow().Scan(&status)
	if err := checkKeyRow(err, status); err != nil {
		return nil, nil, nil, err
	}
	lrows, err := br.Query()
	if err != nil {
		return nil, nil, nil, err
	}
	placeholders, err := pgx.CollectRows(lrows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, nil, nil, err
	}
	isPlaceholder = make(map[string]bool, len(placeholders))
	for _, k := range placeholders {
		isPlaceholder[string(k)] = true
	}
	state = map[string]*batchRow{}
	rows, err := br.Query()
	if err != nil {
		return nil, nil, nil, err
	}
	for rows.Next() {
		var (
			key []byte
			r   = &batchRow{exists: true}
		)
		if err := rows.Scan(&key, &r.contentType, &r.updated, &r.expires, &r.rev, &r.size, &r.short); err != nil {
			rows.Close()
			return nil, nil, nil, err
		}
		r.size += int64(len(key))
		if !isPlaceholder[string(key)] {
			state[string(key)] = r
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, nil, err
	}
	// A revision for each op that may change a key; those of deletes of
	// missing keys go unused.
	if n > 0 {
		rows, err := br.Query()
		if err != nil {
			return nil, nil, nil, err
		}
		revs, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return nil, nil, nil, err
		}
		if len(revs) != n {
			return nil, nil, nil, fmt.Errorf("postgres: %d revisions for %d writes and deletes", len(revs), n)
		}
	}
	return state, isPlaceholder, revs, nil
}

// playBatch plays ops in memory on state (the batch's keys as found,
// locked), reading the stored values its gets return in the transaction,
// and returns their results and the statements that write the outcome.
func playBatch(ctx context.Context, c *pgx.Conn, id [16]byte, org string, ops []store.Op, state map[string]*batchRow, isPlaceholder map[string]bool, revs []int64, writes int, now time.Time) ([]store.Result, *pgx.Batch, error) {
	get := func(key string) *batchRow {
		r, ok := state[key]
		if !ok {
			r = &batchRow{}
			state[key] = r
		}
		return r
	}
	var feed batchChanges
	nowNS := encodeTime(now)
	results := make([]store.Result, len(ops))
	var fetch [][]byte // keys whose stored values gets return
	var read int64
	removed := int64(0)
	touch := func(r *batchRow) {
		if !r.touched {
			start := *r
			r.start = &start
			r.touched = true
			r.written = start.exists && (start.expires == nil || *start.expires > nowNS)
			if r.written {
				r.wexp, r.wrev, r.wsize = start.expires, start.rev, start.size
				r.ct = start.contentType
				r.data = nil // the stored one, if needed
			}
		}
	}
	for i, op := range ops {
		r := get(op.Key)
		live := r.live(nowNS)
		rev := r.rev
		if r.touched {
			rev = r.wrev
		}
		res := &results[i]
		switch op.Kind {
		case store.OpCheck:
			if !op.If.Holds(live, store.Revision(rev)) {
				if live {
					return nil, nil, &store.PreconditionError{Op: i, Exists: true, Revision: store.Revision(rev)}
				}
				return nil, nil, &store.PreconditionError{Op: i}
			}
		case store.OpGet:
			if !live {
				break
			}
			*res = store.Result{Found: true, Revision: store.Revision(rev)}
			if r.touched && r.data != nil {
				res.Data = append([]byte{}, r.data...)
				res.ContentType, res.UpdatedAt = r.ct, now
				if r.wexp != nil {
					res.ExpiresAt = decodeTime(*r.wexp)
				}
				break
			}
			if read += r.size - int64(len(op.Key)); read > store.MaxBatchReadBytes {
				return nil, nil, store.ErrBatchTooLarge
			}
			res.ContentType, res.UpdatedAt = r.contentType, decodeTime(r.updated)
			if r.expires != nil {
				res.ExpiresAt = decodeTime(*r.expires)
			}
			fetch = append(fetch, []byte(op.Key))
		case store.OpPut:
			touch(r)
			data := op.Value.Data
			if data == nil {
				data = []byte{}
			}
			r.written, r.data, r.ct, r.wexp = true, data, op.Value.ContentType, encodeExpiry(op.Value.ExpiresAt)
			r.wrev, revs = revs[0], revs[1:]
			r.wsize = int64(len(op.Key) + len(data))
			feed.put(r.wrev, op.Key, data, r.ct, r.wexp)
			*res = store.Result{Created: !live, Revision: store.Revision(r.wrev)}
		case store.OpIncr:
			var n int64
			if live {
				cur := r.data
				if !r.touched || cur == nil {
					cur = r.short
					if cur == nil {
						return nil, nil, &store.OpError{Op: i, Err: store.ErrNotInteger}
					}
				}
				var err error
				if n, err = store.ParseCounter(cur); err != nil {
					return nil, nil, &store.OpError{Op: i, Err: store.ErrNotInteger}
				}
			}
			sum, ok := store.AddCounter(n, op.By)
			if !ok {
				return nil, nil, &store.OpError{Op: i, Err: store.ErrOverflow}
			}
			var exp *int64
			if live {
				exp = r.expires
				if r.touched {
					exp = r.wexp
				}
			}
			touch(r)
			data := store.FormatCounter(sum)
			r.written, r.data, r.ct, r.wexp = true, data, store.CounterContentType, exp
			r.wrev, revs = revs[0], revs[1:]
			r.wsize = int64(len(op.Key) + len(data))
			feed.put(r.wrev, op.Key, data, r.ct, r.wexp)
			*res = store.Result{Created: !live, Revision: store.Revision(r.wrev), Int: sum}
		case store.OpDelete:
			rev := revs[0]
			revs = revs[1:]
			exists := r.exists
			if r.touched {
				exists = r.written
			}
			if !exists {
				break
			}
			touch(r)
			r.written, r.data = false, nil
			res.Deleted = true
			removed++
			feed.delete(rev, op.Key)
		}
	}
	if len(fetch) > 0 {
		rows, err := c.Query(ctx, sqlBatchValues, id, fetch)
		if err != nil {
			return nil, nil, err
		}
		values := map[string][]byte{}
		for rows.Next() {
			var k, v []byte
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return nil, nil, err
			}
			values[string(k)] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, nil, err
		}
		for i, op := range ops {
			if op.Kind == store.OpGet && results[i].Found && results[i].Data == nil {
				v := values[op.Key]
				if v == nil {
					v = []byte{}
				}
				results[i].Data = v
			}
		}
	}

	// Write each touched key's final state, and the usage.
	var (
		b       pgx.Batch
		gone    [][]byte
		delta   int64
		evT     = []int64{nowNS}
		evD     = []int64{0}
		evW     = []int64{int64(writes)}
		evDel   = []int64{removed}
		changed = false
	)
	names := make([]string, 0, len(state))
	for k := range state {
		names = append(names, k)
	}
	slices.Sort(names) // one lock order for every batch
	for _, k := range names {
		r := state[k]
		if !r.touched {
			if isPlaceholder[k] {
				gone = append(gone, []byte(k))
			}
			continue
		}
		start := r.start
		if r.written && r.data == nil {
			continue // a key whose ops left it as it was
		}
		changed = true
		startLive := start.exists && (start.expires == nil || *start.expires > nowNS)
		if startLive {
			delta -= start.size
		} else if start.exists {
			evT, evD, evW, evDel = append(evT, *start.expires), append(evD, -start.size), append(evW, 0), append(evDel, 0)
		}
		if r.written {
			delta += r.wsize
			b.Queue(sqlBatchUpsert, id, []byte(k), r.data, r.ct, nowNS, r.wexp, r.wrev)
		} else if start.exists || isPlaceholder[k] {
			gone = append(gone, []byte(k))
		}
	}
	if len(gone) > 0 {
		b.Queue(sqlBatchDelete, id, gone)
	}
	if len(feed.revs) > 0 {
		b.Queue(sqlBatchChanges, id, nowNS, feed.revs, feed.kinds, feed.keys, feed.sizes, feed.contentTypes, feed.expires, feed.values)
	}
	if changed {
		evD[0] = delta
		b.Queue(sqlBatchUsage, id, org, evT, evD, evW, evDel, shardOf(c))
	}
	return results, &b, nil
}

// batchChanges are the changes of a batch, as columns for sqlBatchChanges.
type batchChanges struct {
	revs         []int64
	kinds        []int16
	keys         [][]byte
	sizes        []*int64
	contentTypes []*string
	expires      []*int64
	values       [][]byte
}

// put records a put of data; a change keeps values of up to
// store.MaxChangeValue bytes only.
func (c *batchChanges) put(rev int64, key string, data []byte, contentType string, expires *int64) {
	size := int64(len(data))
	if size > store.MaxChangeValue {
		data = nil
	}
	c.add(rev, store.ChangePut, key, &size, &contentType, expires, data)
}

func (c *batchChanges) delete(rev int64, key string) {
	c.add(rev, store.ChangeDelete, key, nil, nil, nil, nil)
}

func (c *batchChanges) add(rev int64, kind store.ChangeKind, key string, size *int64, contentType *string, expires *int64, value []byte) {
	c.revs = append(c.revs, rev)
	c.kinds = append(c.kinds, int16(kind))
	c.keys = append(c.keys, []byte(key))
	c.sizes = append(c.sizes, size)
	c.contentTypes = append(c.contentTypes, contentType)
	c.expires = append(c.expires, expires)
	c.values = append(c.values, value)
}

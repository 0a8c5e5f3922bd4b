package postgres

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
	"github.com/jackc/pgx/v5"
)

// Reads of keys are coalesced. At most getBatcher.max key reads run at
// once, each on a connection of its own; a GetKey that arrives while they
// all run waits in a queue, and the next read to finish hands the queue
// (up to maxGetBatch of it) to one of the waiting calls, which reads them
// all in one statement (sqlGetKeys). So a read never waits while a
// connection could serve it at once: an idle engine reads each key as it
// comes, with sqlGetKey. Under load, one round trip, one statement and one
// executor start serve many reads, instead of one each: fewer system calls
// on both sides, and far less work in PostgreSQL per read.
//
// Each read stays linearizable: the statement that serves it starts after
// the call arrived, and reads the namespace and the key from one snapshot,
// taken then.

// maxGetBatch is the most reads one statement serves.
const maxGetBatch = 64

// readStatements is how many statements of key reads run at once on a
// pool of maxConns connections: one per CPU of this process, at least 2
// (1 with a pool of 1). Fewer statements at once serve more reads each,
// and each costs kvd system calls and PostgreSQL an executor start: on a
// machine of 2 cores, with kvd, PostgreSQL and 64 clients on it, 2 at
// once served 12,000-13,000 GETs/s, 4 about 11,000 and 8 8,500. One alone
// stalls every read behind any slow one. The rest of the pool is left to
// writes.
func readStatements(maxConns int) int {
	return min(maxConns, max(2, runtime.GOMAXPROCS(0)))
}

// getBatcher is the queue of key reads waiting for a statement.
type getBatcher struct {
	mu      sync.Mutex
	max     int // most statements of reads at once
	running int // statements of reads under way
	queue   []*getCall
}

// getCall is one GetKey: its arguments, and its outcome once read.
type getCall struct {
	ctx context.Context
	org string
	id  [16]byte
	key string
	now time.Time

	// wake is signaled once, under getBatcher.mu or after it: batch set
	// means the call is to read batch (itself among it); otherwise v and
	// err are its outcome.
	wake  chan struct{}
	batch []*getCall
	v     *store.Value
	err   error
}

// sqlGetKeys is sqlGetKey for several reads: $1, $2 and $3 are the
// namespace ids, organizations and keys, one of each per read; each read
// gets one row, i (its position, from 1), with a NULL status when there is
// no such namespace for the organization. The LATERAL subquery is
// sqlGetKey, run once per read as a nested loop over the primary keys.
const sqlGetKeys = `SELECT r.i, x.status, x.value, x.content_type, x.updated_at, x.expires_at, x.revision
FROM unnest($1::uuid[], $2::text[], $3::bytea[]) WITH ORDINALITY AS r(ns_id, org, key, i)
LEFT JOIN LATERAL (
	SELECT n.status, k.value, k.content_type, k.updated_at, k.expires_at, k.revision
	FROM namespaces n
	LEFT JOIN keys k ON n.status = 'provision_ok' AND k.ns_id = n.id AND k.key = r.key
	WHERE n.id = r.ns_id AND n.org = r.org
) x ON true`

// GetKey implements store.Store. The value is copied out of the
// connection's buffers; Close on it is a no-op.
func (db *DB) GetKey(ctx context.Context, org string, nsID kv.ID, key string, now time.Time) (*store.Value, error) {
	if db.closed.Load() {
		return nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err // called with a done context: nothing is tried
	}
	c := &getCall{ctx: ctx, org: org, id: [16]byte(nsID), key: key, now: now}
	b := &db.gets
	b.mu.Lock()
	if b.running < b.max {
		b.running++
		b.mu.Unlock()
		db.readGets([]*getCall{c})
		return c.v, c.err
	}
	c.wake = make(chan struct{}, 1)
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	select {
	case <-c.wake:
	case <-ctx.Done():
		b.mu.Lock()
		for i, q := range b.queue {
			if q == c {
				b.queue = append(b.queue[:i], b.queue[i+1:]...)
				b.mu.Unlock()
				return nil, ctx.Err() // nothing was tried
			}
		}
		lead := c.batch != nil
		b.mu.Unlock()
		if !lead {
			// A statement reads it now; its outcome no longer matters.
			return nil, ctx.Err()
		}
		<-c.wake // the others of the batch wait for this call to read it
	}
	if c.batch != nil {
		db.readGets(c.batch)
	}
	return c.v, c.err
}

// readGets reads batch, gives each call its outcome and then, while calls
// wait, hands the next batch to one of them; otherwise it gives up its
// turn. The caller is batch's first call, which is not woken.
func (db *DB) readGets(batch []*getCall) {
	db.getKeys(batch)
	for _, c := range batch[1:] {
		c.wake <- struct{}{}
	}
	b := &db.gets
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.running--
		return
	}
	n := min(len(b.queue), maxGetBatch)
	next := make([]*getCall, n)
	copy(next, b.queue)
	b.queue = append(b.queue[:0], b.queue[n:]...)
	next[0].batch = next
	next[0].wake <- struct{}{}
}

// getKeys runs the reads of batch in one statement and sets each call's
// outcome. The statement runs until every call of the batch has given up
// on it.
func (db *DB) getKeys(batch []*getCall) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var left atomic.Int64
	left.Store(int64(len(batch)))
	for _, c := range batch {
		stop := context.AfterFunc(c.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	rows := make([]getRow, len(batch))
	err := db.run(ctx, "get key", func(conn *pgx.Conn) error {
		if len(batch) == 1 {
			c := batch[0]
			r := &rows[0]
			err := conn.QueryRow(ctx, sqlGetKey, c.id, c.org, []byte(c.key)).Scan(&r.status, &r.data, &r.contentType, &r.updated, &r.expires, &r.rev)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // r.status stays nil: no such namespace
			}
			return err
		}
		ids := make([][16]byte, len(batch))
		orgs := make([]string, len(batch))
		keys := make([][]byte, len(batch))
		for i, c := range batch {
			ids[i], orgs[i], keys[i] = c.id, c.org, []byte(c.key)
		}
		qr, err := conn.Query(ctx, sqlGetKeys, ids, orgs, keys)
		if err != nil {
			return err
		}
		defer qr.Close()
		for qr.Next() {
			var (
				i int64
				r getRow
			)
			if err := qr.Scan(&i, &r.status, &r.data, &r.contentType, &r.updated, &r.expires, &r.rev); err != nil {
				return err
			}
			if i < 1 || i > int64(len(rows)) {
				return fmt.Errorf("read %d of %d", i, len(rows))
			}
			rows[i-1] = r
		}
		return qr.Err()
	})
	for i, c := range batch {
		switch {
		case err == nil:
			c.v, c.err = rows[i].value(c.now)
		case c.ctx.Err() != nil && ctx.Err() != nil:
			// Every call gave up, and the statement was stopped.
			c.v, c.err = nil, c.ctx.Err()
		case c.ctx.Err() != nil:
			c.v, c.err = nil, fmt.Errorf("postgres: get key: %w: %w", c.ctx.Err(), err)
		default:
			c.v, c.err = nil, err
		}
		db.errs.count(c.ctx, c.err)
	}
}

// getRow is what sqlGetKey, or one row of sqlGetKeys, read for a key.
type getRow struct {
	status      *string
	data        []byte
	contentType *string
	updated     *int64
	expires     *int64
	rev         *int64
}

// value maps r to GetKey's outcome at now.
func (r *getRow) value(now time.Time) (*store.Value, error) {
	if r.status == nil {
		return nil, store.ErrNamespaceNotFound
	}
	if err := nsCheck(r.status); err != nil {
		return nil, err
	}
	if r.updated == nil || r.expires != nil && *r.expires <= encodeTime(now) {
		return nil, store.ErrKeyNotFound
	}
	data := r.data
	if data == nil {
		data = []byte{}
	}
	var exp time.Time
	if r.expires != nil {
		exp = decodeTime(*r.expires)
	}
	return store.NewValue(data, *r.contentType, decodeTime(*r.updated), exp, store.Revision(*r.rev), nil), nil
}

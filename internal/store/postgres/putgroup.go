package postgres

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// Plain writes of small values are coalesced (coalesce.go): at most
// writeGroups groups of them run at once, and the writes of one namespace
// that arrive meanwhile wait; the next group runs up to maxPutGroup of
// them as one transaction, the way a batch of puts runs (batch.go): one
// namespace check, one lock statement for every key, one usage row, one
// insert of the changes, and one commit, whose WAL flush a single write
// would otherwise pay alone. An idle engine runs each write as it comes,
// with its own statement (sqlPutKeyFast).
//
// A write of a group gets what it would have got alone, run when the
// group ran: the group starts after every one of its writes arrived, and
// commits before any of them is answered; each write takes a revision of
// its own, in the order they arrived, and reports created as it would
// have (of two writes of one new key in a group, the first). The group's
// instant is the latest of its writes' (each arrived before it). Writes
// with a condition, and values above maxPutGroupValue, run alone.
//
// A group's outcome is all or nothing, as a batch's: when it fails, every
// write of it fails with the same error, which for a plain put of a
// namespace is one any of them would have met alone (the namespace gone or
// not ready, the database unreachable). When the database refuses the
// group itself (an error of its own, the transaction rolled back), each
// write runs again alone, so that one write cannot fail the others.

const (
	// maxPutGroup is the most writes one group runs.
	maxPutGroup = 64
	// maxPutGroupValue is the largest value a write may have to join a
	// group.
	maxPutGroupValue = 64 << 10
)

// writeGroups is how many groups of writes run at once on a pool of
// maxConns connections: one per CPU of this process, at least 2, at most
// half the pool (at least 1), the rest left to the writes that run alone,
// deletes, batches and reads. Fewer groups at once are larger: on 2 cores
// shared by kvd, PostgreSQL and 64 writing clients, 2 at once wrote 8-15%
// more than 4 (and 1 about as much as 2), with a lower p99.
func writeGroups(maxConns int) int {
	return max(1, min(maxConns/2, max(2, runtime.GOMAXPROCS(0))))
}

// putCall is one PutKey that may join a group: its arguments, and its
// outcome once run.
type putCall struct {
	org string
	id  [16]byte
	key string
	v   store.PutValue
	now time.Time

	w   store.Written
	err error
}

// newPutCoalescer returns the coalescer of db's plain writes, for a pool
// of maxConns connections.
func newPutCoalescer(db *DB, maxConns int) *coalescer[*putCall] {
	return &coalescer[*putCall]{
		max: writeGroups(maxConns),
		take: func(queue []*waiting[*putCall]) (group, rest []*waiting[*putCall]) {
			first := queue[0].call
			for _, w := range queue {
				if len(group) < maxPutGroup && w.call.id == first.id && w.call.org == first.org {
					group = append(group, w)
				} else {
					rest = append(rest, w)
				}
			}
			return group, rest
		},
		run: db.putKeys,
	}
}

// groupable reports whether a write of v may join a group.
func groupable(v store.PutValue) bool {
	return v.If.IsZero() && len(v.Data) <= maxPutGroupValue
}

// PutKey implements store.Store.
func (db *DB) PutKey(ctx context.Context, org string, nsID kv.ID, key string, v store.PutValue, now time.Time) (store.Written, error) {
	if !groupable(v) {
		return db.putKey(ctx, org, nsID, key, v, now)
	}
	if db.closed.Load() {
		return store.Written{}, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return store.Written{}, err // called with a done context: nothing is tried
	}
	c := &putCall{org: org, id: [16]byte(nsID), key: key, v: v, now: now}
	if err := db.puts.do(ctx, c, func(c *putCall) {
		// The call waits in the queue, and may give up while a group
		// sends its value: the caller may reuse its slice by then.
		c.v.Data = slices.Clone(c.v.Data)
	}); err != nil {
		return store.Written{}, err
	}
	return c.w, c.err
}

// putKeys runs the writes of group, alone or as one transaction, and sets
// each call's outcome.
func (db *DB) putKeys(group []*waiting[*putCall]) {
	ctx, stop := groupContext(group)
	defer stop()
	if len(group) == 1 {
		db.putAlone(ctx, group[0])
		return
	}
	first := group[0].call
	ops := make([]store.Op, len(group))
	now := first.now
	for i, w := range group {
		c := w.call
		ops[i] = store.Op{Kind: store.OpPut, Key: c.key, Value: c.v}
		if c.now.After(now) {
			now = c.now
		}
	}
	plan, err := planBatch(ops)
	if err == nil {
		var results []store.Result
		err = db.run(ctx, "put key", func(conn *pgx.Conn) error {
			return retryTransient(ctx, func() error {
				var err error
				results, err = applyBatch(ctx, conn, first.id, first.org, ops, plan, now)
				return err
			})
		})
		if err == nil {
			for i, w := range group {
				w.call.w = store.Written{Created: results[i].Created, Revision: results[i].Revision}
			}
		}
	}
	var refused *pgconn.PgError
	if errors.As(err, &refused) && ctx.Err() == nil {
		// The database refused the group, and rolled it back: run each
		// write alone, so that what one write meets is its own.
		var wg sync.WaitGroup
		for _, w := range group {
			wg.Go(func() { db.putAlone(ctx, w) })
		}
		wg.Wait()
		return
	}
	for _, w := range group {
		if err != nil {
			w.call.err = groupError(w.ctx, ctx, "put key", err)
		}
		db.errs.count(w.ctx, w.call.err)
	}
}

// putAlone runs the write of w in a statement of its own, under ctx (its
// group's).
func (db *DB) putAlone(ctx context.Context, w *waiting[*putCall]) {
	c := w.call
	c.w, c.err = db.putKey(ctx, c.org, kv.ID(c.id), c.key, c.v, c.now)
	if c.err != nil {
		c.err = groupError(w.ctx, ctx, "put key", c.err)
	}
}

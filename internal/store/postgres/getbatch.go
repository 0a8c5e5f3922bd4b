package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Reads of keys are coalesced (coalesce.go): at most readStatements
// statements of key reads run at once, each on a connection of its own,
// and reads that arrive meanwhile wait; the next statement serves up to
// maxGetBatch of them (sqlGetKeys). An idle engine reads each key as it
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

// getCall is one GetKey: its arguments, and its outcome once read.
type getCall struct {
	org string
	id  [16]byte
	key string
	now time.Time

	v   *store.Value
	err error
}

// newGetCoalescer returns the coalescer of db's key reads, for a pool of
// maxConns connections.
func newGetCoalescer(db *DB, maxConns int) *coalescer[*getCall] {
	return &coalescer[*getCall]{
		max: readStatements(maxConns),
		take: func(queue []*waiting[*getCall]) (group, rest []*waiting[*getCall]) {
			n := min(len(queue), maxGetBatch)
			return queue[:n], queue[n:]
		},
		run: db.getKeys,
	}
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
	c := &getCall{org: org, id: [16]byte(nsID), key: key, now: now}
	if err := db.gets.do(ctx, c, nil); err != nil {
		return nil, err
	}
	return c.v, c.err
}

// getKeys runs the reads of group in one statement and sets each call's
// outcome.
func (db *DB) getKeys(group []*waiting[*getCall]) {
	ctx, stop := groupContext(group)
	defer stop()
	rows := make([]getRow, len(group))
	err := db.run(ctx, "get key", func(conn *pgx.Conn) error {
		var (
			qr  pgx.Rows
			err error
		)
		if len(group) == 1 {
			c := group[0].call
			qr, err = conn.Query(ctx, sqlGetKey, c.id, c.org, []byte(c.key))
		} else {
			ids := make([][16]byte, len(group))
			orgs := make([]string, len(group))
			keys := make([][]byte, len(group))
			for i, w := range group {
				ids[i], orgs[i], keys[i] = w.call.id, w.call.org, []byte(w.call.key)
			}
			qr, err = conn.Query(ctx, sqlGetKeys, ids, orgs, keys)
		}
		if err != nil {
			return err
		}
		defer qr.Close()
		return db.readGetRows(qr, rows)
	})
	for i, w := range group {
		c := w.call
		if err == nil {
			c.v, c.err = rows[i].value(c.now)
		} else {
			c.v, c.err = nil, groupError(w.ctx, ctx, "get key", err)
		}
		db.errs.count(w.ctx, c.err)
	}
}

// readGetRows reads the rows of sqlGetKey (one read: no row is a missing
// namespace) or sqlGetKeys (several: each row names its read) into rows.
// Rows of the column types the engine's schema gives are decoded here
// (the reads of a loaded kvd are most of its statements' rows), others
// through Scan.
func (db *DB) readGetRows(qr pgx.Rows, rows []getRow) error {
	multi := len(rows) > 1
	want := getColumns
	if multi {
		want = getKeysColumns
	}
	raw := binaryColumns(qr.FieldDescriptions(), want...) && !db.getByScan
	for qr.Next() {
		var (
			i   int64 = 1
			r   getRow
			err error
		)
		switch {
		case raw:
			v := qr.RawValues()
			if multi {
				if len(v[0]) != 8 {
					return fmt.Errorf("a read's position of %d bytes", len(v[0]))
				}
				i, v = int64(binary.BigEndian.Uint64(v[0])), v[1:]
			}
			err = r.decode(v)
		case multi:
			err = r.scan(qr, &i)
		default:
			err = r.scan(qr, nil)
		}
		if err != nil {
			return err
		}
		if i < 1 || i > int64(len(rows)) {
			return fmt.Errorf("read %d of %d", i, len(rows))
		}
		rows[i-1] = r
	}
	return qr.Err()
}

// getColumns are the types of sqlGetKey's columns (and of sqlGetKeys's
// after the first).
var getColumns = []uint32{pgtype.TextOID, pgtype.ByteaOID, pgtype.TextOID, pgtype.Int8OID, pgtype.Int8OID, pgtype.Int8OID}

// getKeysColumns are sqlGetKeys's: the read's position, then getColumns.
var getKeysColumns = append([]uint32{pgtype.Int8OID}, getColumns...)

// groupError is the error of a call (whose context is callCtx) of a group
// whose statement, run under groupCtx, failed with err.
func groupError(callCtx, groupCtx context.Context, op string, err error) error {
	switch {
	case callCtx.Err() != nil && groupCtx.Err() != nil:
		// Every call gave up, and the statement was stopped.
		return callCtx.Err()
	case callCtx.Err() != nil:
		return fmt.Errorf("postgres: %s: %w: %w", op, callCtx.Err(), err)
	}
	return err
}

// getRow is what sqlGetKey, or one row of sqlGetKeys, read for a key.
type getRow struct {
	nsFound     bool // the namespace is the organization's
	status      string
	keyFound    bool // and it holds the key (a ready namespace only)
	data        []byte
	contentType string
	updated     int64
	hasExpiry   bool
	expires     int64
	rev         int64
}

// decode sets r from a row's raw values, in getColumns's types: the
// value is copied out of the connection's buffer, the status and the
// usual content type cost no allocation.
func (r *getRow) decode(v [][]byte) error {
	if len(v) != len(getColumns) {
		return fmt.Errorf("a key read of %d columns", len(v))
	}
	if v[0] == nil {
		return nil // no such namespace
	}
	r.nsFound = true
	if r.status = statusReady; string(v[0]) != statusReady {
		r.status = string(v[0])
	}
	if v[3] == nil {
		return nil // no such key
	}
	if len(v[3]) != 8 || len(v[5]) != 8 || v[4] != nil && len(v[4]) != 8 {
		return fmt.Errorf("a key read of %d, %d and %d bytes of times and revision", len(v[3]), len(v[4]), len(v[5]))
	}
	r.keyFound = true
	r.data = append([]byte{}, v[1]...)
	if r.contentType = kv.DefaultContentType; string(v[2]) != kv.DefaultContentType {
		r.contentType = string(v[2])
	}
	r.updated = int64(binary.BigEndian.Uint64(v[3]))
	if v[4] != nil {
		r.hasExpiry, r.expires = true, int64(binary.BigEndian.Uint64(v[4]))
	}
	r.rev = int64(binary.BigEndian.Uint64(v[5]))
	return nil
}

// scan sets r from the current row through Scan; i, when not nil,
// receives the row's first column (sqlGetKeys's position of the read).
func (r *getRow) scan(qr pgx.Rows, i *int64) error {
	var (
		status, contentType   *string
		data                  []byte
		updated, expires, rev *int64
	)
	dst := []any{&status, &data, &contentType, &updated, &expires, &rev}
	if i != nil {
		dst = append([]any{i}, dst...)
	}
	if err := qr.Scan(dst...); err != nil {
		return err
	}
	if status == nil {
		return nil
	}
	r.nsFound, r.status = true, *status
	if updated == nil {
		return nil
	}
	if contentType == nil || rev == nil {
		return errors.New("a key read without its content type or revision")
	}
	r.keyFound, r.data, r.contentType, r.updated, r.rev = true, data, *contentType, *updated, *rev
	if r.data == nil {
		r.data = []byte{}
	}
	if expires != nil {
		r.hasExpiry, r.expires = true, *expires
	}
	return nil
}

// value maps r to GetKey's outcome at now.
func (r *getRow) value(now time.Time) (*store.Value, error) {
	if !r.nsFound {
		return nil, store.ErrNamespaceNotFound
	}
	if err := nsCheck(&r.status); err != nil {
		return nil, err
	}
	if !r.keyFound || r.hasExpiry && r.expires <= encodeTime(now) {
		return nil, store.ErrKeyNotFound
	}
	var exp time.Time
	if r.hasExpiry {
		exp = decodeTime(r.expires)
	}
	return store.NewValue(r.data, r.contentType, decodeTime(r.updated), exp, store.Revision(r.rev), nil), nil
}

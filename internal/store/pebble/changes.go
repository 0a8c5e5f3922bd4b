package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// The change feed. Every change of a key adds, in its own batch, a change
// record under the revision it gave the key:
//
//	0x08 nsid(16) rev(8, BE) -> kind(1) at(8) updated(8) expiry(8) size(4) ctlen(1) keylen(2) contenttype key value
//
// big-endian, times in Unix nanoseconds, the expiry as value records keep
// it. A put carries its value when the value is at most
// store.MaxChangeValue bytes (then len(value) is size); a delete or an
// expiry has no value, size, content type, updated or expiry. Beside a
// namespace's records, and before them in key order, its horizon:
//
//	0x08 nsid(16) -> rev(8, BE)
//
// the highest revision compacted away (CompactChanges), or, for a namespace
// that held keys before the store had a feed, the last revision given then:
// the feed keeps only the changes after it. No horizon: nothing is missing.
//
// Revisions are taken before a batch commits and batches commit in any
// order, so readers read only up to the head (revisions.go): every
// revision at or below it is released, its batch durable or never to be.

var _ store.Changes = (*DB)(nil)

const changeHeaderSize = 1 + 8 + 8 + 8 + 4 + 1 + 2

func appendChangeKey(dst []byte, id [16]byte, rev store.Revision) []byte {
	dst = append(dst, tagChange)
	dst = append(dst, id[:]...)
	return binary.BigEndian.AppendUint64(dst, uint64(rev))
}

func horizonKey(id [16]byte) []byte {
	return append([]byte{tagChange}, id[:]...)
}

// changeSize is the length of the change record of a put of data (or, with
// data nil, of a delete or expiry).
func changeSize(key, contentType string, data []byte) int {
	n := changeHeaderSize + len(contentType) + len(key)
	if len(data) <= store.MaxChangeValue {
		n += len(data)
	}
	return n
}

// appendChange encodes a change record. A delete or expiry passes zero
// updated, expiry and contentType and nil data.
func appendChange(dst []byte, kind store.ChangeKind, at time.Time, updated int64, expiry uint64, key, contentType string, data []byte) []byte {
	dst = append(dst, byte(kind))
	dst = binary.BigEndian.AppendUint64(dst, uint64(at.UnixNano()))
	dst = binary.BigEndian.AppendUint64(dst, uint64(updated))
	dst = binary.BigEndian.AppendUint64(dst, expiry)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(data)))
	dst = append(dst, byte(len(contentType)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(key)))
	dst = append(dst, contentType...)
	dst = append(dst, key...)
	if len(data) <= store.MaxChangeValue {
		dst = append(dst, data...)
	}
	return dst
}

// putChange adds to b the change record of a put.
func putChange(b *pebble.Batch, id [16]byte, rev store.Revision, at time.Time, expiry uint64, key, contentType string, data []byte) error {
	op := b.SetDeferred(1+16+8, changeSize(key, contentType, data))
	appendChangeKey(op.Key[:0], id, rev)
	appendChange(op.Value[:0], store.ChangePut, at, at.UnixNano(), expiry, key, contentType, data)
	return op.Finish()
}

// removalChange adds to b the change record of a delete or an expiry.
func removalChange(b *pebble.Batch, id [16]byte, rev store.Revision, kind store.ChangeKind, at time.Time, key string) error {
	op := b.SetDeferred(1+16+8, changeSize(key, "", nil))
	appendChangeKey(op.Key[:0], id, rev)
	appendChange(op.Value[:0], kind, at, 0, 0, key, "", nil)
	return op.Finish()
}

// changeRecord is a decoded change record; its slices alias the encoded
// bytes.
type changeRecord struct {
	kind        store.ChangeKind
	at, updated int64
	expiry      uint64
	size        int
	contentType []byte
	key         []byte
	value       []byte // nil unless hasValue
	hasValue    bool
}

var errCorruptChange = errors.New("kvd/pebble: corrupt change record")

func decodeChange(b []byte) (changeRecord, error) {
	if len(b) < changeHeaderSize {
		return changeRecord{}, errCorruptChange
	}
	r := changeRecord{
		kind:    store.ChangeKind(b[0]),
		at:      int64(binary.BigEndian.Uint64(b[1:9])),
		updated: int64(binary.BigEndian.Uint64(b[9:17])),
		expiry:  binary.BigEndian.Uint64(b[17:25]),
		size:    int(binary.BigEndian.Uint32(b[25:29])),
	}
	ctLen, keyLen := int(b[29]), int(binary.BigEndian.Uint16(b[30:32]))
	rest := b[changeHeaderSize:]
	if len(rest) < ctLen+keyLen {
		return changeRecord{}, errCorruptChange
	}
	r.contentType, r.key, rest = rest[:ctLen], rest[ctLen:ctLen+keyLen], rest[ctLen+keyLen:]
	switch {
	case r.kind == store.ChangePut && r.size <= store.MaxChangeValue && len(rest) == r.size:
		r.value, r.hasValue = rest, true
	case r.kind == store.ChangePut && r.size > store.MaxChangeValue && len(rest) == 0:
	case (r.kind == store.ChangeDelete || r.kind == store.ChangeExpire) && r.size == 0 && ctLen == 0 && len(rest) == 0:
	default:
		return changeRecord{}, errCorruptChange
	}
	return r, nil
}

// change returns the record as a store.Change of revision rev, with its
// value when withValues is set.
func (r changeRecord) change(rev store.Revision, withValues bool) store.Change {
	c := store.Change{Revision: rev, Kind: r.kind, Key: string(r.key), At: time.Unix(0, r.at).UTC()}
	if r.kind != store.ChangePut {
		return c
	}
	c.Size = int64(r.size)
	c.ContentType = internContentType(r.contentType)
	c.UpdatedAt = time.Unix(0, r.updated).UTC()
	c.ExpiresAt = decodeExpiry(r.expiry)
	if withValues && r.hasValue {
		c.HasValue, c.Value = true, bytes.Clone(r.value)
		if c.Value == nil {
			c.Value = []byte{}
		}
	}
	return c
}

// changeRevision returns the revision of the change record at key k, and
// false for the namespace's horizon.
func changeRevision(k []byte) (store.Revision, bool, error) {
	switch len(k) {
	case 1 + 16:
		return 0, false, nil
	case 1 + 16 + 8:
		return store.Revision(binary.BigEndian.Uint64(k[17:])), true, nil
	}
	return 0, false, fmt.Errorf("kvd/pebble: unexpected record %x", truncate(k, 64))
}

func decodeHorizon(v []byte) (store.Revision, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("kvd/pebble: a change horizon of %d bytes", len(v))
	}
	return store.Revision(binary.BigEndian.Uint64(v)), nil
}

// readHorizon returns the horizon of namespace id as reader r sees it.
func readHorizon(r pebble.Reader, id [16]byte) (store.Revision, error) {
	v, closer, err := r.Get(horizonKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kvd/pebble: read the change horizon: %w", err)
	}
	defer closer.Close()
	return decodeHorizon(v)
}

// changeScanBudget bounds the records one ReadChanges looks at (and so
// reads, values included: up to 256 MiB at 64 KiB each): a reader of a
// narrow prefix far behind the head is answered with the head it read up
// to, and goes on from there, rather than walking all the history in one
// call while it holds its namespace.
const changeScanBudget = 4 << 10

// ReadChanges implements store.Changes. The horizon and the records come
// from one iterator, one consistent view, so a compaction meanwhile
// cannot open a gap between them.
func (d *DB) ReadChanges(ctx context.Context, org string, nsID kv.ID, prefix string, after store.Revision, limit int, withValues bool) ([]store.Change, store.Revision, error) {
	if limit < 1 {
		return nil, 0, fmt.Errorf("kvd/pebble: ReadChanges limit %d: %w", limit, store.ErrInvalidArgument)
	}
	if err := d.begin(ctx); err != nil {
		return nil, 0, err
	}
	defer d.end()
	e, err := d.readyEntry(org, nsID)
	if err != nil {
		return nil, 0, err
	}
	defer e.mu.RUnlock()
	// The head first: every record at or below it has committed before
	// the iterator is made, so the iterator sees them all.
	head := d.revs.head()
	lo, hi := namespaceRange(tagChange, e.id)
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, 0, fmt.Errorf("kvd/pebble: read changes: %w", err)
	}
	defer it.Close()
	var horizon store.Revision
	if it.First() && len(it.Key()) == len(lo) {
		if horizon, err = decodeHorizon(it.Value()); err != nil {
			return nil, 0, err
		}
	}
	if after < horizon {
		return nil, 0, &store.HistoryGoneError{Oldest: horizon}
	}
	changes := make([]store.Change, 0, min(limit, 64))
	if after >= head {
		return changes, head, it.Error()
	}
	scanned := 0
	for ok := it.SeekGE(appendChangeKey(nil, e.id, after+1)); ok; ok = it.Next() {
		rev, isChange, err := changeRevision(it.Key())
		if err != nil {
			return nil, 0, err
		}
		if !isChange {
			continue
		}
		if rev > head {
			break
		}
		if scanned++; scanned > changeScanBudget {
			return changes, rev - 1, nil
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, fmt.Errorf("kvd/pebble: read changes: %w", err)
		}
		rec, err := decodeChange(raw)
		if err != nil {
			return nil, 0, err
		}
		if !bytes.HasPrefix(rec.key, []byte(prefix)) {
			continue
		}
		changes = append(changes, rec.change(rev, withValues))
		if len(changes) == limit {
			break
		}
	}
	if err := it.Error(); err != nil {
		return nil, 0, fmt.Errorf("kvd/pebble: read changes: %w", err)
	}
	return changes, head, nil
}

// Head implements store.Changes.
func (d *DB) Head(ctx context.Context) (store.Revision, error) {
	if err := d.begin(ctx); err != nil {
		return 0, err
	}
	defer d.end()
	return d.revs.head(), nil
}

// WaitHead implements store.Changes. It does not count as a running
// operation while it waits: Close does not wait for it, and wakes it.
func (d *DB) WaitHead(ctx context.Context, after store.Revision) (store.Revision, error) {
	if err := d.begin(ctx); err != nil {
		return 0, err
	}
	d.end()
	return d.revs.wait(ctx, after)
}

// Snapshot implements store.Changes without holding up writers: it reads
// a Pebble snapshot and corrects it by the changes that committed after it
// under lower revisions than some it holds.
//
// Why the keys given to fn are exactly the namespace's state at the
// revision M returned, so that ReadChanges from M goes on with no gap and
// no duplicate:
//
//  1. h0 is the head read before snapshot S is taken: every change at or
//     below h0 committed before S, so S holds it.
//  2. M is the highest of h0, the namespace's horizon in S and its highest
//     change record in S. S holds no change of the namespace above M: each
//     change commits with its record, and a record compacted away is at or
//     below the horizon. So S lacks only changes in (h0, M] that committed
//     after S: the late ones.
//  3. After waiting for the head to reach M, every change at or below M is
//     final; snapshot S2, taken then, holds them all. A record in (h0, M]
//     of S2 that S lacks is late. (Should S2's horizon be above h0, a
//     compaction may have removed late records: it starts again.)
//  4. A key's changes commit in revision order (its stripe is held from
//     taking a revision to the commit), so a late change of a key comes
//     after every change of the key in S, and the key's last late change is
//     its last change at or below M: its state at M. A key without one is
//     at M as S has it.
//
// fn gets S's keys in key order, each replaced by its last late change
// when it has one (a delete or an expiry drops it; a put of a key S lacks
// is merged in). What is kept in memory is the late changes' keys and
// metadata, no values: at most the changes in flight when S was taken.
func (d *DB) Snapshot(ctx context.Context, org string, nsID kv.ID, prefix string, now time.Time, withValues bool, fn func(store.Change) error) (store.Revision, error) {
	if err := d.begin(ctx); err != nil {
		return 0, err
	}
	defer d.end()
	for {
		at, done, err := d.snapshotOnce(ctx, org, nsID, prefix, now, withValues, fn)
		if done || err != nil {
			return at, err
		}
	}
}

// lateChange is a change of the namespace that a snapshot lacks.
type lateChange struct {
	rev store.Revision
	rec changeRecord // its slices are copies, without the value
}

// snapshotOnce is one attempt of Snapshot; done is false when it must
// start again, before it called fn.
func (d *DB) snapshotOnce(ctx context.Context, org string, nsID kv.ID, prefix string, now time.Time, withValues bool, fn func(store.Change) error) (at store.Revision, done bool, err error) {
	e, err := d.readyEntry(org, nsID)
	if err != nil {
		return 0, true, err
	}
	h0 := d.revs.head()
	s := d.db.NewSnapshot()
	e.mu.RUnlock()
	defer s.Close()

	m, err := highestChange(s, e.id)
	if err != nil {
		return 0, true, err
	}
	m = max(m, h0)
	var late []lateChange
	var s2 *pebble.Snapshot
	if m > h0 {
		if _, err := d.revs.wait(ctx, m-1); err != nil {
			return 0, true, err
		}
		s2 = d.db.NewSnapshot()
		defer s2.Close()
		horizon, err := readHorizon(s2, e.id)
		if err != nil {
			return 0, true, err
		}
		if horizon > h0 {
			return 0, false, nil
		}
		if late, err = lateChanges(s, s2, e.id, prefix, h0, m); err != nil {
			return 0, true, err
		}
	}
	return m, true, d.streamSnapshot(ctx, s, s2, e.id, prefix, now, withValues, late, fn)
}

// highestChange returns the highest of namespace id's horizon and change
// records in r.
func highestChange(r pebble.Reader, id [16]byte) (store.Revision, error) {
	lo, hi := namespaceRange(tagChange, id)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var highest store.Revision
	if it.First() && len(it.Key()) == len(lo) {
		if highest, err = decodeHorizon(it.Value()); err != nil {
			return 0, err
		}
	}
	if it.Last() {
		rev, _, err := changeRevision(it.Key()) // 0 for the horizon
		if err != nil {
			return 0, err
		}
		highest = max(highest, rev)
	}
	return highest, it.Error()
}

// lateChanges returns, in key order, the last change of each key with
// prefix among the records in (h0, m] of namespace id that s2 holds and s
// lacks.
func lateChanges(s, s2 *pebble.Snapshot, id [16]byte, prefix string, h0, m store.Revision) ([]lateChange, error) {
	it, err := s2.NewIter(&pebble.IterOptions{
		LowerBound: appendChangeKey(nil, id, h0+1),
		UpperBound: appendChangeKey(nil, id, m+1),
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	byKey := map[string]int{}
	var late []lateChange
	for ok := it.First(); ok; ok = it.Next() {
		rec, err := decodeChange(it.Value())
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(rec.key, []byte(prefix)) {
			continue
		}
		_, closer, err := s.Get(it.Key())
		if err == nil {
			closer.Close()
			continue
		}
		if !errors.Is(err, pebble.ErrNotFound) {
			return nil, err
		}
		c := lateChange{rev: store.Revision(binary.BigEndian.Uint64(it.Key()[17:])), rec: rec}
		c.rec.key, c.rec.contentType, c.rec.value = bytes.Clone(rec.key), bytes.Clone(rec.contentType), nil
		// In revision order: a later change of the key replaces an earlier.
		if i, ok := byKey[string(c.rec.key)]; ok {
			late[i] = c
		} else {
			byKey[string(c.rec.key)] = len(late)
			late = append(late, c)
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	slices.SortFunc(late, func(a, b lateChange) int { return bytes.Compare(a.rec.key, b.rec.key) })
	return late, nil
}

// streamSnapshot calls fn for every live key with prefix of namespace id
// in s, in key order, as late corrects them; a late put's value is read
// from s2.
func (d *DB) streamSnapshot(ctx context.Context, s, s2 *pebble.Snapshot, id [16]byte, prefix string, now time.Time, withValues bool, late []lateChange, fn func(store.Change) error) error {
	lo := appendValueKey(nil, id, prefix)
	it, err := s.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: store.PrefixEnd(lo)})
	if err != nil {
		return fmt.Errorf("kvd/pebble: snapshot: %w", err)
	}
	defer it.Close()
	// emitLate gives fn the state a late change left its key in.
	emitLate := func(c lateChange) error {
		if c.rec.kind != store.ChangePut || expired(c.rec.expiry, now) {
			return nil
		}
		ch := c.rec.change(c.rev, false)
		if withValues && c.rec.size <= store.MaxChangeValue {
			raw, closer, err := s2.Get(appendChangeKey(nil, id, c.rev))
			if err != nil {
				return fmt.Errorf("kvd/pebble: snapshot: %w", err)
			}
			rec, err := decodeChange(raw)
			if err == nil {
				ch = rec.change(c.rev, true)
			}
			closer.Close()
			if err != nil {
				return err
			}
		}
		return fn(ch)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		key := it.Key()[17:]
		for len(late) > 0 && bytes.Compare(late[0].rec.key, key) < 0 {
			if err := emitLate(late[0]); err != nil {
				return err
			}
			late = late[1:]
		}
		if len(late) > 0 && bytes.Equal(late[0].rec.key, key) {
			if err := emitLate(late[0]); err != nil {
				return err
			}
			late = late[1:]
			continue
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("kvd/pebble: snapshot: %w", err)
		}
		rec, err := decodeValue(raw)
		if err != nil {
			return err
		}
		if expired(rec.expiry, now) {
			continue
		}
		c := store.Change{
			Revision:    rec.rev,
			Kind:        store.ChangePut,
			Key:         string(key),
			At:          time.Unix(0, rec.updated).UTC(),
			Size:        int64(len(rec.data)),
			ContentType: internContentType(rec.contentType),
			UpdatedAt:   time.Unix(0, rec.updated).UTC(),
			ExpiresAt:   decodeExpiry(rec.expiry),
		}
		if withValues && len(rec.data) <= store.MaxChangeValue {
			c.HasValue, c.Value = true, append([]byte{}, rec.data...)
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("kvd/pebble: snapshot: %w", err)
	}
	for _, c := range late {
		if err := emitLate(c); err != nil {
			return err
		}
	}
	return nil
}

// compactChunk is how many change records one batch of CompactChanges
// removes; the namespace is held (shared) only while one is built.
const compactChunk = 1024

// CompactChanges implements store.Changes. Compactions run one at a time,
// so that a namespace's horizon only ever rises; each batch removes
// records and raises the horizon together. It removes only records at or
// below the head: above it, a lower revision may still commit.
func (d *DB) CompactChanges(ctx context.Context, before time.Time, max int) (int, error) {
	if err := d.begin(ctx); err != nil {
		return 0, err
	}
	defer d.end()
	select {
	case d.compacting <- struct{}{}:
		defer func() { <-d.compacting }()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	head := d.revs.head()
	d.mu.RLock()
	entries := make([]*nsEntry, 0, len(d.byID))
	for _, e := range d.byID {
		entries = append(entries, e)
	}
	d.mu.RUnlock()
	slices.SortFunc(entries, func(a, b *nsEntry) int { return bytes.Compare(a.id[:], b.id[:]) })
	removed := 0
	for _, e := range entries {
		for removed < max {
			if err := ctx.Err(); err != nil {
				return removed, err
			}
			n, more, err := d.compactNamespace(e, before, head, min(max-removed, compactChunk))
			removed += n
			if err != nil {
				return removed, err
			}
			if !more {
				break
			}
		}
	}
	return removed, nil
}

// compactNamespace removes up to limit of namespace e's oldest change
// records made before before and at or below head, and raises its horizon
// to the last, in one batch; more reports that it stopped at limit.
func (d *DB) compactNamespace(e *nsEntry, before time.Time, head store.Revision, limit int) (n int, more bool, err error) {
	// Held shared, so that a purge (which holds it exclusively) does not
	// run between the reads and the commit and leave a horizon behind.
	e.mu.RLock()
	defer e.mu.RUnlock()
	if d.byIDLocked(kv.ID(e.id)) != e {
		return 0, false, nil // purged
	}
	lo, hi := namespaceRange(tagChange, e.id)
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, false, err
	}
	defer it.Close()
	b := d.db.NewBatch()
	defer b.Close()
	var horizon, last store.Revision
	cutoff := before.UnixNano()
	for ok := it.First(); ok; ok = it.Next() {
		rev, isChange, err := changeRevision(it.Key())
		if err != nil {
			return 0, false, err
		}
		if !isChange {
			if horizon, err = decodeHorizon(it.Value()); err != nil {
				return 0, false, err
			}
			continue
		}
		if n == limit {
			more = true
			break
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return 0, false, err
		}
		if rev > head || len(raw) < changeHeaderSize || int64(binary.BigEndian.Uint64(raw[1:9])) >= cutoff {
			break
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			return 0, false, err
		}
		last, n = rev, n+1
	}
	if err := it.Error(); err != nil {
		return 0, false, err
	}
	if n == 0 {
		return 0, false, nil
	}
	if err := b.Set(horizonKey(e.id), binary.BigEndian.AppendUint64(nil, uint64(max(horizon, last))), nil); err != nil {
		return 0, false, err
	}
	// Not synced: a compaction a crash loses is done again.
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, false, fmt.Errorf("kvd/pebble: compact changes: %w", err)
	}
	return n, more, nil
}

// startFeed records layout version formatVersion, and the horizon of every
// namespace of a store from before the feed that holds keys: their
// history before the feed is not kept, so a reader of it from revision 0
// must be told so (and take a snapshot) rather than miss the keys written
// before. The horizon is the last revision that may have been given
// before; the process gives only higher ones. One synced batch.
func (d *DB) startFeed() error {
	b := d.db.NewBatch()
	defer b.Close()
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagNamespace}, UpperBound: []byte{tagNamespace + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	horizon := binary.BigEndian.AppendUint64(nil, uint64(d.revs.head()))
	for ok := it.First(); ok; ok = it.Next() {
		if len(it.Key()) != 17 {
			continue // load reports it
		}
		id := [16]byte(it.Key()[1:])
		has, err := hasRecords(d.db, tagEntry, id)
		if err != nil {
			return err
		}
		if has {
			if err := b.Set(horizonKey(id), horizon, nil); err != nil {
				return err
			}
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if err := b.Set(formatKey, []byte{formatVersion}, nil); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// hasRecords reports whether r holds a record of table tag of namespace id.
func hasRecords(r pebble.Reader, tag byte, id [16]byte) (bool, error) {
	lo, hi := namespaceRange(tag, id)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return false, err
	}
	found := it.First()
	return found, errors.Join(it.Error(), it.Close())
}

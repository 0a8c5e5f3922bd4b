package pebble

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// batchKey is a key as a batch has left it so far.
type batchKey struct {
	keyState
	// written is set once an op of the batch has stored a value: data,
	// contentType and updated are then that value's.
	written     bool
	data        []byte
	contentType string
}

// Apply implements store.Store. It holds the stripes of every key of the
// batch (in stripe order, so two batches never wait for each other in a
// cycle) from the first read until the batch is applied, and returns once
// it is durable (see stripe).
func (d *DB) Apply(ctx context.Context, org string, nsID kv.ID, ops []store.Op, now time.Time) ([]store.Result, error) {
	if len(ops) < 1 || len(ops) > store.MaxBatchOps {
		return nil, fmt.Errorf("kvd/pebble: a batch of %d ops: %w", len(ops), store.ErrInvalidArgument)
	}
	changes := 0 // the ops that may change a key, each at a revision of its own
	for _, op := range ops {
		switch op.Kind {
		case store.OpPut:
			if len(op.Value.ContentType) > kv.MaxContentTypeLen {
				return nil, fmt.Errorf("kvd/pebble: a Content-Type of %d bytes: %w", len(op.Value.ContentType), store.ErrInvalidArgument)
			}
			changes++
		case store.OpIncr, store.OpDelete:
			changes++
		case store.OpCheck, store.OpGet:
		default:
			return nil, fmt.Errorf("kvd/pebble: op kind %d: %w", op.Kind, store.ErrInvalidArgument)
		}
	}
	if err := d.begin(ctx); err != nil {
		return nil, err
	}
	defer d.end()
	e, err := d.readyEntry(org, nsID)
	if err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	b := d.db.NewBatch()
	defer b.Close()
	var rh revHold
	defer rh.release() // once the batch is durable, or failed
	results, w, err := d.applyOps(b, e, ops, changes, now, &rh)
	if serr := w.wait(); serr != nil {
		return nil, serr
	}
	return results, err
}

// iterBatchOps is the size from which a batch reads its keys through one
// iterator.
const iterBatchOps = 4

// readOldAt reads the key entry at ek of key through it.
func readOldAt(it *pebble.Iterator, ek []byte, key string) (keyState, error) {
	if !it.SeekPrefixGE(ek) {
		if err := it.Error(); err != nil {
			return keyState{}, fmt.Errorf("kvd/pebble: batch: %w", err)
		}
		return keyState{}, nil
	}
	raw, err := it.ValueAndErr()
	if err != nil {
		return keyState{}, fmt.Errorf("kvd/pebble: batch: %w", err)
	}
	return entryState(raw, key)
}

// applyOps is Apply under the stripes of the batch's keys. It takes into
// rh a revision for each of the changes ops that may change a key; those of
// deletes of missing keys go unused.
func (d *DB) applyOps(b *pebble.Batch, e *nsEntry, ops []store.Op, changes int, now time.Time, rh *revHold) ([]store.Result, syncWait, error) {
	ss := d.stripesOf(e.id, ops)
	for _, l := range ss {
		l.Lock()
		defer l.Unlock()
	}

	keys := make(map[string]*batchKey, len(ops))
	// A batch of a few keys reads each with a Get; one of more, through
	// one iterator: building one for each Get would cost more than the
	// seeks. Either sees every write of its keys before the batch, which
	// holds their stripes.
	var it *pebble.Iterator
	defer func() {
		if it != nil {
			it.Close()
		}
	}()
	var ek []byte
	state := func(key string) (*batchKey, error) {
		if k, ok := keys[key]; ok {
			return k, nil
		}
		ek = appendEntryKey(ek[:0], e.id, key)
		if it == nil && len(ops) >= iterBatchOps {
			var err error
			if it, err = d.db.NewIter(nil); err != nil {
				return nil, fmt.Errorf("kvd/pebble: batch: %w", err)
			}
		}
		var old keyState
		var err error
		if it != nil {
			old, err = readOldAt(it, ek, key)
		} else {
			old, err = d.readOld(ek, key)
		}
		if err != nil {
			return nil, err
		}
		k := &batchKey{keyState: old}
		keys[key] = k
		return k, nil
	}
	var rev store.Revision
	if changes > 0 {
		var err error
		if rev, err = d.takeRevisions(rh, e, changes); err != nil {
			return nil, syncWait{}, err
		}
	}
	results := make([]store.Result, len(ops))
	var counts store.UsageCounts
	var delta, read int64
	for i, op := range ops {
		k, err := state(op.Key)
		if err != nil {
			return nil, seen(ss...), err
		}
		live := k.live(now)
		res := &results[i]
		switch op.Kind {
		case store.OpCheck:
			if !op.If.Holds(live, k.rev) {
				return nil, seen(ss...), preconditionFailed(i, k.keyState, now)
			}
		case store.OpGet:
			if !live {
				break
			}
			data, ct, updated, err := d.current(e, op.Key, k, now)
			if err != nil {
				return nil, seen(ss...), err
			}
			if read += int64(len(data)); read > store.MaxBatchReadBytes {
				return nil, seen(ss...), store.ErrBatchTooLarge
			}
			*res = store.Result{Found: true, Data: data, ContentType: ct, UpdatedAt: updated, ExpiresAt: decodeExpiry(k.expiry), Revision: k.rev}
		case store.OpPut:
			v := op.Value
			next, change, err := putRecords(b, e, op.Key, v.Data, v.ContentType, encodeExpiry(v.ExpiresAt), rev, k.keyState, now)
			if err != nil {
				return nil, seen(ss...), err
			}
			*k = batchKey{keyState: next, written: true, data: v.Data, contentType: v.ContentType}
			*res = store.Result{Created: !live, Revision: rev}
			rev++
			delta += change
			counts.Writes++
		case store.OpIncr:
			var n int64
			if live {
				data, _, _, err := d.current(e, op.Key, k, now)
				if err != nil {
					return nil, seen(ss...), err
				}
				if n, err = store.ParseCounter(data); err != nil {
					return nil, seen(ss...), &store.OpError{Op: i, Err: store.ErrNotInteger}
				}
			}
			sum, ok := store.AddCounter(n, op.By)
			if !ok {
				return nil, seen(ss...), &store.OpError{Op: i, Err: store.ErrOverflow}
			}
			data := store.FormatCounter(sum)
			expiry := uint64(0)
			if live {
				expiry = k.expiry // an incr keeps the key's expiry
			}
			next, change, err := putRecords(b, e, op.Key, data, store.CounterContentType, expiry, rev, k.keyState, now)
			if err != nil {
				return nil, seen(ss...), err
			}
			*k = batchKey{keyState: next, written: true, data: data, contentType: store.CounterContentType}
			*res = store.Result{Created: !live, Revision: rev, Int: sum}
			rev++
			delta += change
			counts.Writes++
		case store.OpDelete:
			if !k.exists {
				break
			}
			ek := appendEntryKey(nil, e.id, op.Key)
			if err := deleteKeyRecords(b, e.id, op.Key, ek, rev, store.ChangeDelete, now); err != nil {
				return nil, seen(ss...), err
			}
			rev++
			removed, err := removeOld(b, e, op.Key, k.keyState, now)
			if err != nil {
				return nil, seen(ss...), err
			}
			*k = batchKey{}
			res.Deleted = true
			delta -= removed
			counts.Deletes++
		}
	}
	if b.Empty() {
		return results, seen(ss...), nil
	}
	if err := addUsage(b, e.ns.Org, e.id, now, delta, counts); err != nil {
		return nil, syncWait{}, err
	}
	w, err := d.applyLocked(b, ss...)
	if err != nil {
		return nil, syncWait{}, fmt.Errorf("kvd/pebble: batch: %w", err)
	}
	return results, w, nil
}

// current returns a copy of the live value of k: the one an earlier op of
// the batch wrote, or the stored one.
func (d *DB) current(e *nsEntry, key string, k *batchKey, now time.Time) ([]byte, string, time.Time, error) {
	if k.written {
		return append([]byte{}, k.data...), k.contentType, now, nil
	}
	raw, closer, err := d.db.Get(appendValueKey(nil, e.id, key))
	if err != nil {
		return nil, "", time.Time{}, fmt.Errorf("kvd/pebble: get: %w", err)
	}
	defer closer.Close()
	rec, err := decodeValue(raw)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	return append([]byte{}, rec.data...), internContentType(rec.contentType), time.Unix(0, rec.updated).UTC(), nil
}

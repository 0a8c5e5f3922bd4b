package pebble

import (
	"fmt"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv/internal/store"
)

// stripeCount is the number of per-key locks.
const stripeCount = 4096

// A stripe is the lock of the keys that hash to it. A writer holds it from
// the read of the key's old state until its batch is in the memtable, then
// lets go and waits for the log sync outside it, so that writes of one key
// share log syncs like writes of different keys do (a hot counter is not
// one fsync at a time).
//
// Pebble makes a batch visible before its log sync ends. So that no one
// answers with a write that is not yet durable, every write records itself
// as the stripe's pending write, and whoever reads under the stripe (a GET,
// a failed condition, a read-only batch) waits, after letting go of the
// lock, until the latest pending write it saw is durable. A writer that
// read a pending write's value waits for it too before it answers: its own
// record follows the other in the log, but may sit in a newer log file.
type stripe struct {
	sync.RWMutex
	pending *pendingSync // the latest write applied under this stripe; guarded by the mutex
}

// pendingSync is a write applied to the memtable whose durability is not
// known yet. done is closed once it and every write it read from are
// durable (err nil) or cannot be (err set).
type pendingSync struct {
	done chan struct{}
	err  error
}

func (p *pendingSync) wait() error {
	if p == nil {
		return nil
	}
	<-p.done
	return p.err
}

// syncWait is what an operation waits for after letting go of its stripes:
// its own batch's log sync (when it wrote) and the pending writes it saw.
// The zero value waits for nothing. wait must be called exactly once when
// the operation applied a batch, even if it failed after that.
type syncWait struct {
	d    *DB
	b    *pebble.Batch
	self *pendingSync
	prev []*pendingSync
}

// seen returns a syncWait for an operation that read under stripes ss and
// wrote nothing. The caller holds the stripes.
func seen(ss ...*stripe) syncWait {
	var w syncWait
	for _, s := range ss {
		if s.pending != nil {
			w.prev = append(w.prev, s.pending)
		}
	}
	return w
}

// applyLocked applies b, to be synced, while the caller holds the write
// locks of ss, and makes it their pending write. The caller lets go of the
// locks and then calls the returned syncWait's wait, and answers only once
// it returned nil.
func (d *DB) applyLocked(b *pebble.Batch, ss ...*stripe) (syncWait, error) {
	w := seen(ss...)
	d.unsynced.Add(1)
	if err := d.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		d.unsynced.Add(-1)
		return syncWait{}, err
	}
	w.d, w.b, w.self = d, b, &pendingSync{done: make(chan struct{})}
	for _, s := range ss {
		s.pending = w.self
	}
	return w, nil
}

// wait waits for the operation's own log sync, then for the writes it saw.
func (w syncWait) wait() error {
	var err error
	if w.b != nil {
		if err = w.b.SyncWait(); err != nil {
			err = fmt.Errorf("kvd/pebble: log sync: %w", err)
		}
		w.d.unsynced.Add(-1)
	}
	for _, p := range w.prev {
		if perr := p.wait(); err == nil && perr != nil {
			err = perr
		}
	}
	if w.self != nil {
		w.self.err = err
		close(w.self.done)
	}
	return err
}

func (d *DB) keyLock(id [16]byte, key string) *stripe {
	return &d.stripes[d.stripe(id, key)]
}

// stripesOf returns the distinct stripes of the keys of ops, in stripe
// order, the order every holder of several takes them in.
func (d *DB) stripesOf(id [16]byte, ops []store.Op) []*stripe {
	idx := make([]uint64, 0, len(ops))
	for _, op := range ops {
		idx = append(idx, d.stripe(id, op.Key))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	ss := make([]*stripe, len(idx))
	for i, n := range idx {
		ss[i] = &d.stripes[n]
	}
	return ss
}

// syncSeen returns once every write a reader that took no stripe (a
// listing) may have seen is durable: when writes applied under stripes may
// still be waiting for their log sync, it syncs the log behind them.
func (d *DB) syncSeen() error {
	if d.unsynced.Load() == 0 {
		return nil
	}
	if err := d.db.LogData([]byte{0}, pebble.Sync); err != nil {
		return fmt.Errorf("kvd/pebble: log sync: %w", err)
	}
	return nil
}

package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// revisionsKey holds the revision ceiling: no revision at or above it has
// been given. It is raised, synced, before a revision at or above it is.
var revisionsKey = []byte{tagFormat, 'r', 'e', 'v', 'i', 's', 'i', 'o', 'n', 's'}

// revisionBlock is how far the ceiling is raised at a time: one synced
// write per million revisions.
const revisionBlock = 1 << 20

// revisions gives out the engine's revisions. Each process starts above
// the stored ceiling and above the current time in microseconds, so that
// a store restored from a backup (whose ceiling is older) never gives
// again a revision the lost timeline gave, as long as that timeline gave
// fewer than a million revisions a second.
//
// It also keeps the change feed's head. Revisions are taken before their
// batch commits, and batches commit in any order, so a revision is in
// flight from take until its operation is done (its batch durable, or
// failed, or abandoned): the head is the revision below the lowest one in
// flight, or the last one given when none is. Every change at or below the
// head is final.
type revisions struct {
	db *pebble.DB

	mu       sync.Mutex
	next     store.Revision   // the next one to give
	ceiling  store.Revision   // stored; every revision below it may be given
	inFlight []store.Revision // the first revision of each block in flight, ascending
	moved    chan struct{}    // closed when the head rises or the engine closes; nil when nobody waits
	closed   bool
}

func loadRevisions(db *pebble.DB, now time.Time) (*revisions, error) {
	r := &revisions{db: db}
	v, closer, err := db.Get(revisionsKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("kvd/pebble: read the revision ceiling: %w", err)
	default:
		defer closer.Close()
		if len(v) != 8 {
			return nil, fmt.Errorf("kvd/pebble: the revision ceiling record holds %d bytes, not 8", len(v))
		}
		r.ceiling = store.Revision(binary.BigEndian.Uint64(v))
	}
	r.next = max(r.ceiling, store.Revision(now.UnixMicro()), 1)
	return r, nil
}

// revHold is the block of revisions one operation took, in flight until
// release. An operation declares one, defers its release, and releases it
// only once its batch is durable or has failed (after syncWait.wait), so
// that no reader of the feed sees a change a crash could still undo.
type revHold struct {
	r     *revisions
	first store.Revision // 0: nothing taken
}

// take returns the first of n new revisions, in flight in h until
// h.release. h holds at most one block.
func (r *revisions) take(h *revHold, n int) (store.Revision, error) {
	if h.first != 0 {
		panic("kvd/pebble: a revision hold taken twice")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	first := r.next
	if first+store.Revision(n) > r.ceiling {
		c := first + store.Revision(n) + revisionBlock
		if err := r.db.Set(revisionsKey, binary.BigEndian.AppendUint64(nil, uint64(c)), pebble.Sync); err != nil {
			return 0, fmt.Errorf("kvd/pebble: raise the revision ceiling: %w", err)
		}
		r.ceiling = c
	}
	r.next += store.Revision(n)
	// Blocks are taken in ascending order: appending keeps the list sorted.
	r.inFlight = append(r.inFlight, first)
	h.r, h.first = r, first
	return first, nil
}

// release ends h's block's flight; releasing an empty hold, or one
// released already, does nothing.
func (h *revHold) release() {
	if h.first == 0 {
		return
	}
	r := h.r
	r.mu.Lock()
	defer r.mu.Unlock()
	before := r.headLocked()
	if i, ok := slices.BinarySearch(r.inFlight, h.first); ok {
		r.inFlight = slices.Delete(r.inFlight, i, i+1)
	}
	h.first = 0
	if r.headLocked() > before && r.moved != nil {
		close(r.moved)
		r.moved = nil
	}
}

func (r *revisions) headLocked() store.Revision {
	if len(r.inFlight) > 0 {
		return r.inFlight[0] - 1
	}
	return r.next - 1
}

// head returns the feed's head.
func (r *revisions) head() store.Revision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headLocked()
}

// wait returns the head once it is above after; ctx's error when ctx
// ends first, store.ErrClosed once the engine closes.
func (r *revisions) wait(ctx context.Context, after store.Revision) (store.Revision, error) {
	for {
		r.mu.Lock()
		h, closed := r.headLocked(), r.closed
		if h > after || closed {
			r.mu.Unlock()
			if h > after {
				return h, nil
			}
			return 0, store.ErrClosed
		}
		if r.moved == nil {
			r.moved = make(chan struct{})
		}
		moved := r.moved
		r.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// close wakes every waiter for good.
func (r *revisions) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.moved != nil {
		close(r.moved)
		r.moved = nil
	}
}

// takeRevisions takes n revisions into h for changes of e's namespace, as
// revisions.take does, and raises e.lastTaken to the last of them, before
// the batch commits and so before the head can reach them: once the head
// is h, every change of the namespace at or below h has raised it.
func (d *DB) takeRevisions(h *revHold, e *nsEntry, n int) (store.Revision, error) {
	first, err := d.revs.take(h, n)
	if err != nil {
		return 0, err
	}
	last := uint64(first) + uint64(n) - 1
	for {
		old := e.lastTaken.Load()
		if last <= old || e.lastTaken.CompareAndSwap(old, last) {
			return first, nil
		}
	}
}

// LastRevisionTaken implements store.ChangeHint.
func (d *DB) LastRevisionTaken(org string, nsID kv.ID) (store.Revision, bool) {
	e, err := d.entry(org, nsID)
	if err != nil {
		return 0, false
	}
	return store.Revision(e.lastTaken.Load()), true
}

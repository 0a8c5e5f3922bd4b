package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

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
type revisions struct {
	db *pebble.DB

	mu      sync.Mutex
	next    store.Revision // the next one to give
	ceiling store.Revision // stored; every revision below it may be given
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

// take returns the first of n new revisions.
func (r *revisions) take(n int) (store.Revision, error) {
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
	return first, nil
}

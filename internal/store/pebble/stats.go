package pebble

import (
	"context"

	"github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

var _ store.Backlogger = (*DB)(nil)

// Metrics returns Pebble's own metrics of the engine (WAL syncs, flushes,
// compactions, levels, the block cache, disk usage), or nil once the engine
// is closed or has failed. It is safe for concurrent use; each call takes
// a fresh copy.
func (d *DB) Metrics() *pebble.Metrics {
	if err := d.begin(context.Background()); err != nil {
		return nil
	}
	defer d.end()
	return d.db.Metrics()
}

// JobBacklog implements store.Backlogger from the namespaces in memory.
func (d *DB) JobBacklog(ctx context.Context) (store.JobBacklog, error) {
	if err := d.begin(ctx); err != nil {
		return store.JobBacklog{}, err
	}
	defer d.end()
	// The entries are copied out first: a purge holds its entry's lock
	// while it takes d.mu, so d.mu must not be held while waiting for one.
	d.mu.RLock()
	entries := make([]*nsEntry, 0, len(d.byID))
	for _, e := range d.byID {
		entries = append(entries, e)
	}
	d.mu.RUnlock()
	var b store.JobBacklog
	for _, e := range entries {
		e.mu.RLock()
		status, updated := e.ns.Status, e.ns.UpdatedAt
		e.mu.RUnlock()
		switch status {
		case kv.StatusPending:
			b.Pending++
		case kv.StatusDeleting:
			b.Deleting++
		default:
			continue
		}
		if b.Oldest.IsZero() || updated.Before(b.Oldest) {
			b.Oldest = updated
		}
	}
	return b, nil
}

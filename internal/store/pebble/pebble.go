// Package pebble is kvd's embedded storage engine, built on CockroachDB's
// Pebble. It is the default engine: one process owns a data directory, and
// keeps the namespace and token tables in memory, so a key operation costs
// no metadata read.
//
// Durability: every change is committed with Sync, and Pebble's commit
// pipeline shares one WAL fsync among all the batches that arrive while the
// previous sync runs (group commit), so concurrent writers do not pay one
// fsync each.
package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/diskguard"
	"github.com/edgekv/kv/internal/store"
)

var _ store.Store = (*DB)(nil)

// Options configure the engine. The zero value is valid.
type Options struct {
	// OnFatal is called once, with the cause, when the engine meets a
	// storage error it cannot continue after: a failed write or sync of its
	// log or manifest, or a log file it cannot create. Every call fails from
	// then on, reads included, since memory may hold writes that are not on
	// disk; the calls that met the error never return. The process is
	// expected to end: kvd logs the cause and exits with code 70, so that a
	// supervisor restarts it on the synced state, where nothing
	// unacknowledged is served and nothing acknowledged is lost. OnFatal
	// runs on the goroutine that met the error and must not call the
	// engine. nil logs the cause. A failure while Open runs is returned by
	// Open instead.
	OnFatal func(err error)
	// FS is the file system; nil means the operating system's, where the
	// store is kept private: its directory 0700, its files 0600. Tests use
	// Pebble's crash-simulating memory file system here.
	FS vfs.FS
	// CacheSize is the block cache's size in bytes, for sstable blocks;
	// 0 means DefaultCacheSize.
	CacheSize int64
	// MinFreeSpace is the free space, in bytes, the store's file system
	// keeps: below it, Space refuses writes until space is freed. 0 turns
	// the guard off.
	MinFreeSpace int64
	// Logger receives Pebble's own messages; nil discards informational ones
	// and logs errors with slog's default logger.
	Logger *slog.Logger
	// MaxOpenFiles bounds the files the engine keeps open (its table
	// cache); 0 means Pebble's default of 1000.
	MaxOpenFiles int
}

// ErrLocked is returned by Open when another process holds the directory.
var ErrLocked = errors.New("kvd/pebble: the data directory is in use by another process (is kvd running on it?)")

// DB is the embedded engine.
type DB struct {
	db *pebble.DB

	seed     maphash.Seed
	stripes  [stripeCount]stripe // per-key locks, see stripe
	unsynced atomic.Int64        // writes applied under stripes whose log sync is not known to be done

	// ops is held shared by every method while it runs and exclusively by
	// Close, so the engine never closes under a running operation.
	ops    sync.RWMutex
	closed bool // guarded by ops

	h     *health          // the failure state, shared with Pebble's file system and logger
	lock  *pebble.Lock     // the directory's lock, released by Close
	guard *diskguard.Guard // nil without Options.MinFreeSpace

	mu     sync.RWMutex // guards the maps below and every nsEntry's lease
	byID   map[[16]byte]*nsEntry
	byName map[orgName]*nsEntry
	byOrg  map[string][]*nsEntry // ordered by CreatedAt, then ID

	tokens *tokenTable
	revs   *revisions

	compacting chan struct{} // holds a token while CompactChanges runs
}

type orgName struct{ org, name string }

// nsEntry is the in-memory copy of a namespace record.
type nsEntry struct {
	id [16]byte

	// mu is held shared by every key operation for its whole duration and
	// exclusively by a status change, so that once a namespace leaves
	// provision_ok no key operation is running on it or will start.
	mu sync.RWMutex
	ns kv.Namespace // guarded by mu

	leaseHolder string    // guarded by DB.mu
	leaseUntil  time.Time // guarded by DB.mu

	// lastTaken is the highest revision taken for a change of the
	// namespace (see takeRevisions).
	lastTaken atomic.Uint64
}

// DefaultCacheSize is the block cache's default size.
const DefaultCacheSize = 64 << 20

// memTableSize is the size of each memtable. Larger than Pebble's 4 MiB
// default: fewer flushes and less compaction under a steady write load.
const memTableSize = 32 << 20

// upgrade brings a store written by an earlier layout to formatVersion and
// records the version; a new store just records it. From version 1 it
// writes a key entry for every value record, in batches; from every
// earlier version it starts the change feed (startFeed), which needs the
// revisions loaded. The version is recorded (synced) only after the rest,
// so an interrupted upgrade is redone at the next start. A store with keys
// to upgrade says so in log.
func (d *DB) upgrade(log *slog.Logger) error {
	v, closer, err := d.db.Get(formatKey)
	switch {
	case err == nil:
		version := slices.Clone(v)
		closer.Close()
		if len(version) != 1 || version[0] > formatVersion {
			return fmt.Errorf("kvd/pebble: the data directory has layout version %x; this kvd reads up to version %d (a newer kvd wrote it?)", version, formatVersion)
		}
		if version[0] == formatVersion {
			return nil
		}
		// Layout 4 reads every record of layouts 2 and 3 as it is.
		return d.startFeed()
	case err != pebble.ErrNotFound:
		return fmt.Errorf("kvd/pebble: read the layout version: %w", err)
	}
	start := time.Now()
	n, err := d.writeKeyEntries(func() {
		log.Info("kvd/pebble: upgrading the data directory's layout to version 2: writing a key entry for every key before serving", "version", formatVersion)
	})
	if err != nil {
		return fmt.Errorf("kvd/pebble: upgrade the layout to version %d: %w", formatVersion, err)
	}
	if err := d.startFeed(); err != nil {
		return err
	}
	if n > 0 {
		log.Info("kvd/pebble: layout upgraded", "version", formatVersion, "keys", n, "duration", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// writeKeyEntries writes the key entry of every value record and returns
// how many it wrote; starting is called before the first.
func (d *DB) writeKeyEntries(starting func()) (int, error) {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagKey}, UpperBound: []byte{tagKey + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	b := d.db.NewBatch()
	defer func() { b.Close() }()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n == 0 {
			starting()
		}
		n++
		k := it.Key()
		if len(k) < 17 {
			return n, fmt.Errorf("unexpected record %x", k)
		}
		rec, err := decodeValue(it.Value())
		if err != nil {
			return n, err
		}
		var id [16]byte
		copy(id[:], k[1:17])
		if err := b.Set(appendEntryKey(nil, id, string(k[17:])), encodeEntry(nil, rec.updated, rec.expiry, len(rec.data), rec.rev), nil); err != nil {
			return n, err
		}
		if b.Len() >= 4<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return n, err
			}
			b.Close()
			b = d.db.NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		return n, err
	}
	return n, b.Commit(pebble.NoSync)
}

// load reads the namespace and token tables into memory.
func (d *DB) load() error {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagNamespace}, UpperBound: []byte{tagToken + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	var legacy []store.TokenDigest // tokens stored before token records
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		switch {
		case k[0] == tagNamespace && len(k) == 17:
			var id [16]byte
			copy(id[:], k[1:])
			ns, err := decodeNamespace(id, it.Value())
			if err != nil {
				return err
			}
			d.insertLocked(&nsEntry{id: id, ns: ns})
		case k[0] == tagToken && len(k) == 33:
			var dg store.TokenDigest
			copy(dg[:], k[1:])
			rewrite, err := d.tokens.loadToken(dg, it.Value())
			if err != nil {
				return err
			}
			if rewrite {
				legacy = append(legacy, dg)
			}
		default:
			return fmt.Errorf("kvd/pebble: unexpected record %x", k)
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	return d.rewriteLegacyTokens(legacy)
}

func (d *DB) insertLocked(e *nsEntry) {
	d.byID[e.id] = e
	d.byName[orgName{e.ns.Org, e.ns.Name}] = e
	list := d.byOrg[e.ns.Org]
	i, _ := slices.BinarySearchFunc(list, e, compareEntries)
	d.byOrg[e.ns.Org] = slices.Insert(list, i, e)
}

func (d *DB) removeLocked(e *nsEntry) {
	delete(d.byID, e.id)
	delete(d.byName, orgName{e.ns.Org, e.ns.Name})
	list := d.byOrg[e.ns.Org]
	if i, ok := slices.BinarySearchFunc(list, e, compareEntries); ok {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(d.byOrg, e.ns.Org)
	} else {
		d.byOrg[e.ns.Org] = list
	}
}

// compareEntries orders by creation time, then id; CreatedAt and ID never
// change, so reading them needs no lock.
func compareEntries(a, b *nsEntry) int {
	if c := a.ns.CreatedAt.Compare(b.ns.CreatedAt); c != 0 {
		return c
	}
	return bytes.Compare(a.id[:], b.id[:])
}

// Close closes the engine. It waits for running operations to finish. A
// failed engine is not closed (Pebble cannot close cleanly after a fatal
// error); the process is expected to end.
func (d *DB) Close() error {
	if d.h.failed.Load() {
		return d.h.err()
	}
	d.revs.close() // WaitHead does not hold ops while it waits
	d.ops.Lock()
	defer d.ops.Unlock()
	if d.closed {
		return store.ErrClosed
	}
	d.closed = true
	if d.guard != nil {
		d.guard.Close()
	}
	return errors.Join(d.db.Close(), d.lock.Close())
}

// Space is the engine's free-space guard, nil without
// Options.MinFreeSpace. Its Err refuses writes while the store's file
// system has less free space than the reserve.
func (d *DB) Space() *diskguard.Guard { return d.guard }

// begin marks the start of an operation; it fails once ctx is done, or the
// engine is closed or has failed. A nil begin must be paired with end.
func (d *DB) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.h.failed.Load() {
		return d.h.err()
	}
	d.ops.RLock()
	if d.closed {
		d.ops.RUnlock()
		return store.ErrClosed
	}
	return nil
}

func (d *DB) end() { d.ops.RUnlock() }

// CreateNamespace implements store.Store.
func (d *DB) CreateNamespace(ctx context.Context, ns kv.Namespace) error {
	id := [16]byte(ns.ID)
	if err := d.begin(ctx); err != nil {
		return err
	}
	defer d.end()
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.byName[orgName{ns.Org, ns.Name}]; ok {
		return store.ErrNameTaken
	}
	if _, ok := d.byID[id]; ok {
		return store.ErrIDTaken
	}
	if err := d.db.Set(namespaceKey(id), encodeNamespace(ns), pebble.Sync); err != nil {
		return fmt.Errorf("kvd/pebble: create namespace: %w", err)
	}
	d.insertLocked(&nsEntry{id: id, ns: ns})
	return nil
}

// entry returns the namespace entry for org's namespace id, or
// store.ErrNamespaceNotFound.
func (d *DB) entry(org string, id kv.ID) (*nsEntry, error) {
	d.mu.RLock()
	e, ok := d.byID[id]
	d.mu.RUnlock()
	// Org and ID never change, so reading them needs no lock.
	if !ok || e.ns.Org != org {
		return nil, store.ErrNamespaceNotFound
	}
	return e, nil
}

// GetNamespace implements store.Store.
func (d *DB) GetNamespace(ctx context.Context, org string, id kv.ID) (kv.Namespace, error) {
	if err := d.begin(ctx); err != nil {
		return kv.Namespace{}, err
	}
	defer d.end()
	e, err := d.entry(org, id)
	if err != nil {
		return kv.Namespace{}, err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.ns, nil
}

// ListNamespaces implements store.Store.
func (d *DB) ListNamespaces(ctx context.Context, org string, offset, limit int) ([]kv.Namespace, int, error) {
	if offset < 0 || limit < 1 {
		return nil, 0, fmt.Errorf("kvd/pebble: ListNamespaces offset %d, limit %d: %w", offset, limit, store.ErrInvalidArgument)
	}
	if err := d.begin(ctx); err != nil {
		return nil, 0, err
	}
	defer d.end()
	d.mu.RLock()
	list := d.byOrg[org]
	total := len(list)
	var page []*nsEntry
	if offset < total {
		page = slices.Clone(list[offset:min(total, offset+limit)])
	}
	d.mu.RUnlock()
	out := make([]kv.Namespace, len(page))
	for i, e := range page {
		e.mu.RLock()
		out[i] = e.ns
		e.mu.RUnlock()
	}
	return out, total, nil
}

// setStatusLocked persists e with status to; the caller holds e.mu
// exclusively.
func (d *DB) setStatusLocked(e *nsEntry, to kv.Status, now time.Time) error {
	ns := e.ns
	ns.Status = to
	ns.UpdatedAt = now
	if err := d.db.Set(namespaceKey(e.id), encodeNamespace(ns), pebble.Sync); err != nil {
		return fmt.Errorf("kvd/pebble: set namespace status: %w", err)
	}
	// Only the mutable fields are written: Org, Name and CreatedAt are read
	// without the lock.
	e.ns.Status, e.ns.UpdatedAt = ns.Status, ns.UpdatedAt
	return nil
}

// MarkDeleting implements store.Store.
func (d *DB) MarkDeleting(ctx context.Context, org string, id kv.ID, now time.Time) (kv.Namespace, error) {
	if err := d.begin(ctx); err != nil {
		return kv.Namespace{}, err
	}
	defer d.end()
	e, err := d.entry(org, id)
	if err != nil {
		return kv.Namespace{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ns.Status == kv.StatusDeleting {
		return kv.Namespace{}, store.ErrAlreadyDeleting
	}
	// One batch: the status, the end of the namespace's storage at now (its
	// keys expired by now stop at their expiry), and its expiry index.
	b := d.db.NewBatch()
	defer b.Close()
	live, err := d.liveBytes(e, now)
	if err != nil {
		return kv.Namespace{}, err
	}
	if err := d.scanExpired(e.id, now, 0, func(x expiryEntry, size int64) {
		addUsage(b, e.ns.Org, e.id, decodeExpiry(x.expiry), -size, store.UsageCounts{})
	}); err != nil {
		return kv.Namespace{}, err
	}
	if err := addUsage(b, e.ns.Org, e.id, now, -live, store.UsageCounts{}); err != nil {
		return kv.Namespace{}, err
	}
	lo, hi := namespaceRange(tagExpiry, e.id)
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return kv.Namespace{}, err
	}
	ns := e.ns
	ns.Status, ns.UpdatedAt = kv.StatusDeleting, now
	if err := b.Set(namespaceKey(e.id), encodeNamespace(ns), nil); err != nil {
		return kv.Namespace{}, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return kv.Namespace{}, fmt.Errorf("kvd/pebble: mark deleting: %w", err)
	}
	e.ns.Status, e.ns.UpdatedAt = ns.Status, ns.UpdatedAt
	return e.ns, nil
}

// ClaimLifecycleJob implements store.Store. Leases live in memory: the
// directory lock makes this process the engine's only user, and after a
// restart every job is claimable again.
func (d *DB) ClaimLifecycleJob(ctx context.Context, holder string, now time.Time, lease time.Duration) (kv.Namespace, bool, error) {
	if err := d.begin(ctx); err != nil {
		return kv.Namespace{}, false, err
	}
	defer d.end()
	// The table is not held while a namespace's lock is taken: a purge
	// holds its namespace's lock while it takes the table's.
	d.mu.RLock()
	entries := make([]*nsEntry, 0, len(d.byID))
	for _, e := range d.byID {
		entries = append(entries, e)
	}
	d.mu.RUnlock()
	for _, e := range entries {
		e.mu.RLock()
		ns := e.ns
		e.mu.RUnlock()
		if ns.Status != kv.StatusPending && ns.Status != kv.StatusDeleting {
			continue
		}
		// The lease is taken under the table's lock, if the namespace is
		// still there and nobody else holds one; a status changed since is
		// found by the job, under the namespace's lock (finishJob).
		d.mu.Lock()
		free := d.byID[e.id] == e && (e.leaseHolder == "" || !now.Before(e.leaseUntil))
		if free {
			e.leaseHolder, e.leaseUntil = holder, now.Add(lease)
		}
		d.mu.Unlock()
		if free {
			return ns, true, nil
		}
	}
	return kv.Namespace{}, false, nil
}

func (d *DB) byIDLocked(id kv.ID) *nsEntry {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.byID[id]
}

func (d *DB) releaseLease(e *nsEntry, holder string) {
	d.mu.Lock()
	if e.leaseHolder == holder {
		e.leaseHolder, e.leaseUntil = "", time.Time{}
	}
	d.mu.Unlock()
}

// finishJob runs fn on namespace id, locked exclusively, if it still has
// status want, and releases holder's lease on it afterwards. A namespace
// that is gone is not an error; one in another status is moved, which
// finishJob returns.
func (d *DB) finishJob(ctx context.Context, id kv.ID, holder string, want kv.Status, moved error, fn func(e *nsEntry) error) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	defer d.end()
	e := d.byIDLocked(id)
	if e == nil {
		return nil
	}
	defer d.releaseLease(e, holder)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ns.Status != want {
		return moved
	}
	return fn(e)
}

// CompleteProvision implements store.Store.
func (d *DB) CompleteProvision(ctx context.Context, id kv.ID, holder string, to kv.Status, now time.Time) error {
	if to != kv.StatusProvisionOK && to != kv.StatusProvisionFailed {
		return fmt.Errorf("kvd/pebble: CompleteProvision to status %q: %w", to, store.ErrInvalidArgument)
	}
	return d.finishJob(ctx, id, holder, kv.StatusPending, nil, func(e *nsEntry) error { return d.setStatusLocked(e, to, now) })
}

// PurgeNamespace implements store.Store: range deletions (values, key
// entries, expiry index, change feed) and the namespace record, in one
// synced batch.
func (d *DB) PurgeNamespace(ctx context.Context, id kv.ID, holder string) error {
	return d.finishJob(ctx, id, holder, kv.StatusDeleting, store.ErrNotDeleting, d.purgeLocked)
}

func (d *DB) purgeLocked(e *nsEntry) error {
	b := d.db.NewBatch()
	defer b.Close()
	for _, tag := range []byte{tagKey, tagEntry, tagExpiry, tagChange} {
		lo, hi := namespaceRange(tag, e.id)
		if err := b.DeleteRange(lo, hi, nil); err != nil {
			return err
		}
	}
	if err := b.Delete(namespaceKey(e.id), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kvd/pebble: purge namespace: %w", err)
	}
	d.mu.Lock()
	d.removeLocked(e)
	d.mu.Unlock()
	return nil
}

// readyEntry returns org's namespace id locked shared for a key operation;
// the caller must RUnlock it.
func (d *DB) readyEntry(org string, id kv.ID) (*nsEntry, error) {
	e, err := d.entry(org, id)
	if err != nil {
		return nil, err
	}
	e.mu.RLock()
	if !e.ns.Ready() {
		s := e.ns.Status
		e.mu.RUnlock()
		return nil, &store.NotReadyError{Status: s}
	}
	return e, nil
}

// stripe returns the index of key's stripe.
func (d *DB) stripe(id [16]byte, key string) uint64 {
	var h maphash.Hash
	h.SetSeed(d.seed)
	h.Write(id[:])
	h.WriteString(key)
	return h.Sum64() % stripeCount
}

// GetKey implements store.Store. The value's bytes are Pebble's own, valid
// until the Value is closed.
func (d *DB) GetKey(ctx context.Context, org string, nsID kv.ID, key string, now time.Time) (*store.Value, error) {
	if err := d.begin(ctx); err != nil {
		return nil, err
	}
	defer d.end()
	e, err := d.readyEntry(org, nsID)
	if err != nil {
		return nil, err
	}
	defer e.mu.RUnlock()
	kb := keyBufs.Get().(*[]byte)
	rk := appendValueKey((*kb)[:0], e.id, key)
	l := d.keyLock(e.id, key)
	l.RLock()
	raw, closer, err := d.db.Get(rk)
	w := seen(l)
	l.RUnlock()
	*kb = rk
	keyBufs.Put(kb)
	if serr := w.wait(); serr != nil {
		if err == nil {
			closer.Close()
		}
		return nil, serr
	}
	if err == pebble.ErrNotFound {
		return nil, store.ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("kvd/pebble: get: %w", err)
	}
	rec, err := decodeValue(raw)
	if err != nil {
		closer.Close()
		return nil, err
	}
	if expired(rec.expiry, now) {
		closer.Close()
		return nil, store.ErrKeyNotFound
	}
	return store.NewValue(rec.data, internContentType(rec.contentType), time.Unix(0, rec.updated).UTC(), decodeExpiry(rec.expiry), rec.rev, closer), nil
}

// keyState is what a write needs of the key it replaces.
type keyState struct {
	exists bool
	expiry uint64
	size   int64 // key plus value bytes
	rev    store.Revision
}

// live reports whether the key exists and has not expired by now.
func (k keyState) live(now time.Time) bool { return k.exists && !expired(k.expiry, now) }

// readOld reads the key entry at ek of key.
func (d *DB) readOld(ek []byte, key string) (keyState, error) {
	raw, closer, err := d.db.Get(ek)
	if err == pebble.ErrNotFound {
		return keyState{}, nil
	}
	if err != nil {
		return keyState{}, fmt.Errorf("kvd/pebble: get: %w", err)
	}
	defer closer.Close()
	return entryState(raw, key)
}

// entryState is the state of key as its entry, raw, records it.
func entryState(raw []byte, key string) (keyState, error) {
	ent, err := decodeEntry(raw)
	if err != nil {
		return keyState{}, err
	}
	return keyState{exists: true, expiry: ent.expiry, size: keySize(key, ent.size), rev: ent.rev}, nil
}

// removeOld adds to b what replacing or deleting old at now takes: its
// expiry entry goes, and its bytes stop counting: at its expiry if that has
// passed, else now (returned as the live bytes removed).
func removeOld(b *pebble.Batch, e *nsEntry, key string, old keyState, now time.Time) (liveRemoved int64, err error) {
	if !old.exists {
		return 0, nil
	}
	if old.expiry != 0 {
		if err := b.Delete(appendExpiryKey(nil, e.id, old.expiry, key), nil); err != nil {
			return 0, err
		}
		if expired(old.expiry, now) {
			return 0, addUsage(b, e.ns.Org, e.id, decodeExpiry(old.expiry), -old.size, store.UsageCounts{})
		}
	}
	return old.size, nil
}

// deleteKeyRecords adds to b the deletion of key's value record and its key
// entry (at ek), and its change record: kind (a delete or an expiry) at
// revision rev, made at now.
func deleteKeyRecords(b *pebble.Batch, id [16]byte, key string, ek []byte, rev store.Revision, kind store.ChangeKind, now time.Time) error {
	if err := b.Delete(appendValueKey(nil, id, key), nil); err != nil {
		return err
	}
	if err := b.Delete(ek, nil); err != nil {
		return err
	}
	return removalChange(b, id, rev, kind, now, key)
}

// appendSize encodes a size for an expiry entry.
func appendSize(dst []byte, size int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(size))
}

// putRecords adds to b the records of v stored under key at revision rev,
// in place of old, with its change record, and returns the key's new state
// and the change of its live bytes at now (the usage of an old value that
// expired is added to b at its expiry).
func putRecords(b *pebble.Batch, e *nsEntry, key string, data []byte, contentType string, expiry uint64, rev store.Revision, old keyState, now time.Time) (keyState, int64, error) {
	op := b.SetDeferred(1+16+len(key), valueHeaderSize+len(contentType)+len(data))
	appendValueKey(op.Key[:0], e.id, key)
	encodeValue(op.Value[:0], now, expiry, rev, contentType, data)
	if err := op.Finish(); err != nil {
		return keyState{}, 0, err
	}
	op = b.SetDeferred(1+16+len(key), entrySize)
	appendEntryKey(op.Key[:0], e.id, key)
	encodeEntry(op.Value[:0], now.UnixNano(), expiry, len(data), rev)
	if err := op.Finish(); err != nil {
		return keyState{}, 0, err
	}
	if err := putChange(b, e.id, rev, now, expiry, key, contentType, data); err != nil {
		return keyState{}, 0, err
	}
	size := keySize(key, len(data))
	removed, err := removeOld(b, e, key, old, now)
	if err != nil {
		return keyState{}, 0, err
	}
	if expiry != 0 {
		if err := b.Set(appendExpiryKey(nil, e.id, expiry, key), appendSize(nil, size), nil); err != nil {
			return keyState{}, 0, err
		}
	}
	return keyState{exists: true, expiry: expiry, size: size, rev: rev}, size - removed, nil
}

// PutKey implements store.Store. The key's stripe is held from the read of
// the old entry until the batch is applied, so the condition, "created" and
// the revision are decided against the latest write of the key; PutKey
// returns once the write is durable (see stripe).
func (d *DB) PutKey(ctx context.Context, org string, nsID kv.ID, key string, v store.PutValue, now time.Time) (store.Written, error) {
	if err := d.begin(ctx); err != nil {
		return store.Written{}, err
	}
	defer d.end()
	if len(v.ContentType) > kv.MaxContentTypeLen {
		return store.Written{}, fmt.Errorf("kvd/pebble: a Content-Type of %d bytes: %w", len(v.ContentType), store.ErrInvalidArgument)
	}
	e, err := d.readyEntry(org, nsID)
	if err != nil {
		return store.Written{}, err
	}
	defer e.mu.RUnlock()

	b := d.db.NewBatchWithSize(valueHeaderSize + len(v.ContentType) + len(v.Data) + entrySize + 3*(1+16+8+len(key)) +
		1 + 16 + 8 + changeSize(key, v.ContentType, v.Data) + 64)
	defer b.Close()
	kb := keyBufs.Get().(*[]byte)
	ek := appendEntryKey((*kb)[:0], e.id, key)
	defer func() { *kb = ek; keyBufs.Put(kb) }()

	var rh revHold
	defer rh.release() // once the batch is durable, or failed
	written, w, err := d.putLocked(b, e, ek, key, v, now, &rh)
	if serr := w.wait(); serr != nil {
		return store.Written{}, serr
	}
	return written, err
}

// putLocked is PutKey under the key's stripe; its revision is taken into
// rh.
func (d *DB) putLocked(b *pebble.Batch, e *nsEntry, ek []byte, key string, v store.PutValue, now time.Time, rh *revHold) (store.Written, syncWait, error) {
	l := d.keyLock(e.id, key)
	l.Lock()
	defer l.Unlock()
	old, err := d.readOld(ek, key)
	if err != nil {
		return store.Written{}, syncWait{}, err
	}
	if !v.If.Holds(old.live(now), old.rev) {
		return store.Written{}, seen(l), preconditionFailed(0, old, now)
	}
	rev, err := d.takeRevisions(rh, e, 1)
	if err != nil {
		return store.Written{}, syncWait{}, err
	}
	_, delta, err := putRecords(b, e, key, v.Data, v.ContentType, encodeExpiry(v.ExpiresAt), rev, old, now)
	if err != nil {
		return store.Written{}, syncWait{}, err
	}
	if err := addUsage(b, e.ns.Org, e.id, now, delta, store.UsageCounts{Writes: 1}); err != nil {
		return store.Written{}, syncWait{}, err
	}
	w, err := d.applyLocked(b, l)
	if err != nil {
		return store.Written{}, syncWait{}, fmt.Errorf("kvd/pebble: put: %w", err)
	}
	return store.Written{Created: !old.live(now), Revision: rev}, w, nil
}

// preconditionFailed reports that the op at index op found the key as
// old.
func preconditionFailed(op int, old keyState, now time.Time) error {
	if old.live(now) {
		return &store.PreconditionError{Op: op, Exists: true, Revision: old.rev}
	}
	return &store.PreconditionError{Op: op}
}

// DeleteKey implements store.Store.
func (d *DB) DeleteKey(ctx context.Context, org string, nsID kv.ID, key string, now time.Time) (bool, error) {
	if err := d.begin(ctx); err != nil {
		return false, err
	}
	defer d.end()
	e, err := d.readyEntry(org, nsID)
	if err != nil {
		return false, err
	}
	defer e.mu.RUnlock()
	b := d.db.NewBatch()
	defer b.Close()
	var rh revHold
	defer rh.release() // once the batch is durable, or failed
	deleted, w, err := d.deleteLocked(b, e, key, now, &rh)
	if serr := w.wait(); serr != nil {
		return false, serr
	}
	return deleted, err
}

// deleteLocked is DeleteKey under the key's stripe; the revision of a
// removal is taken into rh.
func (d *DB) deleteLocked(b *pebble.Batch, e *nsEntry, key string, now time.Time, rh *revHold) (bool, syncWait, error) {
	ek := appendEntryKey(nil, e.id, key)
	l := d.keyLock(e.id, key)
	l.Lock()
	defer l.Unlock()
	old, err := d.readOld(ek, key)
	if err != nil {
		return false, syncWait{}, err
	}
	if !old.exists {
		return false, seen(l), nil
	}
	rev, err := d.takeRevisions(rh, e, 1)
	if err != nil {
		return false, syncWait{}, err
	}
	if err := deleteKeyRecords(b, e.id, key, ek, rev, store.ChangeDelete, now); err != nil {
		return false, syncWait{}, err
	}
	removed, err := removeOld(b, e, key, old, now)
	if err != nil {
		return false, syncWait{}, err
	}
	if err := addUsage(b, e.ns.Org, e.id, now, -removed, store.UsageCounts{Deletes: 1}); err != nil {
		return false, syncWait{}, err
	}
	w, err := d.applyLocked(b, l)
	if err != nil {
		return false, syncWait{}, fmt.Errorf("kvd/pebble: delete: %w", err)
	}
	return true, w, nil
}

// ListKeys implements store.Store with one iterator over the namespace's
// key range.
func (d *DB) ListKeys(ctx context.Context, org string, nsID kv.ID, prefix, after string, limit int, now time.Time) ([]kv.KeyInfo, bool, error) {
	if limit < 1 {
		return nil, false, fmt.Errorf("kvd/pebble: ListKeys limit %d: %w", limit, store.ErrInvalidArgument)
	}
	if err := d.begin(ctx); err != nil {
		return nil, false, err
	}
	defer d.end()
	e, err := d.readyEntry(org, nsID)
	if err != nil {
		return nil, false, err
	}
	defer e.mu.RUnlock()
	lo := appendEntryKey(nil, e.id, prefix)
	hi := store.PrefixEnd(lo)
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, false, fmt.Errorf("kvd/pebble: list: %w", err)
	}
	defer it.Close()
	var valid bool
	if after != "" && after >= prefix {
		start := appendEntryKey(nil, e.id, after)
		valid = it.SeekGE(start)
		if valid && bytes.Equal(it.Key(), start) {
			valid = it.Next()
		}
	} else {
		valid = it.First()
	}
	nowExp := encodeExpiry(now)
	keys := make([]kv.KeyInfo, 0, min(limit, 64))
	for ; valid; valid = it.Next() {
		ent, err := decodeEntry(it.Value())
		if err != nil {
			return nil, false, err
		}
		if ent.expiry != 0 && ent.expiry <= nowExp {
			continue
		}
		if len(keys) == limit {
			if err := d.syncSeen(); err != nil {
				return nil, false, err
			}
			return keys, true, nil
		}
		keys = append(keys, kv.KeyInfo{
			Key:       string(it.Key()[17:]),
			Size:      int64(ent.size),
			UpdatedAt: time.Unix(0, ent.updated).UTC(),
			Revision:  uint64(ent.rev),
		})
	}
	if err := it.Error(); err != nil {
		return nil, false, err
	}
	if err := d.syncSeen(); err != nil {
		return nil, false, err
	}
	return keys, false, nil
}

// SweepExpired implements store.Store. It walks each namespace's expiry
// index up to now and deletes the keys whose current expiry has passed.
func (d *DB) SweepExpired(ctx context.Context, now time.Time, max int) (int, error) {
	if err := d.begin(ctx); err != nil {
		return 0, err
	}
	defer d.end()
	d.mu.RLock()
	entries := make([]*nsEntry, 0, len(d.byID))
	for _, e := range d.byID {
		entries = append(entries, e)
	}
	d.mu.RUnlock()
	removed := 0
	for _, e := range entries {
		if removed >= max || ctx.Err() != nil {
			break
		}
		n, err := d.sweepNamespace(e, now, max-removed)
		removed += n
		if err != nil {
			return removed, err
		}
	}
	return removed, nil
}

type expiryEntry struct {
	expiry uint64
	key    string
}

func (d *DB) sweepNamespace(e *nsEntry, now time.Time, max int) (int, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.ns.Status != kv.StatusProvisionOK {
		return 0, nil // purging removes whatever a deleting namespace holds
	}
	var due []expiryEntry
	if err := d.scanExpired(e.id, now, max, func(x expiryEntry, _ int64) { due = append(due, x) }); err != nil {
		return 0, err
	}
	// Each removal is applied under its key's stripe and synced like a
	// write, since watchers are told of it: the waits come after the last,
	// so that the removals share log syncs. Their revisions stay in flight
	// until then.
	holds := make([]revHold, len(due))
	defer func() {
		for i := range holds {
			holds[i].release()
		}
	}()
	waits := make([]syncWait, 0, len(due))
	batches := make([]*pebble.Batch, 0, len(due))
	defer func() {
		for _, b := range batches {
			b.Close()
		}
	}()
	removed := 0
	var err error
	for i, x := range due {
		b := d.db.NewBatch()
		batches = append(batches, b)
		var ok bool
		var w syncWait
		ok, w, err = d.sweepKey(b, e, x, now, &holds[i])
		waits = append(waits, w)
		if err != nil {
			break
		}
		if ok {
			removed++
		}
	}
	for _, w := range waits {
		if werr := w.wait(); werr != nil && err == nil {
			err = werr
		}
	}
	return removed, err
}

// sweepKey adds to b the deletion of x's key, if its expiry is still
// x.expiry, with its expiry entry, the end of its storage at its expiry
// and its change record (an expiry, at a revision taken into rh), and
// applies it. An expiry entry no write left behind is dropped unsynced: a
// lost drop is redone.
func (d *DB) sweepKey(b *pebble.Batch, e *nsEntry, x expiryEntry, now time.Time, rh *revHold) (bool, syncWait, error) {
	ek := appendEntryKey(nil, e.id, x.key)
	l := d.keyLock(e.id, x.key)
	l.Lock()
	defer l.Unlock()
	old, err := d.readOld(ek, x.key)
	if err != nil {
		return false, syncWait{}, err
	}
	if !(old.exists && old.expiry == x.expiry && expired(old.expiry, now)) {
		b.Delete(appendExpiryKey(nil, e.id, x.expiry, x.key), nil)
		if err := b.Commit(pebble.NoSync); err != nil {
			return false, syncWait{}, fmt.Errorf("kvd/pebble: sweep: %w", err)
		}
		return false, syncWait{}, nil
	}
	rev, err := d.takeRevisions(rh, e, 1)
	if err != nil {
		return false, syncWait{}, err
	}
	if err := deleteKeyRecords(b, e.id, x.key, ek, rev, store.ChangeExpire, now); err != nil {
		return false, syncWait{}, err
	}
	if _, err := removeOld(b, e, x.key, old, now); err != nil {
		return false, syncWait{}, err
	}
	w, err := d.applyLocked(b, l)
	if err != nil {
		return false, syncWait{}, fmt.Errorf("kvd/pebble: sweep: %w", err)
	}
	return true, w, nil
}

// pebbleLogger sends Pebble's errors to slog (at most one line per
// logEvery for a repeated one), drops its chatter, and turns its fatal
// errors into a failed engine.
type pebbleLogger struct{ h *health }

func (p pebbleLogger) Infof(format string, args ...any) {}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.h.errLog.log(p.h.log, pebbleMessage(format, args...))
}

// Fatalf must not return: Pebble carries on as if it had not been called.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.h.fatal(errors.New(pebbleMessage(format, args...)))
}

// pebbleMessage formats one of Pebble's messages, prefixed "pebble:" as
// Pebble prefixes most of its own.
func pebbleMessage(format string, args ...any) string {
	msg := fmt.Sprintf(format, args...)
	if !strings.HasPrefix(msg, "pebble") {
		msg = "pebble: " + msg
	}
	return msg
}

// errFailed is returned by every call once the engine has failed.
var errFailed = errors.New("kvd/pebble: the engine failed after a storage error and must be restarted")

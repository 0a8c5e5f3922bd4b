package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// Backups. Checkpoint copies a serving store at one instant: Pebble's
// checkpoint, with its log flushed and synced first, so every write
// acknowledged before the call is in the copy, and hard links (or copies,
// across file systems) of the immutable sstables, so writers wait only for
// the moment it takes to pin the current version. Check reads a store or a
// backup without changing it and says what is wrong with it.

// Checkpoint writes a consistent copy of the store to dest, which must
// not exist; the copy holds kvd's identity file and is synced.
func (d *DB) Checkpoint(ctx context.Context, dest string) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	defer d.end()
	if err := d.db.Checkpoint(dest, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("kvd/pebble: checkpoint to %s: %w", dest, err)
	}
	if err := writeIdentity(vfs.Default, dest); err != nil {
		return fmt.Errorf("kvd/pebble: checkpoint to %s: %w", dest, err)
	}
	return nil
}

// CheckReport is what Check found in a store.
type CheckReport struct {
	Layout     int
	Namespaces int
	Tokens     int
	Keys       int64
	Bytes      int64    // keys plus values, as usage counts them
	Changes    int64    // change records, the change feed's history
	Problems   []string // empty: the store is sound
}

// maxProblems bounds the problems Check lists: a store damaged throughout
// would otherwise make a report as large as itself.
const maxProblems = 100

// Check verifies the store in dir, read-only: the checks Open makes before
// it writes anything (identity, markers, manifest, sstables, layout
// record), then every record: each decodes, every key has a value record
// and a key entry that agree, the expiry index matches the entries, every
// key and change record belongs to a namespace, change records lie
// between their namespace's horizon and the revision ceiling, and each
// namespace's usage records add up to the bytes its keys hold. It refuses a store a running kvd holds. An error
// means Check could not look (no such store, locked); damage is in
// Problems.
func Check(dir string) (CheckReport, error) {
	var r CheckReport
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fs := &engineFS{FS: vfs.Default, h: newHealth(log)}
	if _, err := os.Stat(dir); err != nil {
		return r, fmt.Errorf("kvd/pebble: %s: %w", dir, err)
	}
	fresh, err := inspect(fs, dir)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return r, nil
	}
	if fresh {
		return r, fmt.Errorf("kvd/pebble: %s holds no store", dir)
	}
	lock, err := pebble.LockDirectory(dir, fs)
	if err != nil {
		return r, fmt.Errorf("%w: %s: %v; check a backup of it instead (kvd backup), or stop kvd", ErrLocked, dir, err)
	}
	defer lock.Close()
	popts := &pebble.Options{FS: fs, Lock: lock, Logger: pebbleLogger{fs.h}, Merger: usageMerger, FormatMajorVersion: pebble.FormatNewest}
	if _, err := verify(fs, dir, popts, log); err != nil {
		r.Problems = append(r.Problems, err.Error())
		return r, nil
	}
	ro := popts.Clone()
	ro.ReadOnly, ro.ErrorIfNotExists = true, true
	rdb, err := pebble.Open(dir, ro)
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("Pebble cannot open it read-only: %v", err))
		return r, nil
	}
	defer rdb.Close()
	c := &checker{db: rdb, report: &r, namespaces: map[[16]byte]kv.Namespace{}, stored: map[[16]byte]int64{}, monthly: map[[16]byte]int64{}, daily: map[[16]byte]int64{}}
	if err := c.run(); err != nil {
		c.problem("reading it failed: %v", err)
	}
	return r, nil
}

type checker struct {
	db         *pebble.DB
	report     *CheckReport
	namespaces map[[16]byte]kv.Namespace
	stored     map[[16]byte]int64 // bytes of each namespace's key entries
	monthly    map[[16]byte]int64 // Σ byte deltas of its monthly usage records
	daily      map[[16]byte]int64 // and of its daily ones
	ceiling    store.Revision     // the revision ceiling record, read by format
}

func (c *checker) problem(format string, args ...any) {
	if len(c.report.Problems) < maxProblems {
		c.report.Problems = append(c.report.Problems, fmt.Sprintf(format, args...))
	} else if len(c.report.Problems) == maxProblems {
		c.report.Problems = append(c.report.Problems, "… and more")
	}
}

func (c *checker) run() error {
	if err := c.format(); err != nil {
		return err
	}
	if err := c.tables(); err != nil {
		return err
	}
	if err := c.keys(); err != nil {
		return err
	}
	if err := c.expiries(); err != nil {
		return err
	}
	if err := c.changes(); err != nil {
		return err
	}
	if err := c.usage(); err != nil {
		return err
	}
	for id, ns := range c.namespaces {
		want := c.stored[id]
		if storageEnded(ns.Status) {
			want = 0 // its storage ended when the deletion began
		}
		if c.monthly[id] != want {
			c.problem("namespace %s: its usage records count %d bytes stored, its keys hold %d", kv.ID(id), c.monthly[id], want)
		}
		if c.daily[id] != want {
			c.problem("namespace %s: its daily usage records count %d bytes stored, its keys hold %d", kv.ID(id), c.daily[id], want)
		}
	}
	for id, n := range c.monthly {
		if _, ok := c.namespaces[id]; !ok && (n != 0 || c.daily[id] != 0) {
			c.problem("namespace %s is gone, but its usage records count %d bytes still stored", kv.ID(id), n)
		}
	}
	return nil
}

// scan calls fn with every record whose key starts with tag.
func (c *checker) scan(tag byte, fn func(k, v []byte)) error {
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tag}, UpperBound: []byte{tag + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return err
		}
		fn(it.Key(), v)
	}
	if err := it.Error(); err != nil {
		it.Close()
		return err
	}
	return it.Close()
}

func (c *checker) format() error {
	v, closer, err := c.db.Get(formatKey)
	if errors.Is(err, pebble.ErrNotFound) {
		c.problem("it has no layout record")
		return nil
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	if len(v) != 1 || v[0] < 2 || v[0] > formatVersion {
		c.problem("its layout record holds %x; this kvd reads layouts 2 to %d", v, formatVersion)
		return nil
	}
	c.report.Layout = int(v[0])
	return c.scan(tagFormat, func(k, v []byte) {
		switch {
		case bytes.Equal(k, formatKey):
		case bytes.Equal(k, revisionsKey):
			if len(v) != 8 {
				c.problem("its revision ceiling holds %d bytes, not 8", len(v))
				return
			}
			c.ceiling = store.Revision(binary.BigEndian.Uint64(v))
		default:
			c.problem("an unknown record %x", truncate(k, 64))
		}
	})
}

// tables checks the namespace and token tables, and that no record has a
// tag the layout does not know.
func (c *checker) tables() error {
	err := c.scan(tagNamespace, func(k, v []byte) {
		if len(k) != 17 {
			c.problem("a namespace record with a key of %d bytes", len(k))
			return
		}
		id := [16]byte(k[1:])
		ns, err := decodeNamespace(id, v)
		if err == nil && (ns.Org == "" || !knownStatus(ns.Status)) {
			err = errors.New("no organization or an unknown status")
		}
		if err != nil {
			c.problem("namespace %s: its record does not decode (%v)", kv.ID(id), err)
			return
		}
		c.namespaces[id] = ns
		c.report.Namespaces++
	})
	if err != nil {
		return err
	}
	err = c.scan(tagToken, func(k, v []byte) {
		if len(k) != 33 {
			c.problem("a token record with a key of %d bytes", len(k))
			return
		}
		if _, _, err := decodeToken(store.TokenDigest(k[1:]), v); err != nil {
			c.problem("a token record does not decode (%v)", err)
			return
		}
		c.report.Tokens++
	})
	if err != nil {
		return err
	}
	it, err := c.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagChange + 1}})
	if err != nil {
		return err
	}
	if it.First() {
		c.problem("records with a tag this layout does not have, from %x", truncate(it.Key(), 64))
	}
	return it.Close()
}

// keys walks the value records and the key entries side by side (both are
// ordered by namespace, then key).
func (c *checker) keys() error {
	vals, err := c.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagKey}, UpperBound: []byte{tagKey + 1}})
	if err != nil {
		return err
	}
	defer vals.Close()
	ents, err := c.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tagEntry}, UpperBound: []byte{tagEntry + 1}})
	if err != nil {
		return err
	}
	defer ents.Close()
	vok, eok := vals.First(), ents.First()
	for vok || eok {
		var cmp int
		switch {
		case !vok:
			cmp = 1
		case !eok:
			cmp = -1
		default:
			cmp = bytes.Compare(vals.Key()[1:], ents.Key()[1:])
		}
		switch {
		case cmp < 0:
			c.problem("%s has a value record but no key entry", c.name(vals.Key()))
			vok = vals.Next()
		case cmp > 0:
			c.problem("%s has a key entry but no value record", c.name(ents.Key()))
			eok = ents.Next()
		default:
			if err := c.key(vals, ents); err != nil {
				return err
			}
			vok, eok = vals.Next(), ents.Next()
		}
	}
	if err := vals.Error(); err != nil {
		return err
	}
	return ents.Error()
}

func (c *checker) key(vals, ents *pebble.Iterator) error {
	k := ents.Key()
	what := c.name(k)
	if len(k) < 18 {
		c.problem("%s: a key record without a key", what)
		return nil
	}
	id, key := [16]byte(k[1:17]), string(k[17:])
	if _, ok := c.namespaces[id]; !ok {
		c.problem("%s belongs to no namespace", what)
	}
	if err := kv.ValidateKey(key); err != nil {
		c.problem("%s: not a valid key (%v)", what, err)
	}
	raw, err := vals.ValueAndErr()
	if err != nil {
		return err
	}
	v, err := decodeValue(raw)
	if err != nil {
		c.problem("%s: its value record does not decode (%v)", what, err)
		return nil
	}
	raw, err = ents.ValueAndErr()
	if err != nil {
		return err
	}
	e, err := decodeEntry(raw)
	if err != nil {
		c.problem("%s: its key entry does not decode (%v)", what, err)
		return nil
	}
	if e.size != len(v.data) || e.expiry != v.expiry || e.updated != v.updated || e.rev != v.rev {
		c.problem("%s: its key entry (size %d, expiry %d, updated %d, revision %d) disagrees with its value record (size %d, expiry %d, updated %d, revision %d)",
			what, e.size, e.expiry, e.updated, e.rev, len(v.data), v.expiry, v.updated, v.rev)
	}
	if v.rev != 0 && v.rev >= c.ceiling {
		c.problem("%s: its revision %d is not below the revision ceiling %d", what, v.rev, c.ceiling)
	}
	if len(v.data) > kv.MaxValueSize {
		c.problem("%s: a value of %d bytes, over the limit", what, len(v.data))
	}
	c.report.Keys++
	c.report.Bytes += keySize(key, len(v.data))
	c.stored[id] += keySize(key, len(v.data))
	if e.expiry != 0 && !storageEnded(c.namespaces[id].Status) {
		x, closer, err := c.db.Get(appendExpiryKey(nil, id, e.expiry, key))
		switch {
		case errors.Is(err, pebble.ErrNotFound):
			c.problem("%s expires but is not in the expiry index", what)
		case err != nil:
			return err
		default:
			if len(x) != 8 || int64(binary.BigEndian.Uint64(x)) != keySize(key, len(v.data)) {
				c.problem("%s: its expiry index entry holds another size", what)
			}
			closer.Close()
		}
	}
	return nil
}

// expiries checks that every expiry index entry names a key entry with
// that expiry.
func (c *checker) expiries() error {
	var err error
	scanErr := c.scan(tagExpiry, func(k, v []byte) {
		if err != nil {
			return
		}
		if len(k) < 1+16+8+1 || len(v) != 8 {
			c.problem("an expiry index entry of the wrong shape (%x)", truncate(k, 64))
			return
		}
		id, expiry, key := [16]byte(k[1:17]), binary.BigEndian.Uint64(k[17:25]), string(k[25:])
		raw, closer, gerr := c.db.Get(appendEntryKey(nil, id, key))
		if errors.Is(gerr, pebble.ErrNotFound) {
			c.problem("the expiry index names %q in namespace %s, which has no such key", key, kv.ID(id))
			return
		}
		if gerr != nil {
			err = gerr
			return
		}
		defer closer.Close()
		if e, derr := decodeEntry(raw); derr == nil && e.expiry != expiry {
			c.problem("the expiry index names %q in namespace %s with another expiry than its key entry", key, kv.ID(id))
		}
	})
	if scanErr != nil {
		return scanErr
	}
	return err
}

// changes checks the change feed: each namespace's horizon, then its
// change records, in revision order.
func (c *checker) changes() error {
	var id [16]byte
	var horizon store.Revision
	return c.scan(tagChange, func(k, v []byte) {
		if len(k) != 1+16 && len(k) != 1+16+8 {
			c.problem("a change record with a key of %d bytes", len(k))
			return
		}
		if [16]byte(k[1:17]) != id {
			id, horizon = [16]byte(k[1:17]), 0
			if _, ok := c.namespaces[id]; !ok {
				c.problem("namespace %s is gone, but its change feed is not", kv.ID(id))
			}
		}
		if len(k) == 1+16 {
			h, err := decodeHorizon(v)
			if err != nil {
				c.problem("namespace %s: its change horizon does not decode (%v)", kv.ID(id), err)
			}
			horizon = h
			return
		}
		rev := store.Revision(binary.BigEndian.Uint64(k[17:]))
		rec, err := decodeChange(v)
		switch {
		case err != nil:
			c.problem("namespace %s: change %d does not decode (%v)", kv.ID(id), rev, err)
			return
		case rev <= horizon:
			c.problem("namespace %s: change %d is not above the feed's horizon %d", kv.ID(id), rev, horizon)
		case rev >= c.ceiling:
			c.problem("namespace %s: change %d is not below the revision ceiling %d", kv.ID(id), rev, c.ceiling)
		}
		if err := kv.ValidateKey(string(rec.key)); err != nil {
			c.problem("namespace %s: change %d is of an invalid key (%v)", kv.ID(id), rev, err)
		}
		c.report.Changes++
	})
}

// usage adds up each namespace's usage records.
func (c *checker) usage() error {
	for _, t := range []struct {
		tag  byte
		sums map[[16]byte]int64
	}{{tagUsage, c.monthly}, {tagUsageDay, c.daily}} {
		err := c.scan(t.tag, func(k, v []byte) {
			u, err := decodeUsage(v)
			if err != nil || len(k) < 1+2+16 {
				c.problem("a usage record does not decode (%x)", truncate(k, 64))
				return
			}
			t.sums[[16]byte(k[len(k)-16:])] += u.delta
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// name describes the key of a value record or key entry for a problem.
func (c *checker) name(k []byte) string {
	if len(k) < 17 {
		return fmt.Sprintf("record %x", k)
	}
	return fmt.Sprintf("key %q of namespace %s", truncate(k[17:], 128), kv.ID([16]byte(k[1:17])))
}

// storageEnded reports whether a namespace in status s is being deleted:
// its storage stopped counting and its expiry index went when it began.
func storageEnded(s kv.Status) bool {
	return s == kv.StatusDeleting || s == kv.StatusDeleteFailed
}

func knownStatus(s kv.Status) bool {
	switch s {
	case kv.StatusPending, kv.StatusProvisionOK, kv.StatusProvisionFailed, kv.StatusDeleting, kv.StatusDeleteFailed:
		return true
	}
	return false
}

package pebble

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// checkStore builds a store through the engine: a ready namespace with
// keys, some with expiries and one expired, overwritten and deleted keys,
// a namespace being deleted, and an sstable beside the log.
func checkStore(t *testing.T, dir string) (*DB, kv.Namespace) {
	t.Helper()
	ctx := context.Background()
	d, err := Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	ns := readyNamespace(t, d, "org", damageAt)
	gone := readyNamespace(t, d, "org2", damageAt)
	putIn := func(org string, id kv.ID, k, v string, ttl time.Duration) {
		pv := store.PutValue{Data: []byte(v), ContentType: "text/plain"}
		if ttl != 0 {
			pv.ExpiresAt = damageAt.Add(ttl)
		}
		if _, err := d.PutKey(ctx, org, id, k, pv, damageAt); err != nil {
			t.Fatal(err)
		}
	}
	put := func(id kv.ID, k, v string, ttl time.Duration) { putIn("org", id, k, v, ttl) }
	for i := range 200 {
		put(ns.ID, fmt.Sprintf("k%03d", i), strings.Repeat("v", i), 0)
		putIn("org2", gone.ID, fmt.Sprintf("g%03d", i), "x", time.Hour)
	}
	if err := d.db.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		put(ns.ID, fmt.Sprintf("k%03d", i), "again", 0)
		put(ns.ID, fmt.Sprintf("t%03d", i), "ttl", time.Duration(i+1)*time.Second)
	}
	for i := 50; i < 60; i++ {
		if _, err := d.DeleteKey(ctx, "org", ns.ID, fmt.Sprintf("k%03d", i), damageAt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.MarkDeleting(ctx, "org2", gone.ID, damageAt.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	return d, ns
}

// TestCheckpointAndCheck: a checkpoint of a serving store passes Check,
// which counts what it holds, while writes go on; Check changes nothing.
func TestCheckpointAndCheck(t *testing.T) {
	root := t.TempDir()
	d, ns := checkStore(t, filepath.Join(root, "store"))
	defer d.Close()

	// Writers run while the checkpoint is taken; whatever was acknowledged
	// before it began is in it.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var acked [4]atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				if _, err := d.PutKey(context.Background(), "org", ns.ID, fmt.Sprintf("w%d-%06d", w, i), store.PutValue{Data: []byte("w")}, damageAt); err != nil {
					t.Error(err)
					return
				}
				acked[w].Store(int64(i + 1))
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	var before [4]int64
	for w := range before {
		before[w] = acked[w].Load()
	}
	backup := filepath.Join(root, "backup")
	if err := d.Checkpoint(context.Background(), backup); err != nil {
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()

	want := snapshot(t, backup)
	r, err := Check(backup)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 {
		t.Fatalf("a fresh checkpoint has problems: %q", r.Problems)
	}
	// Only the lock file Check holds while it looks may appear.
	if diff := diffSnapshots(want, snapshot(t, backup)); len(diff) > 0 && !(len(diff) == 1 && diff[0] == "LOCK added") {
		t.Fatalf("Check changed the store: %v", diff)
	}
	if r.Layout != formatVersion || r.Namespaces != 2 || r.Keys < 200+50+200-10 {
		t.Fatalf("Check counted %+v", r)
	}
	b, err := Open(backup, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for w, n := range before {
		for i := range n {
			v, err := b.GetKey(context.Background(), "org", ns.ID, fmt.Sprintf("w%d-%06d", w, i), damageAt)
			if err != nil {
				t.Fatalf("write %d of writer %d, acknowledged before the checkpoint, is not in it: %v", i, w, err)
			}
			v.Close()
		}
	}
	if _, err := Check(filepath.Join(root, "store")); err == nil {
		t.Fatal("Check of a store a process holds did not refuse it")
	}
}

// TestCheckFindsDamage damages copies of a checked store one way each:
// Check must name the problem.
func TestCheckFindsDamage(t *testing.T) {
	root := t.TempDir()
	d, ns := checkStore(t, filepath.Join(root, "store"))
	base := filepath.Join(root, "base")
	if err := d.Checkpoint(context.Background(), base); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if r, err := Check(base); err != nil || len(r.Problems) > 0 {
		t.Fatalf("the undamaged store: %v, %q", err, r.Problems)
	}
	id := [16]byte(ns.ID)
	for _, tc := range []struct {
		name, want string
		damage     func(dir string)
	}{
		{"value record corrupt", "value record does not decode", func(dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) { db.Set(appendValueKey(nil, id, "k100"), []byte{9, 9}, pebbledb.Sync) })
		}},
		{"key entry without a value", "key entry but no value record", func(dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) { db.Delete(appendValueKey(nil, id, "k101"), pebbledb.Sync) })
		}},
		{"value without a key entry", "value record but no key entry", func(dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) { db.Delete(appendEntryKey(nil, id, "k102"), pebbledb.Sync) })
		}},
		{"entry disagrees", "disagrees with its value record", func(dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) {
				db.Set(appendEntryKey(nil, id, "k103"), encodeEntry(nil, damageAt.UnixNano(), 0, 1, 0), pebbledb.Sync)
			})
		}},
		{"usage off by one", "usage records count", func(dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) {
				b := db.NewBatch()
				addUsage(b, "org", id, damageAt, 1, store.UsageCounts{})
				b.Commit(pebbledb.Sync)
			})
		}},
		{"expiry index entry missing", "not in the expiry index", func(dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) {
				db.Delete(appendExpiryKey(nil, id, encodeExpiry(damageAt.Add(time.Second)), "t000"), pebbledb.Sync)
			})
		}},
		{"change record corrupt", "corrupt change record", func(dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) {
				lo, hi := namespaceRange(tagChange, id)
				it, _ := db.NewIter(&pebbledb.IterOptions{LowerBound: lo, UpperBound: hi})
				if !it.Last() {
					t.Fatal("no change record")
				}
				k := bytes.Clone(it.Key())
				it.Close()
				db.Set(k, []byte{byte(store.ChangeDelete)}, pebbledb.Sync)
			})
		}},
		{"change feed of no namespace", "its change feed is not", func(dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) {
				db.Set(appendChangeKey(nil, [16]byte(kv.NewID()), 1), appendChange(nil, store.ChangeDelete, damageAt, 0, 0, "k", "", nil), pebbledb.Sync)
			})
		}},
		{"corrupt namespace record", "record does not decode", func(dir string) {
			rawPebble(t, dir, func(db *pebbledb.DB) { db.Set(namespaceKey(id), []byte("{"), pebbledb.Sync) })
		}},
		{"sstable truncated", "", func(dir string) {
			truncateFile(t, filepath.Join(dir, filesLike(t, dir, ".sst")[0]), func(n int64) int64 { return n / 2 })
		}},
		{"manifest marker removed", "manifest marker", func(dir string) {
			for _, m := range filesLike(t, dir, "") {
				if strings.HasPrefix(m, "marker.manifest") {
					os.Remove(filepath.Join(dir, m))
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "copy")
			copyDir(t, base, dir)
			tc.damage(dir)
			r, err := Check(dir)
			if err != nil {
				t.Fatalf("Check could not look: %v", err)
			}
			if len(r.Problems) == 0 {
				t.Fatal("Check found nothing wrong")
			}
			if !strings.Contains(strings.Join(r.Problems, "\n"), tc.want) {
				t.Fatalf("Check found %q; want a problem saying %q", r.Problems, tc.want)
			}
		})
	}
}

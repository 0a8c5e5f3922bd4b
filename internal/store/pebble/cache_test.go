package pebble

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// TestBlockCacheCaches checks that reads of flushed keys are served from
// the block cache once read: Pebble reserves its memtables' memory out of
// the cache, which must leave room for blocks.
func TestBlockCacheCaches(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	d, err := Open(t.TempDir(), Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ns := readyNamespace(t, d, "org", at)
	// Grow the memtables to their full size (Pebble starts them small):
	// from then on two of them hold reservations in the cache.
	junk := make([]byte, 256<<10)
	for i := range 3 * memTableSize / len(junk) {
		if err := d.db.Set([]byte(fmt.Sprintf("\x7fjunk%06d", i)), junk, nil); err != nil {
			t.Fatal(err)
		}
	}
	const n = 2000
	for i := range n {
		if _, err := d.PutKey(ctx, "org", ns.ID, fmt.Sprintf("k%05d", i), store.PutValue{Data: bytes.Repeat([]byte("v"), 100), ContentType: kv.DefaultContentType}, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.db.Flush(); err != nil {
		t.Fatal(err)
	}
	// Let the compactions the writes started finish, so the tables stay.
	for d.db.Metrics().Compact.NumInProgress > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	read := func() {
		for i := range n {
			v, err := d.GetKey(ctx, "org", ns.ID, fmt.Sprintf("k%05d", i), at)
			if err != nil {
				t.Fatal(err)
			}
			v.Close()
		}
	}
	read()
	before := d.db.Metrics().BlockCache
	read()
	after := d.db.Metrics().BlockCache
	// A compaction finishing in between may move a few keys to new tables.
	if after.Count == 0 || after.Misses-before.Misses > n/20 {
		t.Fatalf("block cache: %d blocks cached, %d misses on the second read of %d keys (first: %+v); want the blocks cached", after.Count, after.Misses-before.Misses, n, before)
	}
}

// readyNamespace creates a provisioned namespace of org on d.
func readyNamespace(t *testing.T, d *DB, org string, at time.Time) kv.Namespace {
	t.Helper()
	ctx := context.Background()
	ns := kv.Namespace{ID: kv.NewID(), Org: org, Name: "n", Status: kv.StatusPending, CreatedAt: at, UpdatedAt: at}
	if err := d.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := d.ClaimLifecycleJob(ctx, "h", at, time.Minute); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if err := d.CompleteProvision(ctx, ns.ID, "h", kv.StatusProvisionOK, at); err != nil {
		t.Fatal(err)
	}
	ns.Status = kv.StatusProvisionOK
	return ns
}

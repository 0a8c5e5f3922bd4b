package pebble

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// TestUpgradeWritesKeyEntries opens a store laid out as version 1 (value
// records without key entries, no format record) and checks that opening
// it writes the key entries: listings and overwrites see every key, with
// its size, time and expiry, and the version is recorded.
func TestUpgradeWritesKeyEntries(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	at := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := readyNamespace(t, d, "org", at)
	const n = 3000 // more than one page
	for i := range n {
		v := store.PutValue{Data: bytes.Repeat([]byte("v"), i%50), ContentType: kv.DefaultContentType}
		if i%3 == 0 {
			v.ExpiresAt = at.Add(time.Hour)
		}
		if _, err := d.PutKey(ctx, "org", ns.ID, fmt.Sprintf("k%05d", i), v, at.Add(time.Duration(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Make it a version 1 store, which an earlier kvd wrote: no key
	// entries, no layout record, no identity file.
	if err := d.db.DeleteRange([]byte{tagEntry}, []byte{tagEntry + 1}, pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	if err := d.db.Delete(formatKey, pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	if keys, _, err := d.ListKeys(ctx, "org", ns.ID, "", "", 10, at); err != nil || len(keys) != 0 {
		t.Fatalf("the version 1 store lists %d keys (%v); the test did not remove the entries", len(keys), err)
	}
	d.Close()
	if err := os.Remove(filepath.Join(dir, identityName)); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	d, err = Open(dir, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !strings.Contains(logs.String(), "upgrading the data directory") || !strings.Contains(logs.String(), fmt.Sprintf("keys=%d", n)) {
		t.Errorf("the upgrade's log does not say it upgrades, or how many keys:\n%s", logs.String())
	}
	v, closer, err := d.db.Get(formatKey)
	if err != nil || len(v) != 1 || v[0] != formatVersion {
		t.Fatalf("format record after the upgrade: %x, %v", v, err)
	}
	closer.Close()
	var got []kv.KeyInfo
	after := ""
	for {
		keys, more, err := d.ListKeys(ctx, "org", ns.ID, "", after, 1000, at)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, keys...)
		if !more {
			break
		}
		after = keys[len(keys)-1].Key
	}
	if len(got) != n {
		t.Fatalf("listed %d keys after the upgrade, want %d", len(got), n)
	}
	for i, k := range got {
		if k.Key != fmt.Sprintf("k%05d", i) || k.Size != int64(i%50) || !k.UpdatedAt.Equal(at.Add(time.Duration(i))) {
			t.Fatalf("key %d after the upgrade: %+v", i, k)
		}
	}
	// Expiries came along: an hour later only the permanent keys list.
	keys, _, err := d.ListKeys(ctx, "org", ns.ID, "", "", 1000, at.Add(2*time.Hour))
	if err != nil || len(keys) != 1000 {
		t.Fatalf("listing after the expiries: %d keys, %v; want a full page", len(keys), err)
	}
	for _, k := range keys {
		var i int
		fmt.Sscanf(k.Key, "k%d", &i)
		if i%3 == 0 {
			t.Fatalf("%s expired but is listed after the upgrade", k.Key)
		}
	}
	// An overwrite sees the old key: it replaces, not creates.
	w, err := d.PutKey(ctx, "org", ns.ID, "k00001", store.PutValue{Data: []byte("x"), ContentType: kv.DefaultContentType}, at)
	if created := w.Created; err != nil || created {
		t.Fatalf("overwrite after the upgrade: created %v, %v", created, err)
	}
}

// TestNewerLayoutRefused: a data directory written by a newer layout is
// not opened.
func TestNewerLayoutRefused(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.db.Set(formatKey, []byte{formatVersion + 1}, pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if d, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "layout version") {
		if err == nil {
			d.Close()
		}
		t.Fatalf("open a newer layout: %v", err)
	}
}

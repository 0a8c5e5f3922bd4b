package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/postgres"
	"github.com/jackc/pgx/v5"
)

// Reads that arrive while every connection is busy share statements, and
// each gets what a read of its own would: values, missing keys, expired
// keys, missing namespaces, other organizations' namespaces and namespaces
// not ready alike.
func TestGetKeysCoalesce(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{MaxConns: 1})
	byScan := open(t, url, postgres.Config{MaxConns: 1}) // rows decoded through Scan
	postgres.GetByScan(byScan)
	a := readyNamespace(t, db, "org-a", "a")
	b := readyNamespace(t, db, "org-b", "b")
	pending := kv.Namespace{ID: kv.NewID(), Org: "org-a", Name: "pending", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base}
	if err := db.CreateNamespace(ctx, pending); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		for _, ns := range []kv.Namespace{a, b} {
			v := store.PutValue{Data: []byte(fmt.Sprintf("%s-%d", ns.Name, i)), ContentType: "text/plain"}
			switch i {
			case 9:
				v.ExpiresAt = base.Add(time.Second)
			case 8:
				v.ExpiresAt = base.Add(time.Hour)
			case 7:
				v.Data, v.ContentType = []byte{}, kv.DefaultContentType
			}
			if _, err := db.PutKey(ctx, ns.Org, ns.ID, fmt.Sprintf("k%d", i), v, base); err != nil {
				t.Fatal(err)
			}
		}
	}
	type read struct {
		org string
		id  kv.ID
		key string
	}
	var reads []read
	for i := range 12 { // k10 and k11 are missing, k9 has expired
		key := fmt.Sprintf("k%d", i)
		reads = append(reads, read{"org-a", a.ID, key}, read{"org-b", b.ID, key}, read{"org-b", a.ID, key}, read{"org-a", kv.NewID(), key}, read{"org-a", pending.ID, key})
	}
	now := base.Add(time.Minute)
	type outcome struct {
		data             []byte
		contentType      string
		updated, expires time.Time
		rev              store.Revision
		err              error
	}
	get := func(d *postgres.DB, r read) outcome {
		v, err := d.GetKey(ctx, r.org, r.id, r.key, now)
		if err != nil {
			return outcome{err: err}
		}
		defer v.Close()
		return outcome{data: bytes.Clone(v.Data), contentType: v.ContentType, updated: v.UpdatedAt, expires: v.ExpiresAt, rev: v.Revision}
	}
	same := func(how string, r read, g, w outcome) {
		t.Helper()
		if !bytes.Equal(g.data, w.data) || (g.data == nil) != (w.data == nil) || g.contentType != w.contentType || !g.updated.Equal(w.updated) || !g.expires.Equal(w.expires) || g.rev != w.rev || fmt.Sprint(g.err) != fmt.Sprint(w.err) {
			t.Errorf("GetKey(%s, %s, %s) %s = %+v; alone %+v", r.org, r.id, r.key, how, g, w)
		}
	}
	want := make([]outcome, len(reads))
	for i, r := range reads {
		want[i] = get(db, r)
		same("alone through Scan", r, get(byScan, r), want[i])
	}

	for _, d := range []*postgres.DB{db, byScan} {
		// A write waits for a row lock on the only connection; the
		// reads arrive meanwhile.
		tx, wrote := occupyPool(t, url, d, "org-a", a.ID)
		before := postgres.Acquires(d)
		got := make([]outcome, len(reads))
		var wg sync.WaitGroup
		for i, r := range reads {
			wg.Go(func() { got[i] = get(d, r) })
		}
		time.Sleep(100 * time.Millisecond)
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if err := <-wrote; err != nil {
			t.Fatal(err)
		}
		for i, r := range reads {
			same(map[bool]string{true: "in a group", false: "in a group through Scan"}[d == db], r, got[i], want[i])
		}
		if n := postgres.Acquires(d) - before; n > int64(len(reads))/4 {
			t.Errorf("%d reads took %d connections from the pool, want them to share statements", len(reads), n)
		}
	}
	if w := want[35]; string(w.data) != "" || w.data == nil || w.contentType != kv.DefaultContentType || !w.expires.IsZero() {
		t.Errorf("an empty value: %+v", w)
	}
	if w := want[40]; !w.expires.Equal(base.Add(time.Hour)) || w.contentType != "text/plain" || !w.updated.Equal(base) || w.rev == 0 {
		t.Errorf("a value with an expiry: %+v", w)
	}
	var nr *store.NotReadyError
	if !errors.As(want[4].err, &nr) || !errors.Is(want[3].err, store.ErrNamespaceNotFound) || !errors.Is(want[2].err, store.ErrNamespaceNotFound) || !errors.Is(want[45].err, store.ErrKeyNotFound) || !errors.Is(want[50].err, store.ErrKeyNotFound) {
		t.Errorf("reads alone: %+v", want[:6])
	}
}

// A read waiting for its turn gives up when its context ends, and the
// others go on.
func TestGetKeyQueuedGivesUp(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{MaxConns: 1})
	ns := readyNamespace(t, db, "org", "ns")
	if _, err := db.PutKey(ctx, "org", ns.ID, "k", store.PutValue{Data: []byte("v"), ContentType: "text/plain"}, base); err != nil {
		t.Fatal(err)
	}
	tx, wrote := occupyPool(t, url, db, "org", ns.ID)
	first := make(chan error, 1)
	go func() { // waits for the connection
		_, err := db.GetKey(ctx, "org", ns.ID, "k", base)
		first <- err
	}()
	time.Sleep(50 * time.Millisecond)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := db.GetKey(short, "org", ns.ID, "k", base) // waits for its turn
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("queued GetKey past its deadline = %v after %v", err, time.Since(start))
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatalf("the first GetKey = %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if v, err := db.GetKey(ctx, "org", ns.ID, "k", base); err != nil {
		t.Fatalf("GetKey afterwards = %v", err)
	} else {
		v.Close()
	}
}

// occupyPool takes the only connection of d's pool: a write of key "w"
// into namespace id of org waits on it for a lock that tx, returned,
// holds on the namespace's row. Once tx ends, the write's outcome comes on
// the channel.
func occupyPool(t *testing.T, url string, d *postgres.DB, org string, id kv.ID) (pgx.Tx, <-chan error) {
	t.Helper()
	tx := lockNamespace(t, url, id)
	wrote := make(chan error, 1)
	go func() {
		_, err := d.PutKey(ctx, org, id, "w", store.PutValue{Data: []byte("w"), ContentType: "text/plain"}, base)
		wrote <- err
	}()
	waitForLockWait(t, rawConn(t, url))
	return tx, wrote
}

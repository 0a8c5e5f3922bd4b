package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/postgres"
	"github.com/edgekv/kv/internal/usagemath"
	"github.com/jackc/pgx/v5"
)

// putWrite is one PutKey of the coalescing tests.
type putWrite struct {
	org string
	id  kv.ID
	key string
	v   store.PutValue
}

// putOutcome is what a PutKey returned.
type putOutcome struct {
	w   store.Written
	err error
}

// waitQueuedPuts waits until n writes wait in db's queue.
func waitQueuedPuts(t *testing.T, db *postgres.DB, n int) {
	t.Helper()
	for range 2000 {
		if postgres.QueuedPuts(db) == n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%d writes queued, want %d", postgres.QueuedPuts(db), n)
}

// withoutRevisions is m with every revision 0, to compare contents written
// under other revisions.
func withoutRevisions(m copyOf) copyOf {
	out := copyOf{}
	for k, e := range m {
		e.rev = 0
		out[k] = e
	}
	return out
}

// Writes that arrive while every group of writes runs share transactions,
// and each gets what it would have got alone: a namespace's new keys,
// replaced keys, an expired key, one new key written twice, and the
// writes of another namespace, of a namespace not ready, of another
// organization's namespace and of a missing one. The namespace ends as a
// twin written one write at a time does, with the same usage, and the
// feed has every write.
func TestPutKeysCoalesce(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{MaxConns: 2}) // one group at a time
	now := base.Add(time.Minute)
	type space struct{ a, b, pending kv.Namespace }
	setup := func(name string) space {
		s := space{a: readyNamespace(t, db, "org-a", name+"-a"), b: readyNamespace(t, db, "org-b", name+"-b")}
		s.pending = kv.Namespace{ID: kv.NewID(), Org: "org-a", Name: name + "-pending", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base}
		if err := db.CreateNamespace(ctx, s.pending); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			v := store.PutValue{Data: []byte(fmt.Sprintf("old-%d", i)), ContentType: "text/plain"}
			if _, err := db.PutKey(ctx, "org-a", s.a.ID, fmt.Sprintf("old-%d", i), v, base); err != nil {
				t.Fatal(err)
			}
		}
		v := store.PutValue{Data: []byte("expiring"), ContentType: "text/plain", ExpiresAt: base.Add(time.Second)}
		if _, err := db.PutKey(ctx, "org-a", s.a.ID, "exp", v, base); err != nil {
			t.Fatal(err)
		}
		return s
	}
	writesOf := func(s space) []putWrite {
		val := func(i int) store.PutValue {
			return store.PutValue{Data: bytes.Repeat([]byte{byte('a' + i)}, 100*i), ContentType: "application/octet-stream"}
		}
		var ws []putWrite
		for i := range 10 {
			ws = append(ws, putWrite{"org-a", s.a.ID, fmt.Sprintf("new-%d", i), val(i)})
		}
		for i := range 5 {
			ws = append(ws, putWrite{"org-a", s.a.ID, fmt.Sprintf("old-%d", i), val(i + 1)})
		}
		ws = append(ws,
			putWrite{"org-a", s.a.ID, "exp", val(3)},
			putWrite{"org-a", s.a.ID, "dup", val(2)},
			putWrite{"org-a", s.a.ID, "dup", val(2)},
			putWrite{"org-a", s.a.ID, "ttl", store.PutValue{Data: []byte("t"), ContentType: "text/plain", ExpiresAt: now.Add(time.Hour)}},
			putWrite{"org-b", s.b.ID, "b-key", val(4)},
			putWrite{"org-a", s.pending.ID, "p-key", val(1)},
			putWrite{"org-a", s.b.ID, "other-org", val(1)},
			putWrite{"org-a", kv.NewID(), "missing", val(1)},
		)
		return ws
	}

	// The twin: each write alone, one after another.
	twin := setup("twin")
	var alone []putOutcome
	for _, w := range writesOf(twin) {
		wr, err := db.PutKey(ctx, w.org, w.id, w.key, w.v, now)
		alone = append(alone, putOutcome{wr, err})
	}

	s := setup("grouped")
	writes := writesOf(s)
	tx := lockNamespace(t, url, s.a.ID)
	first := make(chan error, 1)
	go func() { // runs alone, and waits for the lock
		_, err := db.PutKey(ctx, "org-a", s.a.ID, "first", store.PutValue{Data: []byte("1"), ContentType: "text/plain"}, now)
		first <- err
	}()
	waitForLockWait(t, rawConn(t, url))
	before, stats := postgres.Acquires(db), db.Stats().Writes
	got := make([]putOutcome, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Go(func() {
			wr, err := db.PutKey(ctx, w.org, w.id, w.key, w.v, now)
			got[i] = putOutcome{wr, err}
		})
	}
	waitQueuedPuts(t, db, len(writes))
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}

	revs := map[store.Revision]bool{}
	dupCreated := 0
	for i, w := range writes {
		g, a := got[i], alone[i]
		if g.err != nil || a.err != nil {
			if fmt.Sprint(g.err) != fmt.Sprint(a.err) || errors.Is(g.err, store.ErrNamespaceNotFound) != errors.Is(a.err, store.ErrNamespaceNotFound) {
				t.Errorf("PutKey(%s, %s) = %v; alone %v", w.org, w.key, g.err, a.err)
			}
			continue
		}
		if revs[g.w.Revision] || g.w.Revision == 0 {
			t.Errorf("PutKey(%s) revision %d given twice, or zero", w.key, g.w.Revision)
		}
		revs[g.w.Revision] = true
		if w.key == "dup" {
			if g.w.Created {
				dupCreated++
			}
			continue
		}
		if g.w.Created != a.w.Created {
			t.Errorf("PutKey(%s) created %v; alone %v", w.key, g.w.Created, a.w.Created)
		}
	}
	if dupCreated != 1 {
		t.Errorf("of two writes of one new key, %d reported created, want 1", dupCreated)
	}
	if n := postgres.Acquires(db) - before; n > 6 {
		t.Errorf("%d writes took %d connections from the pool, want them to share transactions", len(writes), n)
	}
	if s := db.Stats().Writes; s.Calls-stats.Calls != int64(len(writes)) || s.Runs-stats.Runs > 6 {
		t.Errorf("Stats().Writes went from %+v to %+v for %d writes in at most 6 groups", stats, s, len(writes))
	}
	var nr *store.NotReadyError
	if !errors.As(got[len(writes)-3].err, &nr) || !errors.Is(got[len(writes)-2].err, store.ErrNamespaceNotFound) || !errors.Is(got[len(writes)-1].err, store.ErrNamespaceNotFound) {
		t.Errorf("writes to namespaces not there or not ready: %+v", got[len(writes)-3:])
	}

	// The same contents and usage as the twin's (whose extra "first" key
	// is written now), and a feed with every write.
	if _, err := db.PutKey(ctx, "org-a", twin.a.ID, "first", store.PutValue{Data: []byte("1"), ContentType: "text/plain"}, now); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Minute)
	for _, pair := range [][2]kv.Namespace{{s.a, twin.a}, {s.b, twin.b}} {
		have, want := withoutRevisions(storeContents(t, db, pair[0], later)), withoutRevisions(storeContents(t, db, pair[1], later))
		if d := diffCopies(have, want); d != "" {
			t.Errorf("namespace %s against its twin: %s", pair[0].Name, d)
		}
		hu := usageOf(t, db, pair[0].Org, pair[0].ID, usagemath.MonthOf(now).Start(), later)
		wu := usageOf(t, db, pair[1].Org, pair[1].ID, usagemath.MonthOf(now).Start(), later)
		if hu.UsageCounts != wu.UsageCounts || hu.Bytes != wu.Bytes || hu.ByteNanos.Cmp(wu.ByteNanos) != 0 {
			t.Errorf("usage of %s = %+v; its twin's %+v", pair[0].Name, hu, wu)
		}
	}
	changes, _ := readFeed(t, db, s.a, 0, true)
	fed := map[store.Revision]bool{}
	for _, c := range changes {
		fed[c.Revision] = true
	}
	for i, w := range writes {
		if got[i].err == nil && w.id == s.a.ID && !fed[got[i].w.Revision] {
			t.Errorf("the feed has no change at revision %d (%s)", got[i].w.Revision, w.key)
		}
	}
}

// A write that gives up while its group runs returns at once; the group
// goes on without it, and writes the value the write was given even if the
// caller has reused its slice since.
func TestPutGroupWithoutAGivenUpWrite(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{MaxConns: 2})
	ns := readyNamespace(t, db, "org", "ns")
	put := func(key, data string) {
		if _, err := db.PutKey(ctx, "org", ns.ID, key, store.PutValue{Data: []byte(data), ContentType: "text/plain"}, base); err != nil {
			t.Fatal(err)
		}
	}
	put("k0", "0")
	put("k2", "2")
	lock := func(key string) pgx.Tx {
		return lockIn(t, url, `SELECT 1 FROM keys WHERE ns_id = $1 AND key = $2 FOR UPDATE`, ns.ID, []byte(key))
	}
	a, b := lock("k0"), lock("k2")
	first := make(chan error, 1)
	go func() { // alone, waits for a
		_, err := db.PutKey(ctx, "org", ns.ID, "k0", store.PutValue{Data: []byte("0'"), ContentType: "text/plain"}, base)
		first <- err
	}()
	waitForLockWait(t, rawConn(t, url))
	short, cancel := context.WithCancel(ctx)
	data := []byte("the value")
	gaveUp := make(chan error, 1)
	go func() {
		_, err := db.PutKey(short, "org", ns.ID, "k1", store.PutValue{Data: data, ContentType: "text/plain"}, base)
		gaveUp <- err
	}()
	other := make(chan error, 1)
	go func() {
		_, err := db.PutKey(ctx, "org", ns.ID, "k2", store.PutValue{Data: []byte("2'"), ContentType: "text/plain"}, base)
		other <- err
	}()
	waitQueuedPuts(t, db, 2)
	if err := a.Rollback(ctx); err != nil { // the group of k1 and k2 runs, and waits for b
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	waitQueuedPuts(t, db, 0)
	waitForLockWait(t, rawConn(t, url))
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("the write that gave up = %v", err)
	}
	copy(data, "XXXXXXXXX") // the caller reuses its buffer
	if err := b.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-other; err != nil {
		t.Fatalf("the other write of the group = %v", err)
	}
	for key, want := range map[string]string{"k0": "0'", "k1": "the value", "k2": "2'"} {
		v, err := db.GetKey(ctx, "org", ns.ID, key, base)
		if err != nil {
			t.Fatalf("GetKey(%s) = %v", key, err)
		}
		if string(v.Data) != want {
			t.Errorf("GetKey(%s) = %q, want %q", key, v.Data, want)
		}
		v.Close()
	}
}

// A group the database refuses (here a trigger refuses one of its keys)
// runs its writes again alone: the others succeed, and the refused one
// fails with the database's error.
func TestPutGroupRefusedRunsAlone(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{MaxConns: 2})
	ns := readyNamespace(t, db, "org", "ns")
	admin := rawConn(t, url)
	if _, err := admin.Exec(ctx, `CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.key = 'poison'::bytea AND NEW.revision > 0 THEN
		RAISE EXCEPTION 'poison refused';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON keys FOR EACH ROW EXECUTE FUNCTION refuse_poison()`); err != nil {
		t.Fatal(err)
	}
	tx := lockNamespace(t, url, ns.ID)
	put := func(key string) error {
		_, err := db.PutKey(ctx, "org", ns.ID, key, store.PutValue{Data: []byte(key), ContentType: "text/plain"}, base)
		return err
	}
	first := make(chan error, 1)
	go func() { first <- put("first") }()
	waitForLockWait(t, rawConn(t, url))
	keys := []string{"ok-1", "poison", "ok-2"}
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Go(func() { errs[i] = put(k) })
	}
	waitQueuedPuts(t, db, len(keys))
	before := postgres.Acquires(db)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[2] != nil || errs[1] == nil || !strings.Contains(errs[1].Error(), "poison refused") {
		t.Fatalf("PutKey of %q = %v", keys, errs)
	}
	if n := postgres.Acquires(db) - before; n < int64(len(keys))+1 {
		t.Errorf("%d connections taken, want the group's and one for each write alone", n)
	}
	for _, k := range []string{"ok-1", "ok-2"} {
		v, err := db.GetKey(ctx, "org", ns.ID, k, base)
		if err != nil {
			t.Fatalf("GetKey(%s) = %v", k, err)
		}
		v.Close()
	}
}

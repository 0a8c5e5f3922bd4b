package postgres_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/postgres"
	"github.com/edgekv/kv/internal/store/storetest"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	ctx  = context.Background()
	base = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)
)

// TestConformance runs the conformance suite: each store on a database of
// its own; a restart closes the engine and opens the database again; a
// second handle is a second engine on the same database, as a second kvd
// process would have.
func TestConformance(t *testing.T) {
	var mu sync.Mutex
	urls := map[store.Store]string{}
	openOn := func(t *testing.T, url string) store.Store {
		db := open(t, url, postgres.Config{})
		mu.Lock()
		urls[db] = url
		mu.Unlock()
		return db
	}
	urlOf := func(s store.Store) string {
		mu.Lock()
		defer mu.Unlock()
		return urls[s]
	}
	storetest.Run(t, storetest.Funcs{
		OpenFunc: func(t *testing.T) store.Store { return openOn(t, pgtest.URL(t)) },
		ReopenFunc: func(t *testing.T, s store.Store) store.Store {
			url := urlOf(s)
			s.Close()
			return openOn(t, url)
		},
		SecondFunc: func(t *testing.T, s store.Store) store.Store { return openOn(t, urlOf(s)) },
	})
}

func open(t testing.TB, url string, cfg postgres.Config) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(ctx, url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func rawConn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(ctx) })
	return c
}

func textValue(s string) store.PutValue {
	return store.PutValue{Data: []byte(s), ContentType: "text/plain"}
}

// rawTx begins a transaction on a connection of its own, rolled back at
// the test's end unless committed.
func rawTx(t testing.TB, url string) pgx.Tx {
	t.Helper()
	tx, err := rawConn(t, url).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	return tx
}

// readyNamespace creates a provision_ok namespace through s.
func readyNamespace(t testing.TB, s store.Store, org, name string) kv.Namespace {
	t.Helper()
	ns := kv.Namespace{ID: kv.NewID(), Org: org, Name: name, Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base}
	if err := s.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteProvision(ctx, ns.ID, "test", kv.StatusProvisionOK, base); err != nil {
		t.Fatal(err)
	}
	ns.Status = kv.StatusProvisionOK
	return ns
}

// Several processes opening one empty database at once all succeed, and
// the schema is applied once.
func TestConcurrentOpen(t *testing.T) {
	url := pgtest.URL(t)
	const n = 6
	dbs := make([]*postgres.DB, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			dbs[i], errs[i] = postgres.Open(ctx, url, postgres.Config{MaxConns: 2})
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open #%d: %v", i, err)
		}
		defer dbs[i].Close()
	}
	var versions, migrations int
	c := rawConn(t, url)
	if err := c.QueryRow(ctx, `SELECT count(*), count(DISTINCT version) FROM kv_migrations`).Scan(&migrations, &versions); err != nil {
		t.Fatal(err)
	}
	if migrations == 0 || migrations != versions {
		t.Fatalf("kv_migrations holds %d rows for %d versions", migrations, versions)
	}
	// Every handle works on the one schema.
	ns := readyNamespace(t, dbs[0], "org", "ns")
	for i, db := range dbs {
		if _, err := db.PutKey(ctx, "org", ns.ID, fmt.Sprintf("k%d", i), store.PutValue{Data: []byte("v"), ContentType: "text/plain"}, base); err != nil {
			t.Fatalf("PutKey through handle %d: %v", i, err)
		}
	}
	// Opening an up-to-date database changes nothing.
	open(t, url, postgres.Config{})
	var after int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM kv_migrations`).Scan(&after); err != nil || after != migrations {
		t.Fatalf("kv_migrations after a further Open: %d rows, %v; want %d", after, err, migrations)
	}
}

// Two handles on one database behave as one store.
func TestTwoHandles(t *testing.T) {
	url := pgtest.URL(t)
	a, b := open(t, url, postgres.Config{}), open(t, url, postgres.Config{})

	ns := kv.Namespace{ID: kv.NewID(), Org: "org", Name: "shared", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base}
	if err := a.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if got, err := b.GetNamespace(ctx, "org", ns.ID); err != nil || got.Name != "shared" {
		t.Fatalf("namespace created through a, read through b: %+v, %v", got, err)
	}
	err := b.CreateNamespace(ctx, kv.Namespace{ID: kv.NewID(), Org: "org", Name: "shared", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base})
	if !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("same name through the other handle: %v, want store.ErrNameTaken", err)
	}

	// Leases are exclusive across handles.
	if got, ok, err := a.ClaimLifecycleJob(ctx, "worker-a", base, time.Minute); err != nil || !ok || got.ID != ns.ID {
		t.Fatalf("claim through a = %+v, %v, %v", got, ok, err)
	}
	if got, ok, err := b.ClaimLifecycleJob(ctx, "worker-b", base.Add(59*time.Second), time.Minute); err != nil || ok {
		t.Fatalf("claim through b under a's lease = %+v, %v, %v", got, ok, err)
	}
	if got, ok, err := b.ClaimLifecycleJob(ctx, "worker-b", base.Add(time.Minute), time.Minute); err != nil || !ok || got.ID != ns.ID {
		t.Fatalf("claim through b after a's lease = %+v, %v, %v", got, ok, err)
	}
	if err := b.CompleteProvision(ctx, ns.ID, "worker-b", kv.StatusProvisionOK, base); err != nil {
		t.Fatal(err)
	}

	v := store.PutValue{Data: []byte("from a"), ContentType: "text/plain"}
	if w, err := a.PutKey(ctx, "org", ns.ID, "k", v, base); err != nil || !w.Created {
		t.Fatalf("PutKey through a = %v, %v", w, err)
	}
	got, err := b.GetKey(ctx, "org", ns.ID, "k", base)
	if err != nil || string(got.Data) != "from a" {
		t.Fatalf("GetKey through b = %v, %v", got, err)
	}
	got.Close()
	if w, err := b.PutKey(ctx, "org", ns.ID, "k", v, base); err != nil || w.Created {
		t.Fatalf("PutKey of the same key through b = %v, %v; want replaced", w, err)
	}

	// MarkDeleting through a stops key operations through b at once.
	if _, err := a.MarkDeleting(ctx, "org", ns.ID, base); err != nil {
		t.Fatal(err)
	}
	_, err = b.PutKey(ctx, "org", ns.ID, "k2", v, base)
	wantNotReady(t, "PutKey through b", err)
	_, err = b.GetKey(ctx, "org", ns.ID, "k", base)
	wantNotReady(t, "GetKey through b", err)
	_, err = b.DeleteKey(ctx, "org", ns.ID, "k", base)
	wantNotReady(t, "DeleteKey through b", err)
	_, _, err = b.ListKeys(ctx, "org", ns.ID, "", "", 10, base)
	wantNotReady(t, "ListKeys through b", err)

	// Concurrent claimers on both handles lease each job to one holder.
	ids := map[kv.ID]bool{}
	for i := range 4 {
		p := kv.Namespace{ID: kv.NewID(), Org: "org", Name: fmt.Sprintf("p%d", i), Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base}
		if err := a.CreateNamespace(ctx, p); err != nil {
			t.Fatal(err)
		}
		ids[p.ID] = true
	}
	ids[ns.ID] = true // deleting, and b's lease on it has expired by then
	now := base.Add(time.Hour)
	var (
		mu      sync.Mutex
		holders = map[kv.ID]string{}
		wg      sync.WaitGroup
		errs    []error
	)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			holder := fmt.Sprintf("h%d", i)
			for {
				got, ok, err := s.ClaimLifecycleJob(ctx, holder, now, time.Minute)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if ok {
					if prev, dup := holders[got.ID]; dup {
						errs = append(errs, fmt.Errorf("%s leased to %s and %s", got.ID, prev, holder))
					}
					holders[got.ID] = holder
				}
				mu.Unlock()
				if err != nil || !ok {
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	for id := range ids {
		if holders[id] == "" {
			t.Errorf("job %s was never claimed", id)
		}
	}
}

func wantNotReady(t *testing.T, what string, err error) {
	t.Helper()
	var nr *store.NotReadyError
	if !errors.As(err, &nr) || nr.Status != kv.StatusDeleting {
		t.Fatalf("%s = %v, want a *store.NotReadyError for deleting", what, err)
	}
}

// waitForLockWait waits until some session of the database waits for a
// lock, so that a test knows a statement is blocked before it releases the
// lockIn begins a transaction on a connection of its own to the database
// at url and takes the row locks of query (a SELECT ... FOR UPDATE) in it;
// the caller ends it.
func lockIn(t *testing.T, url, query string, args ...any) pgx.Tx {
	t.Helper()
	tx, err := rawConn(t, url).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, query, args...); err != nil {
		t.Fatal(err)
	}
	return tx
}

// lockNamespace is lockIn of namespace id's row.
func lockNamespace(t *testing.T, url string, id kv.ID) pgx.Tx {
	t.Helper()
	return lockIn(t, url, `SELECT 1 FROM namespaces WHERE id = $1 FOR UPDATE`, id)
}

// lock. It fails the test after a generous bound.
func waitForLockWait(t *testing.T, c *pgx.Conn) {
	t.Helper()
	for range 1000 {
		var n int
		err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no session ever waited for a lock")
}

// A write that is in flight when MarkDeleting starts finishes first
// (MarkDeleting waits for it), and a write that arrives while MarkDeleting
// is committing waits and then fails: no write lands after MarkDeleting.
func TestMarkDeletingAndWritersExclude(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	id := ns.ID
	v := store.PutValue{Data: []byte("v"), ContentType: "text/plain"}

	// A writer holds the namespace row as PutKey does: MarkDeleting cannot
	// complete until it is done.
	writer := rawConn(t, url)
	tx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM namespaces WHERE id = $1 FOR SHARE`, id); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = db.MarkDeleting(short, "org", id, base)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("MarkDeleting while a writer holds the namespace = %v, want it to wait until the deadline", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := db.GetNamespace(ctx, "org", id); err != nil || got.Status != kv.StatusProvisionOK {
		t.Fatalf("namespace after the timed-out MarkDeleting = %+v, %v; want unchanged", got, err)
	}

	// MarkDeleting in progress (uncommitted): a PutKey waits for it and
	// then fails, writing nothing.
	deleter := rawConn(t, url)
	tx, err = deleter.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE namespaces SET status = 'deleting' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := db.PutKey(ctx, "org", id, "late", v, base)
		done <- err
	}()
	waitForLockWait(t, rawConn(t, url))
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantNotReady(t, "PutKey racing MarkDeleting", <-done)
	var n int
	if err := deleter.QueryRow(ctx, `SELECT count(*) FROM keys`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("keys after the racing PutKey: %d, %v; want 0", n, err)
	}
}

// A caller's deadline ends a blocked statement, nothing is written, and
// the handle keeps working.
func TestContextDeadline(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{MaxConns: 2})
	ns := readyNamespace(t, db, "org", "ns")

	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	if _, err := db.GetNamespace(expired, "org", ns.ID); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetNamespace with an expired context = %v, want DeadlineExceeded", err)
	}

	tx := lockNamespace(t, url, ns.ID)
	for i := range 3 { // more calls than connections: none is leaked
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_, err := db.PutKey(short, "org", ns.ID, fmt.Sprintf("k%d", i), store.PutValue{Data: []byte("v"), ContentType: "text/plain"}, base)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("PutKey blocked past its deadline = %v, want DeadlineExceeded", err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	keys, _, err := db.ListKeys(ctx, "org", ns.ID, "", "", 10, base)
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys after the cancelled writes = %v, %v; want none", keys, err)
	}
	if _, err := db.PutKey(ctx, "org", ns.ID, "after", store.PutValue{Data: []byte("v"), ContentType: "text/plain"}, base); err != nil {
		t.Fatalf("PutKey after the cancelled ones: %v", err)
	}
}

// Config.StatementTimeout bounds a statement even when the caller's
// context does not; a statement it cancels is unavailability, not an
// engine failure.
func TestStatementTimeout(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{StatementTimeout: 200 * time.Millisecond})
	ns := readyNamespace(t, db, "org", "ns")
	tx := lockNamespace(t, url, ns.ID)
	defer tx.Rollback(ctx)
	_, err := db.PutKey(ctx, "org", ns.ID, "k", store.PutValue{Data: []byte("v"), ContentType: "text/plain"}, base)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("PutKey past statement_timeout = %v, want it to match store.ErrUnavailable (a 503, not an internal error)", err)
	}
}

// A purge larger than one batch removes every key and the namespace.
func TestPurgeInBatches(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	postgres.SetPurgeBatch(db, 7)
	ns := readyNamespace(t, db, "org", "ns")
	keep := readyNamespace(t, db, "org", "keep")
	for i := range 50 {
		if _, err := db.PutKey(ctx, "org", ns.ID, fmt.Sprintf("k%02d", i), store.PutValue{Data: []byte("v"), ContentType: "text/plain"}, base); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.PutKey(ctx, "org", keep.ID, "k00", store.PutValue{Data: []byte("v"), ContentType: "text/plain"}, base); err != nil {
		t.Fatal(err)
	}
	if _, err := db.MarkDeleting(ctx, "org", ns.ID, base); err != nil {
		t.Fatal(err)
	}
	if err := db.PurgeNamespace(ctx, ns.ID, "w"); err != nil {
		t.Fatal(err)
	}
	var keys, namespaces int
	c := rawConn(t, url)
	if err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM keys), (SELECT count(*) FROM namespaces)`).Scan(&keys, &namespaces); err != nil {
		t.Fatal(err)
	}
	if keys != 1 || namespaces != 1 {
		t.Fatalf("after purge: %d keys, %d namespaces; want the other namespace's 1 and 1", keys, namespaces)
	}
}

// Bad configuration is refused before connecting.
func TestConfigValidate(t *testing.T) {
	if _, err := postgres.Open(ctx, "postgres://127.0.0.1:1/x", postgres.Config{MaxConns: -1}); err == nil {
		t.Fatal("Open with MaxConns -1 succeeded")
	}
	d := postgres.DefaultConfig()
	if d.MaxConns < 1 || d.StatementTimeout <= 0 || d.ConnectTimeout <= 0 {
		t.Fatalf("DefaultConfig = %+v", d)
	}
	if got := (postgres.Config{}).EnsureDefaults(); got != d {
		t.Fatalf("EnsureDefaults of zero = %+v, want %+v", got, d)
	}
}

// Migration 0004 makes every token stored before it a full token of its
// organization, with the id derived from its digest that the embedded
// engine derives too.
func TestTokenMigration(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	db.Close()
	c := rawConn(t, url)
	d := store.DigestToken("an old token")
	for _, q := range []string{
		`DELETE FROM kv_migrations WHERE version = 4`,
		`ALTER TABLE tokens DROP COLUMN id, DROP COLUMN name, DROP COLUMN permissions, DROP COLUMN namespaces, DROP COLUMN prefixes,
			DROP COLUMN expires_at, DROP COLUMN created_at, DROP COLUMN last_used_at, DROP COLUMN revoked_at, DROP COLUMN revoked_seq`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Exec(ctx, `INSERT INTO tokens (digest, org) VALUES ($1, 'acme')`, d[:]); err != nil {
		t.Fatal(err)
	}
	db = open(t, url, postgres.Config{})
	tok, err := db.TokenByDigest(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(d[:])
	if want := "tok_" + hex.EncodeToString(sum[:12]); tok.ID != want || tok.Org != "acme" || !slices.Equal(tok.Permissions, kv.AllPermissions) ||
		tok.Namespaces != nil || tok.Prefixes != nil || !tok.ExpiresAt.IsZero() || !tok.RevokedAt.IsZero() {
		t.Fatalf("the migrated token = %+v; want a full token of acme with id %s", tok, want)
	}
}

// A PUT takes its revision once it holds the key's row, on the full
// statement too, with no condition (which reads nothing of the row
// before the write): a write that waited for another commits after it,
// with a higher revision.
func TestPutRevisionAfterRowLock(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	soon := textValue("expires")
	soon.ExpiresAt = base.Add(time.Second)
	for _, c := range []struct {
		name string
		v    store.PutValue
		now  time.Time // the waiting put's
	}{
		{"fast statement", textValue("v"), base},
		{"full statement, over an expired value", soon, base.Add(time.Minute)},
		{"full statement, out of the exact range", textValue("v"), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := strings.ReplaceAll(c.name, " ", "-")
			if _, err := db.PutKey(ctx, "org", ns.ID, key, c.v, base); err != nil {
				t.Fatal(err)
			}
			tx := rawTx(t, url)
			var held int64
			if err := tx.QueryRow(ctx, `UPDATE keys SET revision = nextval('key_revisions') WHERE ns_id = $1 AND key = $2 RETURNING revision`,
				ns.ID, []byte(key)).Scan(&held); err != nil {
				t.Fatal(err)
			}
			done := make(chan store.Written, 1)
			go func() {
				w, err := db.PutKey(ctx, "org", ns.ID, key, textValue("after"), c.now)
				if err != nil {
					t.Error(err)
				}
				done <- w
			}()
			waitForLockWait(t, rawConn(t, url))
			// The holder takes a later revision than any the waiting put
			// may have taken, and commits first.
			var later int64
			if err := tx.QueryRow(ctx, `UPDATE keys SET revision = nextval('key_revisions') WHERE ns_id = $1 AND key = $2 RETURNING revision`,
				ns.ID, []byte(key)).Scan(&later); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if w := <-done; int64(w.Revision) <= later {
				t.Fatalf("the put that waited got revision %d, below the %d of the write it waited for", w.Revision, later)
			}
		})
	}
}

// ListKeys decodes its rows itself when they come as it expects, and
// through Scan otherwise: both give the same pages.
func TestListKeysDecodings(t *testing.T) {
	url := pgtest.URL(t)
	db, byScan := open(t, url, postgres.Config{}), open(t, url, postgres.Config{})
	postgres.ListByScan(byScan)
	ns := readyNamespace(t, db, "org", "ns")
	for i := range 30 {
		v := store.PutValue{Data: bytes.Repeat([]byte("v"), i*37), ContentType: "text/plain"}
		if i%3 == 0 {
			v.ExpiresAt = base.Add(time.Duration(i) * time.Minute) // some expired at the listing
		}
		if _, err := db.PutKey(ctx, "org", ns.ID, fmt.Sprintf("k/%02d\xff", 29-i), v, base.Add(time.Duration(i)*time.Nanosecond)); err != nil {
			t.Fatal(err)
		}
	}
	now := base.Add(10 * time.Minute)
	for _, q := range []struct{ prefix, after string }{{"", ""}, {"k/", "k/05\xff"}, {"k/1", ""}, {"none", ""}} {
		a, amore, aerr := db.ListKeys(ctx, "org", ns.ID, q.prefix, q.after, 7, now)
		b, bmore, berr := byScan.ListKeys(ctx, "org", ns.ID, q.prefix, q.after, 7, now)
		if aerr != nil || berr != nil || amore != bmore || fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("ListKeys(%q, %q) = %v %v %v; through Scan %v %v %v", q.prefix, q.after, a, amore, aerr, b, bmore, berr)
		}
		if q.prefix == "" && (len(a) != 7 || !amore || a[0].Size != 29*37 || a[0].Revision == 0) {
			t.Errorf("ListKeys(%q) = %+v, more %v", q.prefix, a, amore)
		}
	}
	if _, _, err := db.ListKeys(ctx, "org-b", ns.ID, "", "", 7, now); !errors.Is(err, store.ErrNamespaceNotFound) {
		t.Errorf("ListKeys of another organization's namespace = %v", err)
	}
}

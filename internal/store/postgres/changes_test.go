package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/postgres"
	"github.com/jackc/pgx/v5"
)

// readFeed reads ns's feed from after up to the head, page by page, and
// returns the changes and where a reader goes on from.
func readFeed(t *testing.T, db *postgres.DB, ns kv.Namespace, after store.Revision, values bool) ([]store.Change, store.Revision) {
	t.Helper()
	var all []store.Change
	for {
		const limit = 50
		page, head, err := db.ReadChanges(ctx, ns.Org, ns.ID, "", after, limit, values)
		if err != nil {
			t.Fatalf("ReadChanges(after %d): %v", after, err)
		}
		for _, c := range page {
			if c.Revision <= after {
				t.Fatalf("ReadChanges(after %d) gave revision %d", after, c.Revision)
			}
			after = c.Revision
		}
		all = append(all, page...)
		if len(page) < limit {
			return all, max(after, head)
		}
	}
}

func mustHead(t *testing.T, db *postgres.DB) store.Revision {
	t.Helper()
	h, err := db.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Every statement that changes a key records its change, under the
// revision the key got (a put) or one of its own, and nothing else does:
// the fast and the full PUT statements, a refused condition, deletes of
// present, expired and missing keys, each op of a batch, a sweep.
func TestChangesEveryWritePath(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	start := mustHead(t, db)
	type want struct {
		kind store.ChangeKind
		key  string
		rev  store.Revision // 0: a revision of its own
	}
	var wants []want
	put := func(key string, v store.PutValue, now time.Time) store.Written {
		t.Helper()
		w, err := db.PutKey(ctx, "org", ns.ID, key, v, now)
		if err != nil {
			t.Fatalf("PutKey %q: %v", key, err)
		}
		wants = append(wants, want{store.ChangePut, key, w.Revision})
		return w
	}
	del := func(key string, now time.Time, removes bool) {
		t.Helper()
		gone, err := db.DeleteKey(ctx, "org", ns.ID, key, now)
		if err != nil || gone != removes {
			t.Fatalf("DeleteKey %q: %v, %v; want %v", key, gone, err, removes)
		}
		if removes {
			wants = append(wants, want{store.ChangeDelete, key, 0})
		}
	}
	put("a", textValue("fast, new"), base)
	put("a", textValue("fast, replacing"), base)
	soon := textValue("expires")
	soon.ExpiresAt = base.Add(time.Second)
	put("b", soon, base)
	put("b", textValue("full statement, over an expired value"), base.Add(time.Minute))
	put("c", textValue("full statement, out of the exact range"), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC))
	put("empty", store.PutValue{ContentType: "text/plain"}, base)
	cond := textValue("conditional")
	cond.If = store.Condition{Exists: true}
	put("a", cond, base)
	cond.If = store.Condition{Absent: true}
	if _, err := db.PutKey(ctx, "org", ns.ID, "a", cond, base); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("refused conditional put: %v", err)
	}
	del("missing", base, false)
	del("c", base, true)
	put("d", soon, base)
	del("d", base.Add(time.Minute), true) // an expired key counts as removed
	res, err := db.Apply(ctx, "org", ns.ID, []store.Op{
		{Kind: store.OpPut, Key: "e", Value: textValue("batch")},
		{Kind: store.OpIncr, Key: "n", By: 2},
		{Kind: store.OpDelete, Key: "missing"},
		{Kind: store.OpPut, Key: "f", Value: textValue("born and gone in one batch")},
		{Kind: store.OpDelete, Key: "f"},
		{Kind: store.OpDelete, Key: "a"},
		{Kind: store.OpGet, Key: "e"},
	}, base)
	if err != nil {
		t.Fatal(err)
	}
	wants = append(wants, want{store.ChangePut, "e", res[0].Revision}, want{store.ChangePut, "n", res[1].Revision},
		want{store.ChangePut, "f", res[3].Revision}, want{store.ChangeDelete, "f", 0}, want{store.ChangeDelete, "a", 0})
	if _, err := db.Apply(ctx, "org", ns.ID, []store.Op{{Kind: store.OpPut, Key: "x", Value: textValue("x")},
		{Kind: store.OpCheck, Key: "e", If: store.Condition{Absent: true}}}, base); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("failing batch: %v", err)
	}
	put("g", soon, base)
	if n, err := db.SweepExpired(ctx, base.Add(time.Hour), 100); err != nil || n != 1 {
		t.Fatalf("SweepExpired: %d, %v", n, err)
	}
	wants = append(wants, want{store.ChangeExpire, "g", 0})

	got, _ := readFeed(t, db, ns, start, true)
	if len(got) != len(wants) {
		for _, c := range got {
			t.Logf("%v %q at %d", c.Kind, c.Key, c.Revision)
		}
		t.Fatalf("%d changes, want %d", len(got), len(wants))
	}
	for i, w := range wants {
		c := got[i]
		if c.Kind != w.kind || c.Key != w.key || w.rev != 0 && c.Revision != w.rev {
			t.Fatalf("change %d: %v %q at %d, want %v %q at %d", i, c.Kind, c.Key, c.Revision, w.kind, w.key, w.rev)
		}
	}
	if e := got[len(got)-1]; !e.At.Equal(base.Add(time.Hour)) {
		t.Fatalf("the expiry's time: %v", e.At)
	}
	if c := got[3]; string(c.Value) != "full statement, over an expired value" || !c.At.Equal(base.Add(time.Minute)) || !c.UpdatedAt.Equal(c.At) {
		t.Fatalf("the full statement's change: %+v", c)
	}
	if c := got[5]; c.Key != "empty" || !c.HasValue || c.Value == nil || len(c.Value) != 0 || c.Size != 0 {
		t.Fatalf("the put of an empty value: %+v", c)
	}
	// A revision past any a DB gives reads nothing, and is no error.
	if page, _, err := db.ReadChanges(ctx, "org", ns.ID, "", 1<<63+5, 10, false); err != nil || len(page) != 0 {
		t.Fatalf("ReadChanges after 2^63+5: %+v, %v", page, err)
	}
	// Every change row carries its transaction's id, and every key its
	// last change's revision.
	c := rawConn(t, url)
	var missing int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM keys k WHERE NOT EXISTS (
		SELECT 1 FROM changes c WHERE c.ns_id = k.ns_id AND c.key = k.key AND c.rev = k.revision)`).Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("%d keys without the change of their revision (%v)", missing, err)
	}
}

// A PUT that creates a key, from no row, and meets a transaction that
// creates the key and deletes it again (as a batch may) with revisions
// above its own, runs again, so that it commits under a revision above
// theirs: for one key, revisions follow the commits.
func TestCreateRacingCreateAndDelete(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	start := mustHead(t, db)
	tx := rawTx(t, url)
	// A batch's placeholder: the put's insert waits for it.
	if _, err := tx.Exec(ctx, `INSERT INTO keys (ns_id, key, value, content_type, updated_at, expires_at, version, revision)
		VALUES ($1, 'k', '', '', 1, 1, 1, 0)`, ns.ID); err != nil {
		t.Fatal(err)
	}
	done := make(chan store.Written, 1)
	go func() {
		w, err := db.PutKey(ctx, "org", ns.ID, "k", textValue("created"), base)
		if err != nil {
			t.Error(err)
		}
		done <- w
	}()
	waitForLockWait(t, rawConn(t, url))
	// The transaction puts the key and deletes it, recording both under
	// revisions taken now, above the one the waiting put took.
	var put, del int64
	if err := tx.QueryRow(ctx, `SELECT kv_next_revision(), kv_next_revision()`).Scan(&put, &del); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO changes (ns_id, rev, kind, key, at, size, content_type, updated_at, value) VALUES ($1, $2, 1, 'k', 1, 1, 'text/plain', 1, 'x')`, []any{ns.ID, put}},
		{`INSERT INTO changes (ns_id, rev, kind, key, at) VALUES ($1, $2, 2, 'k', 1)`, []any{ns.ID, del}},
		{`DELETE FROM keys WHERE ns_id = $1 AND key = 'k'`, []any{ns.ID}},
	} {
		if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w := <-done
	if int64(w.Revision) <= del {
		t.Fatalf("the put committed after a delete at %d under revision %d", del, w.Revision)
	}
	got, _ := readFeed(t, db, ns, start, true)
	if len(got) != 3 || got[2].Revision != w.Revision || got[2].Kind != store.ChangePut || string(got[2].Value) != "created" {
		t.Fatalf("the feed: %+v; want the other put, its delete, then the put at %d", got, w.Revision)
	}
}

// The head stays below a revision that a transaction holds until the
// transaction ends, whether or not snapshots list it (a transaction
// younger than every one that has ended is not listed), and then moves
// on; a change it makes comes in its place in the feed.
func TestHeadWaitsForOpenTransaction(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	before := mustHead(t, db)

	tx := rawTx(t, url)
	var held int64
	if err := tx.QueryRow(ctx, `SELECT kv_next_revision()`).Scan(&held); err != nil {
		t.Fatal(err)
	}
	stuck := func(what string) {
		t.Helper()
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if h, err := db.Head(short); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: Head = %d, %v; want it to wait for revision %d", what, h, err, held)
		}
		short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if h, err := db.WaitHead(short, store.Revision(held)-1); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: WaitHead(%d) = %d, %v; want it to wait", what, held-1, h, err)
		}
		// ReadChanges finds a head first, having none above before: it
		// waits too, or reads nothing.
		short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		page, head, err := db.ReadChanges(short, "org", ns.ID, "", before, 10, false)
		if !errors.Is(err, context.DeadlineExceeded) && (err != nil || head >= store.Revision(held) || len(page) != 0) {
			t.Fatalf("%s: ReadChanges = %+v, head %d, %v; want nothing, below %d", what, page, head, err, held)
		}
	}
	// Only this transaction runs in the database (the server's other
	// tests may add others, which can only make the head wait longer).
	stuck("the youngest transaction open")
	w, err := db.PutKey(ctx, "org", ns.ID, "after", textValue("v"), base)
	if err != nil || int64(w.Revision) <= held {
		t.Fatalf("PutKey: %v, %v", w, err)
	}
	stuck("a later write committed")

	if _, err := tx.Exec(ctx, `INSERT INTO changes (ns_id, rev, kind, key, at, size, content_type, updated_at, value)
		VALUES ($1, $2, 1, 'slow', 1, 1, 'text/plain', 1, 's')`, ns.ID, held); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := db.WaitHead(ctx, store.Revision(held)); err != nil || h < w.Revision {
		t.Fatalf("WaitHead once the transaction ended = %d, %v; want at least %d", h, err, w.Revision)
	}
	got, _ := readFeed(t, db, ns, before, false)
	if len(got) != 2 || got[0].Key != "slow" || int64(got[0].Revision) != held || got[1].Revision != w.Revision {
		t.Fatalf("the feed once the transaction ended: %+v", got)
	}
}

// clock gives each call a later instant, a microsecond apart.
type clock struct{ us atomic.Int64 }

func (c *clock) now() time.Time { return base.Add(time.Duration(c.us.Add(1)) * time.Microsecond) }

// entry is a key as a reader of the feed rebuilds it.
type entry struct {
	value   string
	rev     store.Revision
	expires time.Time
}

// copyOf is a namespace rebuilt from its feed.
type copyOf map[string]entry

func (m copyOf) apply(t *testing.T, c store.Change) {
	t.Helper()
	switch c.Kind {
	case store.ChangePut:
		if !c.HasValue {
			t.Fatalf("put of %q at %d without its value", c.Key, c.Revision)
		}
		m[c.Key] = entry{string(c.Value), c.Revision, c.ExpiresAt}
	case store.ChangeDelete, store.ChangeExpire:
		delete(m, c.Key)
	default:
		t.Fatalf("change %+v", c)
	}
}

// live is m as of now: without the keys expired by then.
func (m copyOf) live(now time.Time) copyOf {
	out := copyOf{}
	for k, e := range m {
		if e.expires.IsZero() || e.expires.After(now) {
			out[k] = e
		}
	}
	return out
}

// storeContents reads every live key of ns at now, with its revision.
func storeContents(t *testing.T, db *postgres.DB, ns kv.Namespace, now time.Time) copyOf {
	t.Helper()
	out := copyOf{}
	after := ""
	for {
		keys, more, err := db.ListKeys(ctx, ns.Org, ns.ID, "", after, 1000, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			v, err := db.GetKey(ctx, ns.Org, ns.ID, k.Key, now)
			if err != nil {
				t.Fatal(err)
			}
			out[k.Key] = entry{string(v.Data), store.Revision(k.Revision), v.ExpiresAt}
			v.Close()
			after = k.Key
		}
		if !more {
			return out
		}
	}
}

func diffCopies(have, want copyOf) string {
	var d []string
	for k, w := range want {
		if h, ok := have[k]; !ok || h.value != w.value || h.rev != w.rev {
			d = append(d, fmt.Sprintf("%s: have %+v (%v), store %+v", k, h, ok, w))
		}
	}
	for k, h := range have {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s: have %+v, store has none", k, h))
		}
	}
	sort.Strings(d)
	return strings.Join(d, "; ")
}

// writers runs n writers on a few keys of ns through db until stop is
// closed: puts (some with an expiry a few microseconds ahead, so that
// later puts replace expired values), deletes, batches that create and
// delete keys, and a sweeper. wait returns the revisions acknowledged.
func writers(t *testing.T, db *postgres.DB, ns kv.Namespace, clk *clock, n int, stop <-chan struct{}) (wait func() map[store.Revision]bool) {
	var (
		mu    sync.Mutex
		acked = map[store.Revision]bool{}
		wg    sync.WaitGroup
	)
	ack := func(revs ...store.Revision) {
		mu.Lock()
		for _, r := range revs {
			acked[r] = true
		}
		mu.Unlock()
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			key := func() string { return fmt.Sprintf("k%02d", rng.IntN(12)) }
			for i := 0; !stopped(); i++ {
				now := clk.now()
				v := textValue(fmt.Sprintf("w%d-%d", w, i))
				switch x := rng.IntN(20); {
				case x < 10:
					if x < 3 {
						v.ExpiresAt = now.Add(time.Duration(1+rng.IntN(20)) * time.Microsecond)
					}
					wr, err := db.PutKey(ctx, ns.Org, ns.ID, key(), v, now)
					if err != nil {
						t.Errorf("PutKey: %v", err)
						return
					}
					ack(wr.Revision)
				case x < 14:
					if _, err := db.DeleteKey(ctx, ns.Org, ns.ID, key(), now); err != nil {
						t.Errorf("DeleteKey: %v", err)
						return
					}
				default:
					k := key()
					res, err := db.Apply(ctx, ns.Org, ns.ID, []store.Op{
						{Kind: store.OpPut, Key: k, Value: v},
						{Kind: store.OpDelete, Key: k},
						{Kind: store.OpPut, Key: key(), Value: v},
						{Kind: store.OpDelete, Key: key()},
					}, now)
					if err != nil {
						t.Errorf("Apply: %v", err)
						return
					}
					ack(res[0].Revision, res[2].Revision)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stopped() {
			if _, err := db.SweepExpired(ctx, clk.now(), 10); err != nil {
				t.Errorf("SweepExpired: %v", err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return func() map[store.Revision]bool {
		wg.Wait()
		return acked
	}
}

// follow reads ns's feed through db from after, applying every change to
// m, until stop is closed and it has read up to a head found after the
// writers (wait) ended. It fails on a change out of order or given twice,
// and returns the revisions it read.
func follow(t *testing.T, db *postgres.DB, ns kv.Namespace, after store.Revision, m copyOf, stop <-chan struct{}, wait func()) map[store.Revision]bool {
	t.Helper()
	seen := map[store.Revision]bool{}
	var until store.Revision
	for {
		page, head, err := db.ReadChanges(ctx, ns.Org, ns.ID, "", after, 64, true)
		if err != nil {
			t.Fatalf("ReadChanges: %v", err)
		}
		for _, c := range page {
			if c.Revision <= after || seen[c.Revision] {
				t.Fatalf("revision %d after %d (given before: %v)", c.Revision, after, seen[c.Revision])
			}
			seen[c.Revision] = true
			m.apply(t, c)
			after = c.Revision
		}
		if len(page) == 64 {
			continue
		}
		after = max(after, head)
		if until == 0 {
			select {
			case <-stop:
				wait()
				until = mustHead(t, db)
			default:
			}
		}
		if until != 0 && after >= until {
			return seen
		}
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err = db.WaitHead(wctx, after)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitHead: %v", err)
		}
	}
}

// While 8 writers change a few keys, through the reader's handle or
// another (another kvd process), a reader following the feed gets every
// change once, in increasing order, every acknowledged write among them,
// and rebuilds the namespace exactly, each key at its revision.
func TestFollowWhileWriting(t *testing.T) {
	for _, second := range []bool{false, true} {
		name := "one handle"
		if second {
			name = "writers on a second handle"
		}
		t.Run(name, func(t *testing.T) {
			url := pgtest.URL(t)
			reader := open(t, url, postgres.Config{})
			writer := reader
			if second {
				writer = open(t, url, postgres.Config{})
			}
			ns := readyNamespace(t, reader, "org", "ns")
			start := mustHead(t, reader)
			var clk clock
			stop := make(chan struct{})
			wait := writers(t, writer, ns, &clk, 8, stop)
			time.AfterFunc(time.Second, func() { close(stop) })
			var acked map[store.Revision]bool
			m := copyOf{}
			seen := follow(t, reader, ns, start, m, stop, func() { acked = wait() })
			for rev := range acked {
				if !seen[rev] {
					t.Fatalf("the acknowledged write at %d never came through the feed", rev)
				}
			}
			now := clk.now()
			if d := diffCopies(m.live(now), storeContents(t, writer, ns, now)); d != "" {
				t.Fatalf("the copy made from the feed differs from the store: %s", d)
			}
			t.Logf("%d changes followed, %d acknowledged writes among them", len(seen), len(acked))
		})
	}
}

// A snapshot taken while 8 writers run, then the feed from its revision,
// rebuild the namespace exactly; several times, on two handles.
func TestSnapshotWhileWriting(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	other := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	var clk clock
	for round := range 4 {
		stop := make(chan struct{})
		wait := writers(t, other, ns, &clk, 8, stop)
		time.Sleep(30 * time.Millisecond)
		m := copyOf{}
		var last string
		at, err := db.Snapshot(ctx, ns.Org, ns.ID, "", clk.now(), true, func(c store.Change) error {
			if c.Key <= last && last != "" {
				return fmt.Errorf("%q after %q", c.Key, last)
			}
			last = c.Key
			if c.Kind != store.ChangePut {
				return fmt.Errorf("snapshot entry %+v", c)
			}
			m.apply(t, c)
			return nil
		})
		if err != nil {
			close(stop)
			wait()
			t.Fatalf("round %d: Snapshot: %v", round, err)
		}
		for k, e := range m {
			if e.rev > at {
				t.Fatalf("round %d: snapshot at %d holds %q at %d", round, at, k, e.rev)
			}
		}
		time.AfterFunc(200*time.Millisecond, func() { close(stop) })
		follow(t, db, ns, at, m, stop, func() { wait() })
		now := clk.now()
		if d := diffCopies(m.live(now), storeContents(t, db, ns, now)); d != "" {
			t.Fatalf("round %d: the snapshot at %d and the feed after it differ from the store: %s", round, at, d)
		}
	}
}

// A change in flight when Snapshot takes its snapshot, below a change the
// snapshot sees, is waited for and given as of the snapshot's revision: a
// late put replaces the key's value, a late put of a key the snapshot
// lacks comes in key order, a late delete drops its key.
func TestSnapshotLateChanges(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	revOf := map[string]store.Revision{}
	for _, k := range []string{"a", "c", "e"} {
		w, err := db.PutKey(ctx, "org", ns.ID, k, textValue("old "+k), base)
		if err != nil {
			t.Fatal(err)
		}
		revOf[k] = w.Revision
	}
	late := rawConn(t, url)
	var (
		tx       pgx.Tx
		revs     [3]int64
		visible  store.Written
		hookErrs []error
	)
	postgres.SetSnapshotHook(db, func(step string) {
		var err error
		switch step {
		case "head":
			// A writer takes revisions and changes a, b and e, and stays
			// open; a later write, which the snapshot sees, commits.
			if tx, err = late.Begin(ctx); err == nil {
				err = tx.QueryRow(ctx, `SELECT kv_next_revision(), kv_next_revision(), kv_next_revision()`).Scan(&revs[0], &revs[1], &revs[2])
			}
			for _, q := range []struct {
				sql string
				rev int64
			}{
				{`UPDATE keys SET value = 'late a', revision = $2 WHERE ns_id = $1 AND key = 'a'`, revs[0]},
				{`INSERT INTO changes (ns_id, rev, kind, key, at, size, content_type, updated_at, value) VALUES ($1, $2, 1, 'a', 1, 6, 'text/plain', 1, 'late a')`, revs[0]},
				{`INSERT INTO keys (ns_id, key, value, content_type, updated_at, version, revision) VALUES ($1, 'b', 'late b', 'text/plain', 1, 1, $2)`, revs[1]},
				{`INSERT INTO changes (ns_id, rev, kind, key, at, size, content_type, updated_at, value) VALUES ($1, $2, 1, 'b', 1, 6, 'text/plain', 1, 'late b')`, revs[1]},
				{`DELETE FROM keys WHERE ns_id = $1 AND key = 'e' AND $2::bigint > 0`, revs[2]},
				{`INSERT INTO changes (ns_id, rev, kind, key, at) VALUES ($1, $2, 2, 'e', 1)`, revs[2]},
			} {
				if err == nil {
					_, err = tx.Exec(ctx, q.sql, ns.ID, q.rev)
				}
			}
			if err == nil {
				visible, err = db.PutKey(ctx, "org", ns.ID, "d", textValue("seen"), base)
			}
		case "taken":
			err = tx.Commit(ctx)
		}
		if err != nil {
			hookErrs = append(hookErrs, fmt.Errorf("%s: %w", step, err))
		}
	})
	var got []string
	at, err := db.Snapshot(ctx, "org", ns.ID, "", base, true, func(c store.Change) error {
		got = append(got, fmt.Sprintf("%s=%s@%d", c.Key, c.Value, c.Revision))
		return nil
	})
	postgres.SetSnapshotHook(db, nil)
	if err := errors.Join(append(hookErrs, err)...); err != nil {
		t.Fatal(err)
	}
	if at != visible.Revision {
		t.Fatalf("snapshot at %d, want the revision of the write it saw, %d", at, visible.Revision)
	}
	want := fmt.Sprintf("a=late a@%d,b=late b@%d,c=old c@%d,d=seen@%d", revs[0], revs[1], revOf["c"], at)
	if g := strings.Join(got, ","); g != want {
		t.Fatalf("snapshot %s, want %s", g, want)
	}
	if rest, _ := readFeed(t, db, ns, at, false); len(rest) != 0 {
		t.Fatalf("changes after the snapshot: %+v", rest)
	}
}

// fn may take its time: writers, readers of the feed and compaction go on
// meanwhile.
func TestSlowSnapshotHoldsNoWriter(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	for i := range 300 {
		if _, err := db.PutKey(ctx, "org", ns.ID, fmt.Sprintf("k%03d", i), textValue("v"), base); err != nil {
			t.Fatal(err)
		}
	}
	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	n := 0
	go func() {
		_, err := db.Snapshot(ctx, "org", ns.ID, "", base, true, func(c store.Change) error {
			if n++; n == 100 {
				close(inside)
				<-release
			}
			return nil
		})
		done <- err
	}()
	<-inside
	if _, err := db.PutKey(ctx, "org", ns.ID, "k000", textValue("changed"), base); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DeleteKey(ctx, "org", ns.ID, "k250", base); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Apply(ctx, "org", ns.ID, []store.Op{{Kind: store.OpPut, Key: "k299", Value: textValue("b")}, {Kind: store.OpDelete, Key: "k298"}}, base); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.ReadChanges(ctx, "org", ns.ID, "", 0, 10, false); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CompactChanges(ctx, base.Add(-time.Hour), 10); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n != 300 {
		t.Fatalf("the snapshot gave %d keys, want the 300 it started with", n)
	}
}

// Compaction in two processes at once removes each old change once,
// raises each namespace's horizon to the latest removed, and the feed
// then refuses to read from below it.
func TestCompactConcurrently(t *testing.T) {
	url := pgtest.URL(t)
	a, b := open(t, url, postgres.Config{}), open(t, url, postgres.Config{})
	var nss []kv.Namespace
	last := map[kv.ID]store.Revision{}
	for i := range 3 {
		ns := readyNamespace(t, a, "org", fmt.Sprintf("ns%d", i))
		nss = append(nss, ns)
		for j := range 200 {
			w, err := a.PutKey(ctx, "org", ns.ID, fmt.Sprintf("k%d", j%20), textValue("v"), base.Add(time.Duration(j)*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			last[ns.ID] = w.Revision
		}
	}
	recent, err := a.PutKey(ctx, "org", nss[0].ID, "recent", textValue("r"), base.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var (
		removed atomic.Int64
		wg      sync.WaitGroup
	)
	for _, db := range []*postgres.DB{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := db.CompactChanges(ctx, base.Add(time.Minute), 37)
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					return
				}
				removed.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	if removed.Load() != 600 {
		t.Fatalf("%d changes removed, want 600", removed.Load())
	}
	for _, ns := range nss {
		_, _, err := b.ReadChanges(ctx, "org", ns.ID, "", last[ns.ID]-1, 10, false)
		var gone *store.HistoryGoneError
		if !errors.As(err, &gone) || gone.Oldest != last[ns.ID] {
			t.Fatalf("%s: ReadChanges from below the horizon: %v; want Oldest %d", ns.Name, err, last[ns.ID])
		}
		got, _ := readFeed(t, b, ns, last[ns.ID], false)
		if ns.ID == nss[0].ID && (len(got) != 1 || got[0].Revision != recent.Revision) || ns.ID != nss[0].ID && len(got) != 0 {
			t.Fatalf("%s after compaction: %+v", ns.Name, got)
		}
	}
}

// ReadChanges holds a bounded amount whatever its limit: when the values
// pass its budget it stops early, with the last change's revision as its
// head, and the reader goes on from there without a gap.
func TestReadChangesBudget(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	start := mustHead(t, db)
	big := bytes.Repeat([]byte("v"), store.MaxChangeValue)
	const n = 300 // about 19 MiB of values
	var revs []store.Revision
	for i := range n {
		w, err := db.PutKey(ctx, "org", ns.ID, fmt.Sprintf("k%03d", i), store.PutValue{Data: big, ContentType: "text/plain"}, base)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, w.Revision)
	}
	page, head, err := db.ReadChanges(ctx, "org", ns.ID, "", start, 1_000_000, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) == 0 || len(page) >= n || head != page[len(page)-1].Revision {
		t.Fatalf("%d changes, head %d; want fewer than %d, ending at the head", len(page), head, n)
	}
	rest, _ := readFeed(t, db, ns, head, true)
	all := append(page, rest...)
	if len(all) != n {
		t.Fatalf("%d changes in all, want %d", len(all), n)
	}
	for i, c := range all {
		if c.Revision != revs[i] || !bytes.Equal(c.Value, big) {
			t.Fatalf("change %d: revision %d (want %d), %d bytes", i, c.Revision, revs[i], len(c.Value))
		}
	}
}

// Purging a namespace removes its changes and its horizon, in batches,
// and nothing of another namespace.
func TestPurgeRemovesChanges(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	postgres.SetPurgeBatch(db, 7)
	ns := readyNamespace(t, db, "org", "ns")
	keep := readyNamespace(t, db, "org", "keep")
	for i := range 40 {
		if _, err := db.PutKey(ctx, "org", ns.ID, fmt.Sprintf("k%d", i%5), textValue("v"), base.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.PutKey(ctx, "org", keep.ID, "k", textValue("v"), base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := db.CompactChanges(ctx, base.Add(10*time.Second), 100); err != nil || n != 10 {
		t.Fatalf("CompactChanges: %d, %v", n, err)
	}
	if _, err := db.MarkDeleting(ctx, "org", ns.ID, base); err != nil {
		t.Fatal(err)
	}
	if err := db.PurgeNamespace(ctx, ns.ID, "w"); err != nil {
		t.Fatal(err)
	}
	var changes, others, horizons int
	c := rawConn(t, url)
	if err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM changes WHERE ns_id = $1), (SELECT count(*) FROM changes WHERE ns_id = $2),
		(SELECT count(*) FROM change_horizons)`, ns.ID, keep.ID).Scan(&changes, &others, &horizons); err != nil {
		t.Fatal(err)
	}
	if changes != 0 || others != 1 || horizons != 0 {
		t.Fatalf("after the purge: %d changes of the namespace, %d of the other, %d horizons; want 0, 1, 0", changes, others, horizons)
	}
}

// A WaitHead in progress returns when the DB closes.
func TestWaitHeadClose(t *testing.T) {
	url := pgtest.URL(t)
	db, err := postgres.Open(ctx, url, postgres.Config{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := db.WaitHead(ctx, 1<<40)
		done <- err
	}()
	if _, err := db.Head(ctx); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := <-done; !errors.Is(err, store.ErrClosed) {
		t.Fatalf("WaitHead across Close: %v, want store.ErrClosed", err)
	}
	if _, err := db.WaitHead(ctx, 0); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("WaitHead after Close: %v", err)
	}
}

// Migration 0006 adds the feed to a database of the previous schema: keys
// written before it are in snapshots, and writes from then on are in the
// feed.
func TestChangesMigration(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ns := readyNamespace(t, db, "org", "ns")
	old, err := db.PutKey(ctx, "org", ns.ID, "old", textValue("from before"), base)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	c := rawConn(t, url)
	for _, q := range []string{
		`DELETE FROM kv_migrations WHERE version = 6`,
		`DROP TABLE changes`,
		`DROP TABLE change_horizons`,
		`DROP FUNCTION kv_next_revision()`,
		`DROP FUNCTION kv_check_create(uuid, bytea, bigint)`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db = open(t, url, postgres.Config{})
	var keys []string
	at, err := db.Snapshot(ctx, "org", ns.ID, "", base, true, func(c store.Change) error {
		keys = append(keys, fmt.Sprintf("%s=%s@%d", c.Key, c.Value, c.Revision))
		return nil
	})
	if err != nil || len(keys) != 1 || keys[0] != fmt.Sprintf("old=from before@%d", old.Revision) {
		t.Fatalf("snapshot after the migration: %v, %v", keys, err)
	}
	w, err := db.PutKey(ctx, "org", ns.ID, "new", textValue("v"), base)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := readFeed(t, db, ns, at, false); len(got) != 1 || got[0].Revision != w.Revision {
		t.Fatalf("the feed after the migration: %+v", got)
	}
}

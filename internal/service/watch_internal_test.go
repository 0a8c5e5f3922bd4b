package service

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
)

// newWatched returns a service on a fresh embedded store, a ready
// namespace, and a function that writes n keys into it.
func newWatched(t *testing.T) (*Service, kv.ID, func(n int)) {
	t.Helper()
	ctx := context.Background()
	db, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	svc := New(Config{Store: db})
	p := FullPrincipal("org")
	id := readyNamespace(t, svc, db, "watched")
	seq := 0
	return svc, id, func(n int) {
		for range n {
			seq++
			if _, err := svc.PutKey(ctx, p, id, fmt.Sprintf("k%03d", seq), Put{Data: []byte("v")}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// readyNamespace creates namespace name of the organization "org" in svc
// and provisions it in db, its store, as the lifecycle worker would.
func readyNamespace(t *testing.T, svc *Service, db *pebble.DB, name string) kv.ID {
	t.Helper()
	ctx := context.Background()
	ns, err := svc.CreateNamespace(ctx, FullPrincipal("org"), name)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := db.ClaimLifecycleJob(ctx, "h", time.Now(), time.Minute); err != nil || !ok {
		t.Fatalf("claim: %v, %v", ok, err)
	}
	if err := db.CompleteProvision(ctx, ns.ID, "h", kv.StatusProvisionOK, time.Now()); err != nil {
		t.Fatal(err)
	}
	return ns.ID
}

// drain reads w until it has n events or one is an overflow.
func drain(t *testing.T, w *Watcher, n int) []*Event {
	t.Helper()
	var got []*Event
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		evs, err := w.Next(context.Background(), 100*time.Millisecond, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, evs...)
		if len(got) > 0 && got[len(got)-1].Kind == EventOverflow {
			break
		}
	}
	return got
}

// TestWatchBehindTheRing: a watcher whose position is older than its
// namespace's ring reads the store until it reaches the ring, and gets
// every change once, in order; one that cannot get a catch-up slot in
// time is sent an overflow with the revision to resume from.
func TestWatchBehindTheRing(t *testing.T) {
	svc, id, write := newWatched(t)
	svc.watches.ringEvents = 8
	svc.watches.catchUpWait = 50 * time.Millisecond
	p := FullPrincipal("org")
	ctx := context.Background()

	w, err := svc.Watch(ctx, p, id, WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	start := w.Revision()
	write(40) // the ring keeps the last 8
	got := drain(t, w, 40)
	if len(got) != 40 {
		t.Fatalf("%d events of 40", len(got))
	}
	for i, e := range got {
		if e.Kind != EventPut || e.Change.Key != fmt.Sprintf("k%03d", i+1) || i > 0 && e.Change.Revision <= got[i-1].Change.Revision {
			t.Fatalf("event %d: %v %q at %d", i, e.Kind, e.Change.Key, e.Change.Revision)
		}
	}

	// Every catch-up slot taken: a watcher behind the ring overflows.
	for range cap(svc.watches.catchUp) {
		svc.watches.catchUp <- struct{}{}
	}
	late, err := svc.Watch(ctx, p, id, WatchOptions{Since: start, HasSince: true})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	got = drain(t, late, 1)
	if len(got) != 1 || got[0].Kind != EventOverflow || got[0].Change.Revision != start {
		t.Fatalf("a watcher behind the ring with no catch-up slot: %+v", got)
	}
	for range cap(svc.watches.catchUp) {
		<-svc.watches.catchUp
	}
	// Resuming from the overflow's revision, with slots free, misses nothing.
	again, err := svc.Watch(ctx, p, id, WatchOptions{Since: got[0].Change.Revision, HasSince: true})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got := drain(t, again, 40); len(got) != 40 || got[39].Change.Key != "k040" {
		t.Fatalf("resumed after the overflow: %d events", len(got))
	}
	// What the metrics export: 80 events, one overflow, and the
	// catch-ups of the watchers behind the ring.
	if st := svc.WatchStats(); st.Events != 80 || st.Overflows != 1 || st.CatchUps == 0 || st.Watchers != 3 {
		t.Fatalf("WatchStats = %+v; want 80 events, 1 overflow, some catch-ups, 3 watchers", st)
	}
}

// TestWatchTailsEnd: the tail of a namespace stops when its last watcher
// leaves, and the next watcher starts a new one.
func TestWatchTailsEnd(t *testing.T) {
	svc, id, write := newWatched(t)
	p := FullPrincipal("org")
	ctx := context.Background()
	a, _ := svc.Watch(ctx, p, id, WatchOptions{})
	b, _ := svc.Watch(ctx, p, id, WatchOptions{})
	if a.tail != b.tail || len(svc.watches.tails) != 1 {
		t.Fatalf("two watchers of one namespace have %d tails", len(svc.watches.tails))
	}
	a.Close()
	b.Close()
	if n := len(svc.watches.tails); n != 0 {
		t.Fatalf("%d tails left after the last watcher closed", n)
	}
	c, err := svc.Watch(ctx, p, id, WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	write(1)
	if got := drain(t, c, 1); len(got) != 1 || got[0].Change.Key != "k001" {
		t.Fatalf("a watcher after the tails ended: %+v", got)
	}
}

// TestWatchWakesOnlyItsPrefix: a change wakes the watchers of the prefixes
// it is under, no other; and a watcher that the ring moved past while
// nothing under its prefix changed reads on from the ring, without a read
// of the store (every catch-up slot is taken: one would overflow).
func TestWatchWakesOnlyItsPrefix(t *testing.T) {
	svc, id, _ := newWatched(t)
	svc.watches.ringEvents = 8
	svc.watches.catchUpWait = 50 * time.Millisecond
	p := FullPrincipal("org")
	ctx := context.Background()
	put := func(key string) {
		t.Helper()
		if _, err := svc.PutKey(ctx, p, id, key, Put{Data: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	watch := func(prefix string) *Watcher {
		t.Helper()
		w, err := svc.Watch(ctx, p, id, WatchOptions{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Close)
		return w
	}
	a, all, b := watch("a/"), watch(""), watch("b/")
	aWake, bWake := *a.group.wake.Load(), *b.group.wake.Load()

	for i := range 40 { // the ring keeps the last 8
		put(fmt.Sprintf("b/%02d", i))
	}
	if got := drain(t, b, 40); len(got) != 40 {
		t.Fatalf("the b/ watcher got %d events of 40", len(got))
	}
	if got := drain(t, all, 40); len(got) != 40 {
		t.Fatalf("the watcher of every key got %d events of 40", len(got))
	}
	// The groups' arrays do not keep what the ring dropped: at most as
	// many dropped changes as live ones.
	for _, w := range []*Watcher{b, all} {
		if gv := w.group.view.Load(); len(gv.events) != 8 || gv.dead > len(gv.events) {
			t.Fatalf("the view of %q holds %d changes and %d dropped ones", w.group.prefix, len(gv.events), gv.dead)
		}
	}
	select {
	case <-aWake:
		t.Fatal("changes under b/ woke the watcher of a/")
	default:
	}
	select {
	case <-bWake:
	default:
		t.Fatal("changes under b/ did not wake its watcher")
	}

	for range cap(svc.watches.catchUp) {
		svc.watches.catchUp <- struct{}{}
	}
	put("a/x")
	got := drain(t, a, 1)
	for range cap(svc.watches.catchUp) {
		<-svc.watches.catchUp
	}
	if len(got) != 1 || got[0].Kind != EventPut || got[0].Change.Key != "a/x" {
		t.Fatalf("the a/ watcher, passed by the ring: %+v", got)
	}
	for i := range 8 { // a/x leaves the ring, and the a/ group's view
		put(fmt.Sprintf("b/%02d", 40+i))
	}
	drain(t, b, 8)
	// The tail publishes the groups' views one after another: a/'s may
	// come just after b/'s.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		gv := a.group.view.Load()
		if cap(gv.events) == 0 && gv.base == got[0].Change.Revision {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the a/ group's view after the ring dropped its change: %d of %d slots, base %d", len(gv.events), cap(gv.events), gv.base)
		}
	}

	// A watcher that resumes from before changes under its prefix the
	// ring dropped still reads them from the store.
	late, err := svc.Watch(ctx, p, id, WatchOptions{Prefix: "b/", Since: got[0].Change.Revision - 41, HasSince: true})
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if got := drain(t, late, 48); len(got) != 48 || got[0].Change.Key != "b/00" {
		t.Fatalf("a b/ watcher resumed from before the ring: %d events", len(got))
	}

	// A group goes with its last watcher, and its prefix's length when no
	// other group has it.
	tail := b.tail
	lens := func() []int {
		tail.mu.Lock()
		defer tail.mu.Unlock()
		return slices.Clone(tail.lens)
	}
	late.Close()
	a.Close()
	if got := lens(); !slices.Equal(got, []int{0, 2}) {
		t.Fatalf("prefix lengths with the watchers of \"\" and b/ left: %v", got)
	}
	b.Close()
	if got := lens(); !slices.Equal(got, []int{0}) || len(tail.groups) != 1 {
		t.Fatalf("prefix lengths with the watcher of \"\" left: %v (%d groups)", got, len(tail.groups))
	}
}

// countingStore counts the reads of one namespace's feed.
type countingStore struct {
	*pebble.DB
	ns    kv.ID
	reads atomic.Int64
}

func (c *countingStore) ReadChanges(ctx context.Context, org string, ns kv.ID, prefix string, after store.Revision, limit int, values bool) ([]store.Change, store.Revision, error) {
	if ns == c.ns {
		c.reads.Add(1)
	}
	return c.DB.ReadChanges(ctx, org, ns, prefix, after, limit, values)
}

// TestWatchQuietNamespace: revisions are shared by every namespace, but
// the tail of a quiet namespace does not read the store at every change
// of another (the engine's ChangeHint tells it there is nothing to read),
// and still gets its own changes.
func TestWatchQuietNamespace(t *testing.T) {
	ctx := context.Background()
	db, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cs := &countingStore{DB: db}
	svc := New(Config{Store: cs})
	p := FullPrincipal("org")
	quiet, busy := readyNamespace(t, svc, db, "quiet"), readyNamespace(t, svc, db, "busy")
	cs.ns = quiet
	w, err := svc.Watch(ctx, p, quiet, WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	began, before := time.Now(), cs.reads.Load()
	const writes = 200
	for i := range writes {
		if _, err := svc.PutKey(ctx, p, busy, fmt.Sprintf("k%03d", i), Put{Data: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	// Besides a read a second to see that the namespace is still there.
	reads, allowed := cs.reads.Load()-before, 2+2*int64(time.Since(began).Seconds())
	if reads > allowed {
		t.Fatalf("the tail of a quiet namespace read the store %d times while another took %d writes (at most %d)", reads, writes, allowed)
	}
	if _, err := svc.PutKey(ctx, p, quiet, "mine", Put{Data: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, w, 1); len(got) != 1 || got[0].Change.Key != "mine" {
		t.Fatalf("the quiet namespace's own change: %+v", got)
	}
}

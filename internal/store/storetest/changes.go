package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// readAll reads ns's feed after `after` up to the head, page by page of
// limit, and returns the changes and the head it ended at.
func readAll(t *testing.T, f store.Store, ns kv.Namespace, prefix string, after store.Revision, limit int, values bool) ([]store.Change, store.Revision) {
	t.Helper()
	var all []store.Change
	for {
		page, head, err := f.ReadChanges(ctx, ns.Org, ns.ID, prefix, after, limit, values)
		if err != nil {
			t.Fatalf("ReadChanges(after %d): %v", after, err)
		}
		if len(page) > limit {
			t.Fatalf("ReadChanges(limit %d) returned %d changes", limit, len(page))
		}
		for _, c := range page {
			if c.Revision <= after || c.Revision > head {
				t.Fatalf("ReadChanges(after %d) returned revision %d with head %d", after, c.Revision, head)
			}
			after = c.Revision
		}
		all = append(all, page...)
		if len(page) < limit {
			return all, max(after, head)
		}
	}
}

// wantChange fails unless c is a change of kind k of key at revision rev
// (0: any revision above every earlier one's).
func wantChange(t *testing.T, what string, c store.Change, k store.ChangeKind, key string, rev store.Revision) {
	t.Helper()
	if c.Kind != k || c.Key != key || rev != 0 && c.Revision != rev {
		t.Fatalf("%s: %v %q at %d, want %v %q at %d", what, c.Kind, c.Key, c.Revision, k, key, rev)
	}
}

// testChanges: puts, replacements, deletes and batches each record their
// changes, with the revisions the writes reported, in revision order;
// a delete of a missing key records nothing; values come only when asked
// and only up to MaxChangeValue.
func testChanges(t *testing.T, s store.Store) {
	f := s
	ns := readyNamespace(t, s, "org-a", "ns")
	other := readyNamespace(t, s, "org-a", "other")
	start, err := f.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, head := readAll(t, f, ns, "", start, 10, true); len(got) != 0 || head < start {
		t.Fatalf("a new namespace's feed: %d changes, head %d (was %d)", len(got), head, start)
	}
	at := base.Add(time.Minute)
	exp := base.Add(time.Hour)
	w1 := put(t, s, ns, "a", store.PutValue{Data: []byte("one"), ContentType: "text/x-one", ExpiresAt: exp}, at)
	w2 := put(t, s, ns, "a", putValue("two"), at)
	put(t, s, other, "a", putValue("elsewhere"), at)
	big := bytes.Repeat([]byte("b"), store.MaxChangeValue+1)
	w3 := put(t, s, ns, "big", store.PutValue{Data: big, ContentType: kv.DefaultContentType}, at)
	fits := bytes.Repeat([]byte("f"), store.MaxChangeValue)
	w4 := put(t, s, ns, "fits", store.PutValue{Data: fits, ContentType: kv.DefaultContentType}, at)
	if gone, err := s.DeleteKey(ctx, ns.Org, ns.ID, "never", at); err != nil || gone {
		t.Fatalf("delete of a missing key: %v, %v", gone, err)
	}
	if gone, err := s.DeleteKey(ctx, ns.Org, ns.ID, "big", at); err != nil || !gone {
		t.Fatalf("delete of big: %v, %v", gone, err)
	}
	res, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{
		{Kind: store.OpGet, Key: "a"},
		{Kind: store.OpPut, Key: "b/1", Value: putValue("in a batch")},
		{Kind: store.OpIncr, Key: "b/n", By: 5},
		{Kind: store.OpDelete, Key: "a"},
		{Kind: store.OpDelete, Key: "never"},
	}, at)
	if err != nil {
		t.Fatal(err)
	}

	got, head := readAll(t, f, ns, "", start, 1000, true)
	if len(got) != 8 {
		for _, c := range got {
			t.Logf("%v %q at %d", c.Kind, c.Key, c.Revision)
		}
		t.Fatalf("%d changes, want 8", len(got))
	}
	wantChange(t, "first put", got[0], store.ChangePut, "a", w1.Revision)
	if c := got[0]; c.Size != 3 || c.ContentType != "text/x-one" || !c.ExpiresAt.Equal(exp) || !c.UpdatedAt.Equal(at) || !c.At.Equal(at) || !c.HasValue || string(c.Value) != "one" {
		t.Fatalf("the first put's change: %+v", c)
	}
	wantChange(t, "replacement", got[1], store.ChangePut, "a", w2.Revision)
	if c := got[1]; !c.ExpiresAt.IsZero() || string(c.Value) != "two" || c.ContentType != kv.DefaultContentType {
		t.Fatalf("the replacement's change: %+v", c)
	}
	wantChange(t, "big put", got[2], store.ChangePut, "big", w3.Revision)
	if c := got[2]; c.HasValue || c.Value != nil || c.Size != int64(len(big)) {
		t.Fatalf("a put of %d bytes carries its value: HasValue %v, %d bytes, size %d", len(big), c.HasValue, len(c.Value), c.Size)
	}
	wantChange(t, "put of MaxChangeValue", got[3], store.ChangePut, "fits", w4.Revision)
	if c := got[3]; !c.HasValue || !bytes.Equal(c.Value, fits) {
		t.Fatalf("a put of MaxChangeValue bytes: HasValue %v, %d bytes", c.HasValue, len(c.Value))
	}
	wantChange(t, "delete", got[4], store.ChangeDelete, "big", 0)
	wantChange(t, "batch put", got[5], store.ChangePut, "b/1", res[1].Revision)
	wantChange(t, "batch incr", got[6], store.ChangePut, "b/n", res[2].Revision)
	if c := got[6]; string(c.Value) != "5" || c.ContentType != "text/plain" {
		t.Fatalf("the incr's change: %+v (value %q)", c, c.Value)
	}
	wantChange(t, "batch delete", got[7], store.ChangeDelete, "a", 0)
	for i := 1; i < len(got); i++ {
		if got[i].Revision <= got[i-1].Revision {
			t.Fatalf("change %d has revision %d after %d", i, got[i].Revision, got[i-1].Revision)
		}
	}
	if got[4].Revision <= w4.Revision {
		t.Fatalf("the delete's revision %d is not above the write before it (%d)", got[4].Revision, w4.Revision)
	}
	if h, err := f.Head(ctx); err != nil || h < got[7].Revision || head < got[7].Revision {
		t.Fatalf("head %d (read %d), %v; the last change is at %d", h, head, err, got[7].Revision)
	}

	// Without values; with a prefix; page by page.
	plain, _ := readAll(t, f, ns, "", start, 3, false)
	if len(plain) != 8 {
		t.Fatalf("page by page of 3: %d changes", len(plain))
	}
	for i, c := range plain {
		if c.HasValue || c.Value != nil || c.Revision != got[i].Revision || c.Size != got[i].Size {
			t.Fatalf("change %d without values: %+v", i, c)
		}
	}
	if b, _ := readAll(t, f, ns, "b/", start, 1000, true); len(b) != 2 || b[0].Key != "b/1" || b[1].Key != "b/n" {
		t.Fatalf("prefix b/: %+v", b)
	}
	if rest, _ := readAll(t, f, ns, "", got[5].Revision, 1000, false); len(rest) != 2 || rest[0].Revision != got[6].Revision {
		t.Fatalf("after the batch's first change: %+v", rest)
	}
	if o, _ := readAll(t, f, other, "", start, 1000, true); len(o) != 1 || string(o[0].Value) != "elsewhere" {
		t.Fatalf("the other namespace's feed: %+v", o)
	}
}

// testChangesFailedWrites: a write that fails (a precondition, an atomic
// batch that fails part way) records nothing.
func testChangesFailedWrites(t *testing.T, s store.Store) {
	f := s
	ns := readyNamespace(t, s, "org-a", "ns")
	w := put(t, s, ns, "a", putValue("A"), base)
	v := putValue("refused")
	v.If = store.Condition{Absent: true}
	if _, err := s.PutKey(ctx, ns.Org, ns.ID, "a", v, base); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("conditional put: %v", err)
	}
	if _, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{
		{Kind: store.OpPut, Key: "x", Value: putValue("X")},
		{Kind: store.OpCheck, Key: "a", If: store.Condition{Absent: true}},
	}, base); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("failing batch: %v", err)
	}
	got, _ := readAll(t, f, ns, "", w.Revision-1, 100, false)
	if len(got) != 1 || got[0].Revision != w.Revision {
		t.Fatalf("after a refused put and a failed batch the feed holds %+v; want only the first put", got)
	}
}

// testChangesExpire: a swept expiry records an expire change, with a
// revision of its own, at the sweep's now.
func testChangesExpire(t *testing.T, s store.Store) {
	f := s
	ns := readyNamespace(t, s, "org-a", "ns")
	w := put(t, s, ns, "t", store.PutValue{Data: []byte("soon"), ContentType: "text/plain", ExpiresAt: base.Add(time.Second)}, base)
	put(t, s, ns, "keep", putValue("k"), base)
	sweep := base.Add(2 * time.Second)
	if n, err := s.SweepExpired(ctx, sweep, 100); err != nil || n != 1 {
		t.Fatalf("SweepExpired: %d, %v", n, err)
	}
	got, _ := readAll(t, f, ns, "", w.Revision, 100, true)
	if len(got) != 2 {
		t.Fatalf("%d changes after the put, want 2", len(got))
	}
	e := got[1]
	wantChange(t, "expiry", e, store.ChangeExpire, "t", 0)
	if e.Revision <= got[0].Revision || !e.At.Equal(sweep) {
		t.Fatalf("the expiry: revision %d (after %d), at %v", e.Revision, got[0].Revision, e.At.Sub(base))
	}
	// A second sweep finds nothing more to record.
	if n, err := s.SweepExpired(ctx, sweep, 100); err != nil || n != 0 {
		t.Fatalf("second SweepExpired: %d, %v", n, err)
	}
	if again, _ := readAll(t, f, ns, "", e.Revision, 100, true); len(again) != 0 {
		t.Fatalf("a second sweep recorded %+v", again)
	}
}

// testChangesNamespace: the feed checks its namespace as key operations
// do, and a limit below 1 is refused.
func testChangesNamespace(t *testing.T, s store.Store) {
	f := s
	ns := readyNamespace(t, s, "org-a", "ns")
	pending := newNamespace(t, s, "org-a", "pending", base)
	none := func(store.Change) error { return nil }
	for _, c := range []struct {
		org string
		id  kv.ID
	}{{"org-b", ns.ID}, {"org-a", kv.NewID()}} {
		_, _, err := f.ReadChanges(ctx, c.org, c.id, "", 0, 10, false)
		wantIs(t, "ReadChanges of another organization's or a missing namespace", err, store.ErrNamespaceNotFound)
		_, err = f.Snapshot(ctx, c.org, c.id, "", base, false, none)
		wantIs(t, "Snapshot of another organization's or a missing namespace", err, store.ErrNamespaceNotFound)
	}
	_, _, err := f.ReadChanges(ctx, "org-a", pending.ID, "", 0, 10, false)
	wantNotReady(t, "ReadChanges of a pending namespace", err, kv.StatusPending)
	_, err = f.Snapshot(ctx, "org-a", pending.ID, "", base, false, none)
	wantNotReady(t, "Snapshot of a pending namespace", err, kv.StatusPending)
	for _, limit := range []int{0, -1} {
		_, _, err := f.ReadChanges(ctx, "org-a", ns.ID, "", 0, limit, false)
		wantIs(t, fmt.Sprintf("ReadChanges(limit %d)", limit), err, store.ErrInvalidArgument)
	}
	if _, err := s.MarkDeleting(ctx, "org-a", ns.ID, base); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.ReadChanges(ctx, "org-a", ns.ID, "", 0, 10, false)
	wantNotReady(t, "ReadChanges of a deleting namespace", err, kv.StatusDeleting)
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.WaitHead(done, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitHead with a done context: %v", err)
	}
}

// testCompactChanges: compaction removes changes made before its cutoff,
// at most max of them; the feed then refuses to read from before the
// latest removed with a *HistoryGoneError naming the oldest revision it
// accepts, and reads on from there.
func testCompactChanges(t *testing.T, s store.Store) {
	f := s
	ns := readyNamespace(t, s, "org-a", "ns")
	quiet := readyNamespace(t, s, "org-a", "quiet")
	start, err := f.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var old []store.Revision
	for i := range 5 {
		old = append(old, put(t, s, ns, fmt.Sprintf("old%d", i), putValue("o"), base.Add(time.Duration(i)*time.Second)).Revision)
	}
	recent := put(t, s, ns, "recent", putValue("r"), base.Add(time.Hour)).Revision
	cutoff := base.Add(30 * time.Minute)
	if n, err := f.CompactChanges(ctx, cutoff, 3); err != nil || n != 3 {
		t.Fatalf("CompactChanges(max 3): %d, %v", n, err)
	}
	_, _, err = f.ReadChanges(ctx, ns.Org, ns.ID, "", start, 10, false)
	var gone *store.HistoryGoneError
	if !errors.As(err, &gone) || !errors.Is(err, store.ErrHistoryGone) || gone.Oldest != old[2] {
		t.Fatalf("ReadChanges from before the compacted changes: %v; want a *HistoryGoneError with Oldest %d", err, old[2])
	}
	if got, _ := readAll(t, f, ns, "", old[2], 10, false); len(got) != 3 || got[0].Revision != old[3] || got[2].Revision != recent {
		t.Fatalf("from the oldest revision kept: %+v", got)
	}
	if n, err := f.CompactChanges(ctx, cutoff, 100); err != nil || n != 2 {
		t.Fatalf("CompactChanges of the rest: %d, %v", n, err)
	}
	if n, err := f.CompactChanges(ctx, cutoff, 100); err != nil || n != 0 {
		t.Fatalf("CompactChanges with nothing to do: %d, %v", n, err)
	}
	_, _, err = f.ReadChanges(ctx, ns.Org, ns.ID, "", old[3], 10, false)
	if !errors.As(err, &gone) || gone.Oldest != old[4] {
		t.Fatalf("after compacting every old change: %v; want Oldest %d", err, old[4])
	}
	if got, _ := readAll(t, f, ns, "", old[4], 10, false); len(got) != 1 || got[0].Revision != recent {
		t.Fatalf("the change after the cutoff: %+v", got)
	}
	// A namespace that had nothing compacted reads from anywhere.
	if got, _ := readAll(t, f, quiet, "", 0, 10, false); len(got) != 0 {
		t.Fatalf("quiet namespace: %+v", got)
	}
	// The keys themselves are untouched.
	if got := mustGet(t, s, ns, "old0", base.Add(2*time.Hour)); string(got.Data) != "o" {
		t.Fatalf("old0 after compaction: %q", got.Data)
	}
}

// testSnapshot: Snapshot gives the live keys under a prefix in key order,
// as of a revision from which the feed goes on with what came after.
func testSnapshot(t *testing.T, s store.Store) {
	f := s
	ns := readyNamespace(t, s, "org-a", "ns")
	put(t, s, ns, "p/b", store.PutValue{Data: []byte("B"), ContentType: "text/x-b", ExpiresAt: base.Add(time.Hour)}, base)
	wa := put(t, s, ns, "p/a", putValue("A"), base)
	put(t, s, ns, "p/gone", putValue("G"), base)
	put(t, s, ns, "p/expired", store.PutValue{Data: []byte("E"), ContentType: "text/plain", ExpiresAt: base.Add(time.Second)}, base)
	put(t, s, ns, "q/other", putValue("Q"), base)
	if _, err := s.DeleteKey(ctx, ns.Org, ns.ID, "p/gone", base); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), store.MaxChangeValue+1)
	put(t, s, ns, "p/big", store.PutValue{Data: big, ContentType: kv.DefaultContentType}, base)
	now := base.Add(time.Minute)
	var got []store.Change
	at, err := f.Snapshot(ctx, ns.Org, ns.ID, "p/", now, true, func(c store.Change) error {
		got = append(got, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(got))
	for i, c := range got {
		keys[i] = c.Key
		if c.Kind != store.ChangePut {
			t.Fatalf("snapshot entry %q of kind %v", c.Key, c.Kind)
		}
	}
	if strings.Join(keys, ",") != "p/a,p/b,p/big" {
		t.Fatalf("snapshot keys %v, want p/a, p/b, p/big", keys)
	}
	if a := got[0]; a.Revision != wa.Revision || !a.HasValue || string(a.Value) != "A" || a.Size != 1 {
		t.Fatalf("snapshot p/a: %+v", a)
	}
	if b := got[1]; b.ContentType != "text/x-b" || !b.ExpiresAt.Equal(base.Add(time.Hour)) || string(b.Value) != "B" {
		t.Fatalf("snapshot p/b: %+v", b)
	}
	if g := got[2]; g.HasValue || g.Size != int64(len(big)) {
		t.Fatalf("snapshot p/big: HasValue %v, size %d", g.HasValue, g.Size)
	}
	for _, c := range got {
		if c.Revision > at {
			t.Fatalf("snapshot at %d holds %q at revision %d", at, c.Key, c.Revision)
		}
	}
	// The feed goes on from the snapshot's revision with later changes only.
	if rest, _ := readAll(t, f, ns, "", at, 100, false); len(rest) != 0 {
		t.Fatalf("changes after the snapshot, before any write: %+v", rest)
	}
	wc := put(t, s, ns, "p/c", putValue("C"), now)
	if rest, _ := readAll(t, f, ns, "", at, 100, false); len(rest) != 1 || rest[0].Revision != wc.Revision {
		t.Fatalf("changes after the snapshot: %+v", rest)
	}
	// Without values; an error of fn ends the call.
	stop := errors.New("stop")
	n := 0
	_, err = f.Snapshot(ctx, ns.Org, ns.ID, "", now, false, func(c store.Change) error {
		if c.HasValue || c.Value != nil {
			t.Errorf("snapshot without values gave %q's value", c.Key)
		}
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("fn's error: %v after %d calls", err, n)
	}
	// An empty namespace: nothing, and a revision the feed reads on from.
	empty := readyNamespace(t, s, "org-a", "empty")
	at, err = f.Snapshot(ctx, empty.Org, empty.ID, "", now, true, func(c store.Change) error {
		t.Errorf("empty namespace: snapshot gave %q", c.Key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	we := put(t, s, empty, "k", putValue("v"), now)
	if rest, _ := readAll(t, f, empty, "", at, 100, false); len(rest) != 1 || rest[0].Revision != we.Revision {
		t.Fatalf("changes after an empty snapshot: %+v", rest)
	}
}

// replica is a copy of a namespace rebuilt from a feed.
type replica map[string]string

func (r replica) apply(t *testing.T, c store.Change) {
	t.Helper()
	switch c.Kind {
	case store.ChangePut:
		if !c.HasValue {
			t.Fatalf("put of %q at %d without its value", c.Key, c.Revision)
		}
		r[c.Key] = string(c.Value)
	case store.ChangeDelete, store.ChangeExpire:
		delete(r, c.Key)
	default:
		t.Fatalf("change of kind %v", c.Kind)
	}
}

// contents reads every live key of ns.
func contents(t *testing.T, s store.Store, ns kv.Namespace, now time.Time) replica {
	t.Helper()
	r := replica{}
	after := ""
	for {
		keys, more, err := s.ListKeys(ctx, ns.Org, ns.ID, "", after, 1000, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			r[k.Key] = string(mustGet(t, s, ns, k.Key, now).Data)
			after = k.Key
		}
		if !more {
			return r
		}
	}
}

func (r replica) diff(want replica) string {
	var d []string
	for k, v := range want {
		if g, ok := r[k]; !ok || g != v {
			d = append(d, fmt.Sprintf("%s: have %q (present %v), store %q", k, g, ok, v))
		}
	}
	for k, v := range r {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s: have %q, store has none", k, v))
		}
	}
	sort.Strings(d)
	if len(d) > 10 {
		d = append(d[:10], fmt.Sprintf("and %d more", len(d)-10))
	}
	return strings.Join(d, "; ")
}

// churn runs writers over a few keys of ns (puts, deletes, batches)
// through s until stop is closed, and returns the revisions they were
// acknowledged with.
func churn(t *testing.T, s store.Store, ns kv.Namespace, writers int, stop <-chan struct{}) func() map[store.Revision]bool {
	var mu sync.Mutex
	acked := map[store.Revision]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("k%02d", rng.IntN(16))
				val := fmt.Sprintf("w%d-%d", w, i)
				switch x := rng.IntN(10); {
				case x < 6:
					wr, err := s.PutKey(ctx, ns.Org, ns.ID, key, putValue(val), base)
					if err != nil {
						t.Errorf("PutKey: %v", err)
						return
					}
					mu.Lock()
					acked[wr.Revision] = true
					mu.Unlock()
				case x < 8:
					if _, err := s.DeleteKey(ctx, ns.Org, ns.ID, key, base); err != nil {
						t.Errorf("DeleteKey: %v", err)
						return
					}
				default:
					res, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{
						{Kind: store.OpPut, Key: key, Value: putValue(val)},
						{Kind: store.OpDelete, Key: fmt.Sprintf("k%02d", rng.IntN(16))},
						{Kind: store.OpPut, Key: fmt.Sprintf("k%02d", rng.IntN(16)), Value: putValue(val + "b")},
					}, base)
					if err != nil {
						t.Errorf("Apply: %v", err)
						return
					}
					mu.Lock()
					acked[res[0].Revision] = true
					acked[res[2].Revision] = true
					mu.Unlock()
				}
			}
		}()
	}
	return func() map[store.Revision]bool {
		wg.Wait()
		return acked
	}
}

// tail follows ns's feed from after until stop is closed and the feed has
// caught up with head (taken after the writers stopped), applying every
// change to r; it fails on a change out of order or seen twice, and
// returns the revisions seen.
func tail(t *testing.T, f store.Store, ns kv.Namespace, after store.Revision, r replica, stop <-chan struct{}, final func() store.Revision) map[store.Revision]bool {
	t.Helper()
	seen := map[store.Revision]bool{}
	var until store.Revision
	for {
		page, head, err := f.ReadChanges(ctx, ns.Org, ns.ID, "", after, 100, true)
		if err != nil {
			t.Fatalf("ReadChanges: %v", err)
		}
		for _, c := range page {
			if c.Revision <= after || seen[c.Revision] {
				t.Fatalf("change at %d after %d (seen before: %v)", c.Revision, after, seen[c.Revision])
			}
			seen[c.Revision] = true
			r.apply(t, c)
			after = c.Revision
		}
		if len(page) == 100 {
			continue
		}
		after = max(after, head)
		if until == 0 {
			select {
			case <-stop:
				until = final()
			default:
			}
		}
		if until != 0 && after >= until {
			return seen
		}
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err = f.WaitHead(wctx, after)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitHead: %v", err)
		}
	}
}

// testChangesTail: while 8 writers change a few keys, a reader following
// the feed sees every change once, in increasing revision order, every
// acknowledged write among them, and ends with a copy equal to the store.
func testChangesTail(t *testing.T, s store.Store) {
	f := s
	ns := readyNamespace(t, s, "org-a", "ns")
	testTailThrough(t, f, s, ns)
}

func testTailThrough(t *testing.T, reader store.Store, writer store.Store, ns kv.Namespace) {
	t.Helper()
	start, err := reader.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	wait := churn(t, writer, ns, 8, stop)
	time.AfterFunc(300*time.Millisecond, func() { close(stop) })
	var acked map[store.Revision]bool
	r := replica{}
	seen := tail(t, reader, ns, start, r, stop, func() store.Revision {
		acked = wait()
		h, err := writer.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	})
	for rev := range acked {
		if !seen[rev] {
			t.Fatalf("the acknowledged write at revision %d never came through the feed", rev)
		}
	}
	if d := r.diff(contents(t, writer, ns, base)); d != "" {
		t.Fatalf("the copy made from the feed differs from the store: %s", d)
	}
	t.Logf("%d changes followed, %d acknowledged puts among them", len(seen), len(acked))
}

// testSnapshotUnderWrites: a snapshot taken while 8 writers run, then the
// feed from its revision, rebuild the store exactly; several times.
func testSnapshotUnderWrites(t *testing.T, s store.Store) {
	f := s
	ns := readyNamespace(t, s, "org-a", "ns")
	for round := range 3 {
		stop := make(chan struct{})
		wait := churn(t, s, ns, 8, stop)
		time.Sleep(20 * time.Millisecond)
		r := replica{}
		at, err := f.Snapshot(ctx, ns.Org, ns.ID, "", base, true, func(c store.Change) error {
			if _, dup := r[c.Key]; dup {
				return fmt.Errorf("snapshot gave %q twice", c.Key)
			}
			r.apply(t, c)
			return nil
		})
		if err != nil {
			close(stop)
			wait()
			t.Fatalf("round %d: Snapshot: %v", round, err)
		}
		time.AfterFunc(100*time.Millisecond, func() { close(stop) })
		tail(t, f, ns, at, r, stop, func() store.Revision {
			wait()
			h, err := f.Head(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return h
		})
		if d := r.diff(contents(t, s, ns, base)); d != "" {
			t.Fatalf("round %d: snapshot at %d plus the feed after it differ from the store: %s", round, at, d)
		}
	}
}

// testChangesTwoHandles: changes written through a second handle (a
// second process) reach a reader of the first, complete and in order.
func testChangesTwoHandles(t *testing.T, h Harness, a store.Store) {
	t.Cleanup(func() { a.Close() })
	f := a
	b := h.Second(t, a)
	if b == nil {
		t.Skip("the engine admits one process at a time")
	}
	t.Cleanup(func() { b.Close() })
	ns := readyNamespace(t, a, "org-a", "ns")
	testTailThrough(t, f, b, ns)
}

// testChangesAfterRestart: the feed and its head survive a restart.
func testChangesAfterRestart(t *testing.T, h Harness, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	var revs []store.Revision
	for i := range 3 {
		revs = append(revs, put(t, s, ns, fmt.Sprintf("k%d", i), putValue("v"), base).Revision)
	}
	s = h.Reopen(t, s)
	defer s.Close()
	f := s
	if head, err := f.Head(ctx); err != nil || head < revs[2] {
		t.Fatalf("head after restart: %d, %v; the last write was at %d", head, err, revs[2])
	}
	got, _ := readAll(t, f, ns, "", revs[0]-1, 10, true)
	if len(got) != 3 || got[0].Revision != revs[0] || got[2].Revision != revs[2] || string(got[1].Value) != "v" {
		t.Fatalf("feed after restart: %+v", got)
	}
}

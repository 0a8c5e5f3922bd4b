package pebble

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

var feedAt = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)

// openFeed opens a new store, closed when the test ends.
func openFeed(t *testing.T) *DB {
	t.Helper()
	d := mustOpen(t, t.TempDir())
	t.Cleanup(func() { d.Close() })
	return d
}

func mustOpen(t *testing.T, dir string) *DB {
	t.Helper()
	d, err := Open(dir, Options{Logger: quietLog})
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return d
}

// readFeed reads ns's changes with prefix after after, in pages of limit,
// up to the head, and returns them and the head.
func readFeed(t *testing.T, d *DB, ns kv.Namespace, prefix string, after store.Revision, limit int, withValues bool) ([]store.Change, store.Revision) {
	t.Helper()
	var all []store.Change
	for {
		cs, head, err := d.ReadChanges(context.Background(), ns.Org, ns.ID, prefix, after, limit, withValues)
		if err != nil {
			t.Fatalf("ReadChanges after %d: %v", after, err)
		}
		all = append(all, cs...)
		if len(cs) < limit {
			return all, head
		}
		after = cs[len(cs)-1].Revision
	}
}

// fedKey is a key as a reader of the feed rebuilds it, or as the store
// holds it.
type fedKey struct {
	rev         store.Revision
	value       string
	contentType string
	expires     time.Time
}

type feedState map[string]fedKey

// apply applies c, which must carry its value when it is a put.
func (s feedState) apply(t *testing.T, c store.Change) {
	t.Helper()
	switch c.Kind {
	case store.ChangePut:
		if !c.HasValue {
			t.Fatalf("put of %q at %d has no value", c.Key, c.Revision)
		}
		s[c.Key] = fedKey{c.Revision, string(c.Value), c.ContentType, c.ExpiresAt}
	case store.ChangeDelete, store.ChangeExpire:
		delete(s, c.Key)
	default:
		t.Fatalf("change %d of %q has kind %v", c.Revision, c.Key, c.Kind)
	}
}

// storedState is what ns holds at now, read with ListKeys and GetKey.
func storedState(t *testing.T, d *DB, ns kv.Namespace, now time.Time) feedState {
	t.Helper()
	ctx := context.Background()
	s := feedState{}
	after := ""
	for {
		keys, more, err := d.ListKeys(ctx, ns.Org, ns.ID, "", after, 1000, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			v, err := d.GetKey(ctx, ns.Org, ns.ID, k.Key, now)
			if err != nil {
				t.Fatalf("get %s: %v", k.Key, err)
			}
			s[k.Key] = fedKey{v.Revision, string(v.Data), v.ContentType, v.ExpiresAt}
			v.Close()
		}
		if !more {
			return s
		}
		after = keys[len(keys)-1].Key
	}
}

func diffStates(want, got feedState) []string {
	var diff []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			diff = append(diff, fmt.Sprintf("%s: missing (want %+v)", k, want[k]))
		} else if g != want[k] {
			diff = append(diff, fmt.Sprintf("%s: %+v, want %+v", k, g, want[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			diff = append(diff, fmt.Sprintf("%s: %+v, not in the store", k, got[k]))
		}
	}
	if len(diff) > 10 {
		diff = append(diff[:10], fmt.Sprintf("… %d more", len(diff)-10))
	}
	return diff
}

func text(s string) store.PutValue {
	return store.PutValue{Data: []byte(s), ContentType: "text/plain"}
}

// TestChangesRecordEveryMutation: every path that changes a key records
// the change, at the key's revision, with its metadata and value, and
// nothing else is recorded.
func TestChangesRecordEveryMutation(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	start, err := d.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cs, head := readFeed(t, d, ns, "", 0, 10, true); len(cs) != 0 || head != start {
		t.Fatalf("a new namespace's feed: %+v, head %d; want nothing, head %d", cs, head, start)
	}
	only := func(what string, after store.Revision) store.Change {
		t.Helper()
		cs, _ := readFeed(t, d, ns, "", after, 10, true)
		if len(cs) != 1 {
			t.Fatalf("%s: %d changes after %d, want 1: %+v", what, len(cs), after, cs)
		}
		return cs[0]
	}

	// PutKey.
	expires := feedAt.Add(time.Hour)
	w, err := d.PutKey(ctx, ns.Org, ns.ID, "a", store.PutValue{Data: []byte("one"), ContentType: "application/json", ExpiresAt: expires}, feedAt)
	if err != nil {
		t.Fatal(err)
	}
	c := only("put", start)
	want := store.Change{Revision: w.Revision, Kind: store.ChangePut, Key: "a", At: feedAt, Size: 3, ContentType: "application/json", UpdatedAt: feedAt, ExpiresAt: expires, HasValue: true, Value: []byte("one")}
	if !changesEqual(c, want) {
		t.Fatalf("put: %+v, want %+v", c, want)
	}
	if cs, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", start, 10, false); err != nil || len(cs) != 1 || cs[0].HasValue || cs[0].Value != nil || cs[0].Size != 3 {
		t.Fatalf("without values: %+v, %v; want the put with its size and no value", cs, err)
	}
	last := w.Revision

	// DeleteKey of a key, then of a missing one.
	at := feedAt.Add(time.Second)
	if ok, err := d.DeleteKey(ctx, ns.Org, ns.ID, "a", at); err != nil || !ok {
		t.Fatalf("delete: %v %v", ok, err)
	}
	c = only("delete", last)
	if c.Kind != store.ChangeDelete || c.Key != "a" || c.Revision <= last || !c.At.Equal(at) || c.HasValue || c.Size != 0 {
		t.Fatalf("delete: %+v; want a delete of a at %v above %d", c, at, last)
	}
	last = c.Revision
	head, _ := d.Head(ctx)
	if ok, err := d.DeleteKey(ctx, ns.Org, ns.ID, "missing", at); err != nil || ok {
		t.Fatalf("delete of a missing key: %v %v", ok, err)
	}
	if cs, h := readFeed(t, d, ns, "", last, 10, true); len(cs) != 0 || h != head {
		t.Fatalf("a delete of a missing key recorded %+v (head %d, was %d)", cs, h, head)
	}

	// A batch: each of its changes at its own revision, in op order, made
	// at the batch's now; its reads, checks and deletes of missing keys
	// record nothing.
	at = feedAt.Add(2 * time.Second)
	ops := []store.Op{
		{Kind: store.OpPut, Key: "b", Value: text("bee")},
		{Kind: store.OpIncr, Key: "n", By: 5},
		{Kind: store.OpGet, Key: "b"},
		{Kind: store.OpCheck, Key: "b", If: store.Condition{Exists: true}},
		{Kind: store.OpDelete, Key: "nothing"},
		{Kind: store.OpDelete, Key: "b"},
		{Kind: store.OpIncr, Key: "n", By: 2},
	}
	res, err := d.Apply(ctx, ns.Org, ns.ID, ops, at)
	if err != nil {
		t.Fatal(err)
	}
	cs, _ := readFeed(t, d, ns, "", last, 100, true)
	if len(cs) != 4 {
		t.Fatalf("the batch recorded %d changes, want 4: %+v", len(cs), cs)
	}
	for i, w := range []struct {
		kind  store.ChangeKind
		key   string
		value string
		rev   store.Revision
	}{
		{store.ChangePut, "b", "bee", res[0].Revision},
		{store.ChangePut, "n", "5", res[1].Revision},
		{store.ChangeDelete, "b", "", 0},
		{store.ChangePut, "n", "7", res[6].Revision},
	} {
		c := cs[i]
		if c.Kind != w.kind || c.Key != w.key || string(c.Value) != w.value || (w.rev != 0 && c.Revision != w.rev) || !c.At.Equal(at) {
			t.Errorf("batch change %d: %+v; want %v of %q (%q) at revision %d", i, c, w.kind, w.key, w.value, w.rev)
		}
		if i > 0 && c.Revision <= cs[i-1].Revision {
			t.Errorf("batch change %d at revision %d, not above %d", i, c.Revision, cs[i-1].Revision)
		}
	}
	if cs[1].ContentType != store.CounterContentType || cs[1].Size != 1 {
		t.Errorf("an incr's change: %+v", cs[1])
	}
	last = cs[3].Revision

	// A batch that fails, and a failed conditional put, record nothing.
	if _, err := d.Apply(ctx, ns.Org, ns.ID, []store.Op{{Kind: store.OpPut, Key: "x", Value: text("x")}, {Kind: store.OpCheck, Key: "b", If: store.Condition{Exists: true}}}, at); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("failing batch: %v", err)
	}
	if _, err := d.PutKey(ctx, ns.Org, ns.ID, "n", store.PutValue{Data: []byte("y"), ContentType: "a/b", If: store.Condition{Absent: true}}, at); !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("failing put: %v", err)
	}
	if cs, _ := readFeed(t, d, ns, "", last, 10, true); len(cs) != 0 {
		t.Fatalf("failed writes recorded %+v", cs)
	}

	// An expiry swept: a fresh revision, made at the sweep's now.
	if _, err := d.PutKey(ctx, ns.Org, ns.ID, "ttl", store.PutValue{Data: []byte("t"), ContentType: "a/b", ExpiresAt: feedAt.Add(time.Minute)}, feedAt); err != nil {
		t.Fatal(err)
	}
	put := only("put with a ttl", last)
	sweep := feedAt.Add(2 * time.Minute)
	if n, err := d.SweepExpired(ctx, sweep, 10); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	c = only("sweep", put.Revision)
	if c.Kind != store.ChangeExpire || c.Key != "ttl" || c.Revision <= put.Revision || !c.At.Equal(sweep) {
		t.Fatalf("sweep: %+v; want an expiry of ttl at %v", c, sweep)
	}
	last = c.Revision

	// Values above MaxChangeValue are not carried; one of exactly that
	// size is.
	big := bytes.Repeat([]byte("v"), store.MaxChangeValue+1)
	if _, err := d.PutKey(ctx, ns.Org, ns.ID, "big", store.PutValue{Data: big, ContentType: "a/b"}, feedAt); err != nil {
		t.Fatal(err)
	}
	if _, err := d.PutKey(ctx, ns.Org, ns.ID, "fits", store.PutValue{Data: big[1:], ContentType: "a/b"}, feedAt); err != nil {
		t.Fatal(err)
	}
	cs, _ = readFeed(t, d, ns, "", last, 10, true)
	if len(cs) != 2 || cs[0].HasValue || cs[0].Value != nil || cs[0].Size != int64(len(big)) || !cs[1].HasValue || !bytes.Equal(cs[1].Value, big[1:]) {
		t.Fatalf("a value of %d bytes and one of %d: %+v", len(big), len(big)-1, summary(cs))
	}

	// An empty value is carried, as empty.
	if _, err := d.PutKey(ctx, ns.Org, ns.ID, "empty", store.PutValue{Data: nil, ContentType: "a/b"}, feedAt); err != nil {
		t.Fatal(err)
	}
	if c := only("empty put", cs[1].Revision); !c.HasValue || c.Value == nil || len(c.Value) != 0 {
		t.Fatalf("an empty value: %+v", c)
	}

	// Prefixes and limits: a reader goes on from the last change of a full
	// page, else from the head.
	all, head := readFeed(t, d, ns, "", 0, 1, true)
	if len(all) != 11 {
		t.Fatalf("the whole feed, a change at a time: %d changes, want 11: %v", len(all), summary(all))
	}
	if bs, h := readFeed(t, d, ns, "b", 0, 2, true); len(bs) != 3 || bs[0].Key != "b" || bs[1].Key != "b" || bs[2].Key != "big" || h != head {
		t.Fatalf("prefix b: %v (head %d, want %d)", summary(bs), h, head)
	}
	if _, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", 0, 0, false); !errors.Is(err, store.ErrInvalidArgument) {
		t.Fatalf("limit 0: %v", err)
	}
	if cs, h, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", head+1000, 10, false); err != nil || len(cs) != 0 || h != head {
		t.Fatalf("after the head: %v, %d, %v", cs, h, err)
	}
}

// changesEqual compares changes, times by instant.
func changesEqual(a, b store.Change) bool {
	return a.Revision == b.Revision && a.Kind == b.Kind && a.Key == b.Key && a.At.Equal(b.At) && a.Size == b.Size &&
		a.ContentType == b.ContentType && a.UpdatedAt.Equal(b.UpdatedAt) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.HasValue == b.HasValue && bytes.Equal(a.Value, b.Value)
}

func summary(cs []store.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = fmt.Sprintf("%d:%v:%s(%d bytes, value %v)", c.Revision, c.Kind, c.Key, c.Size, c.HasValue)
	}
	return out
}

// TestChangesCheckTheNamespace: the feed's reads check the namespace as
// key operations do.
func TestChangesCheckTheNamespace(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	pending := kv.Namespace{ID: kv.NewID(), Org: "org", Name: "pending", Status: kv.StatusPending, CreatedAt: feedAt, UpdatedAt: feedAt}
	if err := d.CreateNamespace(ctx, pending); err != nil {
		t.Fatal(err)
	}
	noop := func(store.Change) error { return nil }
	for _, tc := range []struct {
		name string
		org  string
		id   kv.ID
		want error
	}{
		{"another organization's", "other", ns.ID, store.ErrNamespaceNotFound},
		{"unknown", "org", kv.NewID(), store.ErrNamespaceNotFound},
		{"pending", "org", pending.ID, &store.NotReadyError{}},
	} {
		_, _, err := d.ReadChanges(ctx, tc.org, tc.id, "", 0, 10, false)
		_, serr := d.Snapshot(ctx, tc.org, tc.id, "", feedAt, false, noop)
		for what, err := range map[string]error{"ReadChanges": err, "Snapshot": serr} {
			var nr *store.NotReadyError
			if _, ready := tc.want.(*store.NotReadyError); ready && !errors.As(err, &nr) || !ready && !errors.Is(err, tc.want) {
				t.Errorf("%s of a %s namespace: %v, want %v", what, tc.name, err, tc.want)
			}
		}
	}
}

// feedWorkload runs random writes on ns, on 32 keys and 4 counters: puts
// (some with an expiry within the hour after feedAt), deletes and batches
// (some large: they take their revisions well before they commit), until
// stop says so or n writes are done. ack is called with every revision a
// write reported.
func feedWorkload(t *testing.T, d *DB, ns kv.Namespace, seed uint64, n int, stop *atomic.Bool, ack func(key string, rev store.Revision)) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i < n && !stop.Load(); i++ {
		key := fmt.Sprintf("k%02d", r.IntN(32))
		value := fmt.Sprintf("w%d-%d", seed, i)
		switch x := r.IntN(100); {
		case x < 45:
			w, err := d.PutKey(ctx, ns.Org, ns.ID, key, text(value), feedAt)
			if err != nil {
				t.Error(err)
				return
			}
			ack(key, w.Revision)
		case x < 55:
			v := text(value)
			v.ExpiresAt = feedAt.Add(time.Duration(1+r.IntN(59)) * time.Minute)
			w, err := d.PutKey(ctx, ns.Org, ns.ID, key, v, feedAt)
			if err != nil {
				t.Error(err)
				return
			}
			ack(key, w.Revision)
		case x < 72:
			if _, err := d.DeleteKey(ctx, ns.Org, ns.ID, key, feedAt); err != nil {
				t.Error(err)
				return
			}
		case x < 75:
			var ops []store.Op
			for j := range 64 {
				k := fmt.Sprintf("k%02d", r.IntN(32))
				if j%4 == 3 {
					ops = append(ops, store.Op{Kind: store.OpDelete, Key: k})
				} else {
					ops = append(ops, store.Op{Kind: store.OpPut, Key: k, Value: text(fmt.Sprintf("%s-%d", value, j))})
				}
			}
			res, err := d.Apply(ctx, ns.Org, ns.ID, ops, feedAt)
			if err != nil {
				t.Error(err)
				return
			}
			for j, op := range ops {
				if op.Kind == store.OpPut {
					ack(op.Key, res[j].Revision)
				}
			}
		default:
			other := fmt.Sprintf("k%02d", r.IntN(32))
			counter := fmt.Sprintf("c%d", r.IntN(4))
			ops := []store.Op{
				{Kind: store.OpPut, Key: key, Value: text(value)},
				{Kind: store.OpIncr, Key: counter, By: 1},
				{Kind: store.OpDelete, Key: other},
			}
			res, err := d.Apply(ctx, ns.Org, ns.ID, ops, feedAt)
			if err != nil {
				t.Error(err)
				return
			}
			ack(key, res[0].Revision)
			ack(counter, res[1].Revision)
		}
	}
}

// sweepUntil sweeps at feedAt plus an hour until stop says so, and then
// until nothing is left to sweep.
func sweepUntil(t *testing.T, d *DB, stop *atomic.Bool) {
	for {
		stopped := stop.Load()
		n, err := d.SweepExpired(context.Background(), feedAt.Add(time.Hour), 100)
		if err != nil {
			t.Error(err)
			return
		}
		if stopped && n == 0 {
			return
		}
	}
}

// tail follows ns's feed from after: it waits for the head, reads pages of
// 50 and applies them to state, checking that revisions only increase,
// until done is set and it has read up to the head done holds.
func tail(t *testing.T, d *DB, ns kv.Namespace, after store.Revision, state feedState, done *atomic.Uint64) (seen map[store.Revision]store.Change) {
	seen = map[store.Revision]store.Change{}
	pos, last := after, after
	for {
		if end := done.Load(); end != 0 && pos >= store.Revision(end) {
			return seen
		}
		wctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := d.WaitHead(wctx, pos)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitHead(%d): %v", pos, err)
			return seen
		}
		if err != nil {
			continue // look at done again
		}
		cs, head, err := d.ReadChanges(context.Background(), ns.Org, ns.ID, "", pos, 50, true)
		if err != nil {
			t.Errorf("ReadChanges after %d: %v", pos, err)
			return seen
		}
		for _, c := range cs {
			if c.Revision <= last {
				t.Errorf("change %d (%s) after %d: revisions must increase", c.Revision, c.Key, last)
				return seen
			}
			last = c.Revision
			if c.Revision > head {
				t.Errorf("change %d above the head %d", c.Revision, head)
			}
			seen[c.Revision] = c
			state.apply(t, c)
		}
		if len(cs) == 50 {
			pos = cs[len(cs)-1].Revision
		} else {
			pos = head
		}
	}
}

// TestChangesTailWhileWriting: a reader that follows the feed with
// WaitHead and ReadChanges while 8 writers and a sweeper run sees every
// change exactly once, in increasing revision order, every acknowledged
// write among them, and rebuilds the store's final state.
func TestChangesTailWhileWriting(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	start, _ := d.Head(ctx)
	var mu sync.Mutex
	acked := map[store.Revision]string{}
	var stop atomic.Bool
	var done atomic.Uint64
	var writers, sweeper sync.WaitGroup
	for w := range 8 {
		writers.Go(func() {
			feedWorkload(t, d, ns, uint64(w), 300, &stop, func(key string, rev store.Revision) {
				mu.Lock()
				acked[rev] = key
				mu.Unlock()
			})
		})
	}
	sweeper.Go(func() { sweepUntil(t, d, &stop) })
	state := feedState{}
	var seen map[store.Revision]store.Change
	reader := make(chan struct{})
	go func() {
		defer close(reader)
		seen = tail(t, d, ns, start, state, &done)
	}()
	writers.Wait()
	stop.Store(true)
	sweeper.Wait()
	final, _ := d.Head(ctx)
	done.Store(uint64(final))
	<-reader
	if t.Failed() {
		return
	}
	for rev, key := range acked {
		if c, ok := seen[rev]; !ok || c.Key != key || c.Kind != store.ChangePut {
			t.Errorf("the write of %s at %d was acknowledged, but the reader saw %+v", key, rev, c)
		}
	}
	if diff := diffStates(storedState(t, d, ns, feedAt.Add(time.Hour)), state); len(diff) > 0 {
		t.Errorf("the state rebuilt from the feed differs from the store's: %v", diff)
	}
	kinds := map[store.ChangeKind]int{}
	for _, c := range seen {
		kinds[c.Kind]++
	}
	if kinds[store.ChangePut] == 0 || kinds[store.ChangeDelete] == 0 || kinds[store.ChangeExpire] == 0 {
		t.Errorf("the workload made %v; want puts, deletes and expiries", kinds)
	}
	t.Logf("%d changes seen, %v", len(seen), kinds)
}

// TestSnapshotWhileWriting: snapshots taken while 8 writers run (and two
// slow ones, whose writes commit well after they took their revisions),
// each followed by the feed from its revision until the writers stop,
// rebuild exactly the store's final state. Several rounds, of several
// snapshots each.
func TestSnapshotWhileWriting(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	for round := range 5 {
		ns := readyNamespace(t, d, fmt.Sprintf("org%d", round), feedAt)
		var stop atomic.Bool
		for i := range 32 {
			if _, err := d.PutKey(ctx, ns.Org, ns.ID, fmt.Sprintf("k%02d", i), text("initial"), feedAt); err != nil {
				t.Fatal(err)
			}
		}
		var acks atomic.Int64
		var writers, sweeper, readers sync.WaitGroup
		for w := range 8 {
			writers.Go(func() {
				feedWorkload(t, d, ns, uint64(round*8+w), 400, &stop, func(string, store.Revision) { acks.Add(1) })
			})
		}
		sweeper.Go(func() { sweepUntil(t, d, &stop) })
		for i := range 2 {
			sweeper.Go(func() { slowWrites(t, d, ns, uint64(round*2+i), &stop) })
		}
		var done atomic.Uint64
		const snapshots = 10
		type result struct {
			at    store.Revision
			snap  feedState // what the snapshot gave
			state feedState // and the changes after it
		}
		results := make([]result, snapshots)
		for i := range snapshots {
			for acks.Load() < int64(i*250) && !t.Failed() {
				time.Sleep(100 * time.Microsecond)
			}
			state := feedState{}
			prev := ""
			at, err := d.Snapshot(ctx, ns.Org, ns.ID, "", feedAt, true, func(c store.Change) error {
				if c.Key <= prev || c.Kind != store.ChangePut {
					t.Errorf("snapshot gave %+v after %q; want puts in key order", c, prev)
				}
				prev = c.Key
				state.apply(t, c)
				if i%2 == 1 {
					time.Sleep(20 * time.Microsecond) // a slow client; writers go on
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range state {
				if v.rev > at {
					t.Errorf("snapshot at %d holds %s at revision %d", at, k, v.rev)
				}
			}
			results[i] = result{at, maps.Clone(state), state}
			readers.Go(func() { tail(t, d, ns, at, state, &done) })
		}
		writers.Wait()
		stop.Store(true)
		sweeper.Wait()
		final, _ := d.Head(ctx)
		done.Store(uint64(final))
		readers.Wait()
		want := storedState(t, d, ns, feedAt.Add(time.Hour))
		// The namespace's whole history is in the feed: replayed up to a
		// snapshot's revision, it is what the snapshot must give.
		feed, _ := readFeed(t, d, ns, "", 0, 1000, true)
		replayed := feedState{}
		next := 0
		for i, r := range results {
			for ; next < len(feed) && feed[next].Revision <= r.at; next++ {
				replayed.apply(t, feed[next])
			}
			if diff := diffStates(replayed, r.snap); len(diff) > 0 {
				t.Fatalf("round %d: snapshot %d at %d differs from the feed replayed up to it: %v", round, i, r.at, diff)
			}
			if diff := diffStates(want, r.state); len(diff) > 0 {
				t.Fatalf("round %d: snapshot %d at %d and the changes after it rebuild a state that differs from the store's: %v", round, i, r.at, diff)
			}
		}
	}
}

// takeLate takes a revision as a write does before it commits, in flight
// until the returned function commits the write (a put of value, or with
// value nil a delete, of key) at it.
func takeLate(t *testing.T, d *DB, ns kv.Namespace, key string, value []byte) (store.Revision, func()) {
	t.Helper()
	rh := &revHold{}
	rev, err := d.revs.take(rh, 1)
	if err != nil {
		t.Fatal(err)
	}
	return rev, func() {
		t.Helper()
		defer rh.release()
		if err := commitAt(d, ns, key, value, rev); err != nil {
			t.Fatal(err)
		}
	}
}

// commitAt commits, synced, a put of value (or with value nil a delete)
// of key at revision rev, with its change record and usage, as the
// engine's own writes do.
func commitAt(d *DB, ns kv.Namespace, key string, value []byte, rev store.Revision) error {
	e, err := d.entry(ns.Org, ns.ID)
	if err != nil {
		return err
	}
	ek := appendEntryKey(nil, e.id, key)
	old, err := d.readOld(ek, key)
	if err != nil {
		return err
	}
	b := d.db.NewBatch()
	defer b.Close()
	var delta int64
	switch {
	case value != nil:
		_, delta, err = putRecords(b, e, key, value, "text/plain", 0, rev, old, feedAt)
	case !old.exists:
		return nil
	default:
		if err = deleteKeyRecords(b, e.id, key, ek, rev, store.ChangeDelete, feedAt); err == nil {
			delta, err = removeOld(b, e, key, old, feedAt)
			delta = -delta
		}
	}
	if err == nil {
		err = addUsage(b, e.ns.Org, e.id, feedAt, delta, store.UsageCounts{})
	}
	if err == nil {
		err = b.Commit(pebbledb.Sync)
	}
	return err
}

// slowWrites writes keys of ns as the engine does, under the key's stripe
// from taking the revision to the commit, but with a pause in between:
// writes whose revisions are taken long before they commit, while others
// commit above them.
func slowWrites(t *testing.T, d *DB, ns kv.Namespace, seed uint64, stop *atomic.Bool) {
	r := rand.New(rand.NewPCG(seed, 9))
	for i := 0; !stop.Load(); i++ {
		key := fmt.Sprintf("k%02d", r.IntN(32))
		var value []byte
		if r.IntN(3) > 0 {
			value = fmt.Appendf(nil, "slow%d-%d", seed, i)
		}
		l := d.keyLock([16]byte(ns.ID), key)
		l.Lock()
		var rh revHold
		rev, err := d.revs.take(&rh, 1)
		if err == nil {
			time.Sleep(time.Duration(r.IntN(500)) * time.Microsecond)
			err = commitAt(d, ns, key, value, rev)
		}
		l.Unlock()
		rh.release()
		if err != nil {
			t.Error(err)
			return
		}
	}
}

// waitForWaiter returns once someone waits for the head to move.
func waitForWaiter(t *testing.T, d *DB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d.revs.mu.Lock()
		waiting := d.revs.moved != nil
		d.revs.mu.Unlock()
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nobody waits for the head")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSnapshotMergesLateChanges: changes whose revisions were taken before
// a snapshot's Pebble snapshot, below a revision it holds, but that commit
// after it, are merged in: a put of a key it lacks, a delete of a key it
// holds, a put of a key it holds. Writes meanwhile do not wait for it,
// and those above its revision are not in it.
func TestSnapshotMergesLateChanges(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	for _, k := range []string{"c", "e", "g"} {
		if _, err := d.PutKey(ctx, ns.Org, ns.ID, k, text(k+"-old"), feedAt); err != nil {
			t.Fatal(err)
		}
	}
	ra, commitA := takeLate(t, d, ns, "a", []byte("a-late"))
	rc, commitC := takeLate(t, d, ns, "c", nil)
	re, commitE := takeLate(t, d, ns, "e", []byte("e-late"))
	wb, err := d.PutKey(ctx, ns.Org, ns.ID, "b", text("b"), feedAt)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := d.Head(ctx); h != ra-1 {
		t.Fatalf("head %d with revision %d in flight; want %d", h, ra, ra-1)
	}
	type result struct {
		at   store.Revision
		got  []store.Change
		err  error
		keys []string
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.at, r.err = d.Snapshot(ctx, ns.Org, ns.ID, "", feedAt, true, func(c store.Change) error {
			r.got = append(r.got, c)
			r.keys = append(r.keys, c.Key)
			return nil
		})
		done <- r
	}()
	waitForWaiter(t, d) // the snapshot waits for the head to pass b's revision
	// A write meanwhile does not wait for the snapshot; it is above the
	// snapshot's revision, so not in it.
	if _, err := d.PutKey(ctx, ns.Org, ns.ID, "z", text("z"), feedAt); err != nil {
		t.Fatal(err)
	}
	commitA()
	commitC()
	commitE()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.at != wb.Revision {
		t.Errorf("snapshot at %d, want %d (b's revision, the highest its Pebble snapshot holds)", r.at, wb.Revision)
	}
	if !slices.Equal(r.keys, []string{"a", "b", "e", "g"}) {
		t.Fatalf("snapshot keys %q, want a (put late), b, e (put late), g; c was deleted late", r.keys)
	}
	for _, c := range r.got {
		want := map[string]store.Revision{"a": ra, "b": wb.Revision, "e": re}[c.Key]
		if want != 0 && c.Revision != want {
			t.Errorf("snapshot gives %s at revision %d, want %d", c.Key, c.Revision, want)
		}
		if v := map[string]string{"a": "a-late", "b": "b", "e": "e-late", "g": "g-old"}[c.Key]; !c.HasValue || string(c.Value) != v {
			t.Errorf("snapshot gives %s = %q, want %q", c.Key, c.Value, v)
		}
	}
	cs, _ := readFeed(t, d, ns, "", r.at, 10, false)
	if len(cs) != 1 || cs[0].Key != "z" {
		t.Errorf("after the snapshot the feed has %v; want only z", summary(cs))
	}
	if cs, _ := readFeed(t, d, ns, "", ra-1, 10, false); len(cs) != 5 || cs[1].Revision != rc {
		t.Errorf("the late changes in the feed: %v", summary(cs))
	}
}

// TestSnapshotHoldsNoLock: while fn runs, writes to the namespace, a
// compaction and even marking it deleting go on; the snapshot is still
// the one it took. An error of fn ends it.
func TestSnapshotHoldsNoLock(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	for i := range 10 {
		if _, err := d.PutKey(ctx, ns.Org, ns.ID, fmt.Sprintf("k%d", i), text("v"), feedAt); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	at, err := d.Snapshot(ctx, ns.Org, ns.ID, "k", feedAt, false, func(c store.Change) error {
		if len(keys) == 0 {
			if _, err := d.PutKey(ctx, ns.Org, ns.ID, "k5", text("new"), feedAt); err != nil {
				return err
			}
			if _, err := d.DeleteKey(ctx, ns.Org, ns.ID, "k7", feedAt); err != nil {
				return err
			}
			if _, err := d.Apply(ctx, ns.Org, ns.ID, []store.Op{{Kind: store.OpPut, Key: "k0a", Value: text("x")}}, feedAt); err != nil {
				return err
			}
			if _, err := d.CompactChanges(ctx, feedAt, 10); err != nil {
				return err
			}
			if _, err := d.MarkDeleting(ctx, ns.Org, ns.ID, feedAt); err != nil {
				return err
			}
		}
		if c.HasValue || c.Value != nil {
			t.Errorf("a snapshot without values gave %s's", c.Key)
		}
		keys = append(keys, c.Key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 10 || slices.Contains(keys, "k0a") || !slices.Contains(keys, "k7") {
		t.Fatalf("the snapshot gave %q; want k0..k9 as they were", keys)
	}
	if h, _ := d.Head(ctx); at >= h {
		t.Errorf("snapshot at %d, not below the writes made during it (head %d)", at, h)
	}

	ns2 := readyNamespace(t, d, "org2", feedAt)
	for _, k := range []string{"a", "b", "c"} {
		d.PutKey(ctx, ns2.Org, ns2.ID, k, text(k), feedAt)
	}
	stopErr := errors.New("client gone")
	n := 0
	if _, err := d.Snapshot(ctx, ns2.Org, ns2.ID, "", feedAt, false, func(store.Change) error { n++; return stopErr }); !errors.Is(err, stopErr) || n != 1 {
		t.Fatalf("fn's error: %v after %d calls; want it after one", err, n)
	}
}

// TestSnapshotSkipsExpired: a snapshot gives the keys live at its now,
// with their metadata, and a prefix's only.
func TestSnapshotSkipsExpired(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	live := feedAt.Add(time.Hour)
	for _, p := range []struct {
		key     string
		expires time.Time
	}{{"p/dead", feedAt.Add(time.Second)}, {"p/live", live}, {"p/forever", time.Time{}}, {"q", time.Time{}}} {
		if _, err := d.PutKey(ctx, ns.Org, ns.ID, p.key, store.PutValue{Data: []byte(p.key), ContentType: "a/b", ExpiresAt: p.expires}, feedAt); err != nil {
			t.Fatal(err)
		}
	}
	var got []store.Change
	if _, err := d.Snapshot(ctx, ns.Org, ns.ID, "p/", feedAt.Add(time.Minute), true, func(c store.Change) error { got = append(got, c); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "p/forever" || got[1].Key != "p/live" {
		t.Fatalf("snapshot of p/ a minute on: %v", summary(got))
	}
	c := got[1]
	if c.Size != 6 || c.ContentType != "a/b" || !c.ExpiresAt.Equal(live) || !c.UpdatedAt.Equal(feedAt) || c.Revision == 0 || string(c.Value) != "p/live" {
		t.Fatalf("snapshot entry %+v", c)
	}
}

// TestHeadWaitsForLogSync: a write in the memtable whose log sync has not
// ended holds the head below it; WaitHead wakes once it is durable.
func TestHeadWaitsForLogSync(t *testing.T) {
	ctx := context.Background()
	gate := newSyncGate(vfs.NewMem())
	d, err := Open("db", Options{FS: gate, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer gate.release() // before Close, which waits for the write, should the test fail
	ns := readyNamespace(t, d, "org", feedAt)
	// A first write raises the revision ceiling, which is synced.
	if _, err := d.PutKey(ctx, ns.Org, ns.ID, "first", text("v"), feedAt); err != nil {
		t.Fatal(err)
	}
	before, _ := d.Head(ctx)
	gate.shut()
	written := make(chan store.Written, 1)
	go func() {
		w, err := d.PutKey(ctx, ns.Org, ns.ID, "k", text("v"), feedAt)
		if err != nil {
			t.Error(err)
		}
		written <- w
	}()
	// Once the write is in the memtable, its revision is known.
	var rev store.Revision
	deadline := time.Now().Add(30 * time.Second)
	for rev == 0 {
		raw, closer, err := d.db.Get(appendValueKey(nil, [16]byte(ns.ID), "k"))
		if err == nil {
			rec, _ := decodeValue(raw)
			rev = rec.rev
			closer.Close()
		}
		if time.Now().After(deadline) {
			t.Fatal("the write never reached the memtable")
		}
		time.Sleep(time.Millisecond)
	}
	woke := make(chan store.Revision, 1)
	go func() {
		h, err := d.WaitHead(ctx, rev-1)
		if err != nil {
			t.Error(err)
		}
		woke <- h
	}()
	waitForWaiter(t, d)
	if h, _ := d.Head(ctx); h >= rev {
		t.Fatalf("head %d with the write of revision %d not synced", h, rev)
	}
	if cs, h, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", before, 10, false); err != nil || len(cs) != 0 || h >= rev {
		t.Fatalf("ReadChanges before the sync: %v, head %d, %v", summary(cs), h, err)
	}
	gate.release()
	if w := <-written; w.Revision != rev {
		t.Fatalf("the write reports revision %d, its record %d", w.Revision, rev)
	}
	if h := <-woke; h < rev {
		t.Fatalf("WaitHead woke at %d, want at least %d", h, rev)
	}
	if cs, _ := readFeed(t, d, ns, "", before, 10, false); len(cs) != 1 || cs[0].Revision != rev {
		t.Fatalf("after the sync: %v", summary(cs))
	}
}

// TestWaitHead: WaitHead returns at once when the head is above after,
// wakes when a write moves it, and returns ctx's error, or ErrClosed when
// the engine closes.
func TestWaitHead(t *testing.T) {
	ctx := context.Background()
	d := mustOpen(t, t.TempDir())
	ns := readyNamespace(t, d, "org", feedAt)
	head, _ := d.Head(ctx)
	if h, err := d.WaitHead(ctx, head-1); err != nil || h != head {
		t.Fatalf("WaitHead below the head: %d, %v", h, err)
	}
	woke := make(chan store.Revision, 1)
	go func() {
		h, err := d.WaitHead(ctx, head)
		if err != nil {
			t.Error(err)
		}
		woke <- h
	}()
	waitForWaiter(t, d)
	w, err := d.PutKey(ctx, ns.Org, ns.ID, "k", text("v"), feedAt)
	if err != nil {
		t.Fatal(err)
	}
	if h := <-woke; h < w.Revision {
		t.Fatalf("WaitHead woke at %d, below the write's %d", h, w.Revision)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := d.WaitHead(short, w.Revision); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitHead with nothing to wait for: %v, want the deadline", err)
	}
	closed := make(chan error, 1)
	go func() { _, err := d.WaitHead(ctx, w.Revision); closed <- err }()
	waitForWaiter(t, d)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; !errors.Is(err, store.ErrClosed) {
		t.Fatalf("WaitHead across Close: %v", err)
	}
	if _, err := d.Head(ctx); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Head after Close: %v", err)
	}
}

// TestChangesSurviveRestart: reopening keeps the feed, and the head is
// where it was or above; new writes follow.
func TestChangesSurviveRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := mustOpen(t, dir)
	ns := readyNamespace(t, d, "org", feedAt)
	var stop atomic.Bool
	feedWorkload(t, d, ns, 1, 200, &stop, func(string, store.Revision) {})
	before, head := readFeed(t, d, ns, "", 0, 64, true)
	d.Close()

	d = mustOpen(t, dir)
	defer d.Close()
	after, head2 := readFeed(t, d, ns, "", 0, 64, true)
	if len(after) != len(before) || len(before) == 0 {
		t.Fatalf("%d changes before the restart, %d after", len(before), len(after))
	}
	for i := range before {
		if !changesEqual(before[i], after[i]) {
			t.Fatalf("change %d: %+v before the restart, %+v after", i, before[i], after[i])
		}
	}
	if head2 < head {
		t.Fatalf("head %d after the restart, %d before", head2, head)
	}
	w, err := d.PutKey(ctx, ns.Org, ns.ID, "new", text("v"), feedAt)
	if err != nil {
		t.Fatal(err)
	}
	if cs, _ := readFeed(t, d, ns, "", head, 10, false); len(cs) != 1 || cs[0].Revision != w.Revision || w.Revision <= head {
		t.Fatalf("the feed after the restart's head %d: %v; want the new write (%d)", head, summary(cs), w.Revision)
	}
}

// feedOp is one write of TestChangesSurvivePowerLoss's workload, as its key
// sees it.
type feedOp struct {
	kind  store.ChangeKind
	value string
	rev   store.Revision // of a put that returned
	known bool           // returned before the crash began: it must be in the feed
	maybe bool           // around the crash: it may be
}

// TestChangesSurvivePowerLoss: after a power loss at a random moment while
// writers run, the feed holds the change of every acknowledged write, in
// order, with at most the writes in flight at the crash after them, and
// each key is as its feed leaves it; every change a reader read before
// the crash is there.
func TestChangesSurvivePowerLoss(t *testing.T) {
	for seed := range uint64(20) {
		changesPowerLoss(t, seed)
		if t.Failed() {
			t.Fatalf("seed %d failed", seed)
		}
	}
}

func changesPowerLoss(t *testing.T, seed uint64) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 3))
	fs := vfs.NewCrashableMem()
	d, err := Open("db", Options{FS: fs, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	ns := readyNamespace(t, d, "org", feedAt)
	var clock atomic.Int64 // orders calls and returns against the crash
	var crashStart, crashEnd atomic.Int64
	crashStart.Store(1 << 62)
	crashEnd.Store(1 << 62)
	const writers = 4
	ops := make([]map[string][]*feedOp, writers) // each writer's keys are its own
	var acks atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range writers {
		ops[w] = map[string][]*feedOp{}
		wseed := rng.Uint64()
		wg.Go(func() {
			r := rand.New(rand.NewPCG(wseed, 4))
			exists := map[string]bool{}
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("w%d-%d", w, r.IntN(3))
				op := &feedOp{kind: store.ChangePut, value: fmt.Sprintf("v%d", i)}
				if exists[key] && r.IntN(3) == 0 {
					op.kind, op.value = store.ChangeDelete, ""
				}
				ops[w][key] = append(ops[w][key], op)
				call := clock.Add(1)
				var err error
				if op.kind == store.ChangePut {
					var wr store.Written
					wr, err = d.PutKey(ctx, ns.Org, ns.ID, key, text(op.value), feedAt)
					op.rev = wr.Revision
				} else {
					_, err = d.DeleteKey(ctx, ns.Org, ns.ID, key, feedAt)
				}
				ret := clock.Add(1)
				if err != nil {
					t.Error(err)
					return
				}
				exists[key] = op.kind == store.ChangePut
				op.known = ret < crashStart.Load()
				op.maybe = !op.known && call < crashEnd.Load()
				acks.Add(1)
			}
		})
	}
	// A reader follows the feed meanwhile: what it read before the crash
	// began must survive it.
	var read []store.Change
	wg.Go(func() {
		var pos store.Revision
		for !stop.Load() {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
			d.WaitHead(wctx, pos)
			cancel()
			cs, head, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", pos, 100, false)
			if err != nil {
				t.Error(err)
				return
			}
			if clock.Add(1) < crashStart.Load() {
				read = append(read, cs...)
			}
			if pos = head; len(cs) == 100 {
				pos = cs[99].Revision
			}
		}
	})
	target := int64(rng.IntN(300))
	for acks.Load() < target && !t.Failed() {
		time.Sleep(50 * time.Microsecond)
	}
	crashStart.Store(clock.Add(1))
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(rng.Uint64(), 5))})
	crashEnd.Store(clock.Add(1))
	stop.Store(true)
	wg.Wait()
	d.Close()
	// A write in flight when crashStart was set may not have seen it: its
	// return is after it, so it is not known, as it should be.

	d, err = Open("db", Options{FS: crashed, Logger: quietLog})
	if err != nil {
		t.Fatalf("seed %d: reopen: %v", seed, err)
	}
	defer d.Close()
	feed, _ := readFeed(t, d, ns, "", 0, 100, true)
	survived := map[store.Revision]bool{}
	for _, c := range feed {
		survived[c.Revision] = true
	}
	for _, c := range read {
		if !survived[c.Revision] {
			t.Errorf("seed %d: a reader read change %d (%v of %s) before the crash; it is not in the feed after it", seed, c.Revision, c.Kind, c.Key)
		}
	}
	byKey := map[string][]store.Change{}
	for _, c := range feed {
		byKey[c.Key] = append(byKey[c.Key], c)
	}
	stored := storedState(t, d, ns, feedAt)
	known := 0
	for w := range writers {
		for key, list := range ops[w] {
			got := byKey[key]
			i := 0
			for _, op := range list {
				if !op.known && !op.maybe {
					break
				}
				if i == len(got) {
					if op.known {
						t.Errorf("seed %d: %s: the acknowledged %v (%q, revision %d) is not in the feed after the crash", seed, key, op.kind, op.value, op.rev)
					}
					break
				}
				c := got[i]
				if c.Kind != op.kind || string(c.Value) != op.value || (op.rev != 0 && c.Revision != op.rev) {
					if op.known {
						t.Errorf("seed %d: %s: change %d of the feed is %+v; want the acknowledged %v (%q, revision %d)", seed, key, i, c, op.kind, op.value, op.rev)
					} else {
						t.Errorf("seed %d: %s: change %d of the feed is %+v; want the %v in flight at the crash (%q)", seed, key, i, c, op.kind, op.value)
					}
					break
				}
				if op.known {
					known++
				}
				i++
			}
			if i < len(got) {
				t.Errorf("seed %d: %s: the feed has %d changes more than were written: %v", seed, key, len(got)-i, summary(got[i:]))
			}
			state := feedState{}
			for _, c := range got {
				state.apply(t, c)
			}
			if state[key] != stored[key] {
				t.Errorf("seed %d: %s is %+v after the crash; its feed says %+v", seed, key, stored[key], state[key])
			}
		}
	}
	if seed == 0 {
		t.Logf("seed 0: %d acknowledged writes checked in a feed of %d changes; %d changes read before the crash", known, len(feed), len(read))
	}
}

// TestCompactChanges: compaction removes the oldest changes made before
// its time, up to its count and never past the first newer one, and
// raises the horizon: a read from below it is a HistoryGoneError naming
// it. The horizon survives a restart.
func TestCompactChanges(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := mustOpen(t, dir)
	ns := readyNamespace(t, d, "org", feedAt)
	other := readyNamespace(t, d, "org2", feedAt)
	var revs []store.Revision
	for i := range 10 {
		w, err := d.PutKey(ctx, ns.Org, ns.ID, fmt.Sprintf("k%d", i), text("v"), feedAt.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, w.Revision)
	}
	// A change made at an earlier time, after newer ones: compaction stops
	// at the first newer change, so it stays.
	if _, err := d.PutKey(ctx, ns.Org, ns.ID, "late", text("v"), feedAt); err != nil {
		t.Fatal(err)
	}
	if _, err := d.PutKey(ctx, other.Org, other.ID, "o", text("v"), feedAt.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	gone := func(after, oldest store.Revision) {
		t.Helper()
		_, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", after, 10, false)
		var hg *store.HistoryGoneError
		if !errors.As(err, &hg) || !errors.Is(err, store.ErrHistoryGone) || hg.Oldest != oldest {
			t.Fatalf("ReadChanges after %d: %v; want history gone before %d", after, err, oldest)
		}
	}
	before := feedAt.Add(5 * time.Minute)
	if n, err := d.CompactChanges(ctx, before, 3); err != nil || n != 3 {
		t.Fatalf("compact 3: %d, %v", n, err)
	}
	gone(0, revs[2])
	gone(revs[1], revs[2])
	if cs, _ := readFeed(t, d, ns, "", revs[2], 100, false); len(cs) != 8 || cs[0].Revision != revs[3] {
		t.Fatalf("after the horizon: %v", summary(cs))
	}
	if n, err := d.CompactChanges(ctx, before, 100); err != nil || n != 2 {
		t.Fatalf("compact the rest made before %v: %d, %v; want 2", before, n, err)
	}
	gone(revs[3], revs[4])
	if n, err := d.CompactChanges(ctx, before, 100); err != nil || n != 0 {
		t.Fatalf("compact again: %d, %v", n, err)
	}
	if cs, _ := readFeed(t, d, other, "", 0, 10, false); len(cs) != 1 {
		t.Fatalf("another namespace's newer change: %v", summary(cs))
	}
	d.Close()

	d = mustOpen(t, dir)
	defer d.Close()
	gone(0, revs[4])
	if cs, _ := readFeed(t, d, ns, "", revs[4], 100, false); len(cs) != 6 {
		t.Fatalf("after the horizon, reopened: %v", summary(cs))
	}
	// A snapshot of a namespace whose changes were all compacted is at or
	// above the horizon, so a read from it is not refused.
	if n, err := d.CompactChanges(ctx, feedAt.Add(24*time.Hour), 100); err != nil || n != 7 {
		t.Fatalf("compact everything: %d, %v", n, err)
	}
	keys := 0
	at, err := d.Snapshot(ctx, ns.Org, ns.ID, "", feedAt, false, func(store.Change) error { keys++; return nil })
	if err != nil || keys != 11 {
		t.Fatalf("snapshot: %d keys, %v", keys, err)
	}
	if _, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", at, 10, false); err != nil {
		t.Fatalf("ReadChanges from the snapshot's revision %d: %v", at, err)
	}
}

// TestCompactChangesConcurrently: compactions at once remove each change
// once, and leave the horizon at the last one removed.
func TestCompactChangesConcurrently(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	const n = 600
	ops := make([]store.Op, 0, 200)
	for i := range n {
		ops = append(ops, store.Op{Kind: store.OpPut, Key: fmt.Sprintf("k%d", i%50), Value: text("v")})
		if len(ops) == cap(ops) {
			if _, err := d.Apply(ctx, ns.Org, ns.ID, ops, feedAt); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	all, _ := readFeed(t, d, ns, "", 0, 1000, false)
	if len(all) != n {
		t.Fatalf("%d changes, want %d", len(all), n)
	}
	var removed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				got, err := d.CompactChanges(ctx, feedAt.Add(time.Second), 7)
				if err != nil {
					t.Error(err)
					return
				}
				if got == 0 {
					return
				}
				removed.Add(int64(got))
			}
		})
	}
	wg.Wait()
	if removed.Load() != n {
		t.Fatalf("the compactions removed %d changes, want %d", removed.Load(), n)
	}
	last := all[n-1].Revision
	if cs, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", last, 10, false); err != nil || len(cs) != 0 {
		t.Fatalf("read after the last: %v, %v", cs, err)
	}
	var hg *store.HistoryGoneError
	if _, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", last-1, 10, false); !errors.As(err, &hg) || hg.Oldest != last {
		t.Fatalf("read before the last: %v; want history gone before %d", err, last)
	}
}

// TestCompactStopsAtTheHead: a change above the head is not compacted,
// whatever its time: a lower revision may still commit below it.
func TestCompactStopsAtTheHead(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	w1, _ := d.PutKey(ctx, ns.Org, ns.ID, "a", text("v"), feedAt)
	_, commit := takeLate(t, d, ns, "b", []byte("b"))
	w2, err := d.PutKey(ctx, ns.Org, ns.ID, "c", text("v"), feedAt)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := d.CompactChanges(ctx, feedAt.Add(time.Hour), 100); err != nil || n != 1 {
		t.Fatalf("compact with a revision in flight: %d, %v; want only the change below it", n, err)
	}
	commit()
	if n, err := d.CompactChanges(ctx, feedAt.Add(time.Hour), 100); err != nil || n != 2 {
		t.Fatalf("compact once it committed: %d, %v", n, err)
	}
	var hg *store.HistoryGoneError
	if _, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", w1.Revision, 10, false); !errors.As(err, &hg) || hg.Oldest != w2.Revision {
		t.Fatalf("read after %d: %v; want history gone before %d", w1.Revision, err, w2.Revision)
	}
}

// TestPurgeRemovesTheFeed: purging a namespace removes its change records
// and horizon; other namespaces keep theirs.
func TestPurgeRemovesTheFeed(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	keep := readyNamespace(t, d, "org2", feedAt)
	for i := range 20 {
		d.PutKey(ctx, ns.Org, ns.ID, fmt.Sprintf("k%d", i), text("v"), feedAt)
		d.PutKey(ctx, keep.Org, keep.ID, fmt.Sprintf("k%d", i), text("v"), feedAt.Add(time.Hour))
	}
	if n, err := d.CompactChanges(ctx, feedAt.Add(time.Minute), 5); err != nil || n != 5 {
		t.Fatalf("compact: %d, %v", n, err)
	}
	if has, _ := hasRecords(d.db, tagChange, [16]byte(ns.ID)); !has {
		t.Fatal("no feed to purge")
	}
	if _, err := d.MarkDeleting(ctx, ns.Org, ns.ID, feedAt); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", 0, 10, false); !errors.As(err, new(*store.NotReadyError)) {
		t.Fatalf("ReadChanges of a deleting namespace: %v", err)
	}
	if err := d.PurgeNamespace(ctx, ns.ID, ""); err != nil {
		t.Fatal(err)
	}
	if has, err := hasRecords(d.db, tagChange, [16]byte(ns.ID)); has || err != nil {
		t.Fatalf("the purged namespace's feed is still there (%v)", err)
	}
	if _, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", 0, 10, false); !errors.Is(err, store.ErrNamespaceNotFound) {
		t.Fatalf("ReadChanges of a purged namespace: %v", err)
	}
	if cs, _ := readFeed(t, d, keep, "", 0, 100, false); len(cs) != 20 {
		t.Fatalf("the other namespace's feed: %d changes", len(cs))
	}
}

// TestCheckpointCarriesTheFeed: a backup holds the feed and its horizons,
// and Check counts the changes.
func TestCheckpointCarriesTheFeed(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d := mustOpen(t, filepath.Join(root, "store"))
	defer d.Close()
	ns := readyNamespace(t, d, "org", feedAt)
	var stop atomic.Bool
	feedWorkload(t, d, ns, 2, 300, &stop, func(string, store.Revision) {})
	if _, err := d.CompactChanges(ctx, feedAt.Add(time.Minute), 10); err != nil {
		t.Fatal(err)
	}
	_, _, err := d.ReadChanges(ctx, ns.Org, ns.ID, "", 0, 10, false)
	var hg *store.HistoryGoneError
	if !errors.As(err, &hg) {
		t.Fatalf("reading the compacted feed from 0: %v", err)
	}
	want, _ := readFeed(t, d, ns, "", hg.Oldest, 1000, true)
	backup := filepath.Join(root, "backup")
	if err := d.Checkpoint(ctx, backup); err != nil {
		t.Fatal(err)
	}
	r, err := Check(backup)
	if err != nil || len(r.Problems) > 0 {
		t.Fatalf("Check of the backup: %v, %q", err, r.Problems)
	}
	if r.Changes != int64(len(want)) {
		t.Errorf("Check counted %d changes, the feed has %d", r.Changes, len(want))
	}
	b, err := Open(backup, Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var bhg *store.HistoryGoneError
	if _, _, err := b.ReadChanges(ctx, ns.Org, ns.ID, "", 0, 10, false); !errors.As(err, &bhg) || bhg.Oldest != hg.Oldest {
		t.Errorf("the backup's horizon: %v; want %d", err, hg.Oldest)
	}
	got, _ := readFeed(t, b, ns, "", hg.Oldest, 1000, true)
	if len(got) != len(want) {
		t.Fatalf("the backup's feed has %d changes, the store's %d", len(got), len(want))
	}
	for i := range got {
		if !changesEqual(got[i], want[i]) {
			t.Fatalf("change %d: %+v in the backup, %+v in the store", i, got[i], want[i])
		}
	}
}

// TestUpgradeStartsTheFeed: a store of layout 3 (no feed) opens as layout
// 4. A namespace that held keys has its history before marked gone, at a
// revision below every later one; one without keys has nothing gone. A
// snapshot of it gives its keys, and reading on from it sees what follows.
func TestUpgradeStartsTheFeed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := mustOpen(t, dir)
	full := readyNamespace(t, d, "org", feedAt)
	empty := readyNamespace(t, d, "org2", feedAt)
	for i := range 5 {
		if _, err := d.PutKey(ctx, full.Org, full.ID, fmt.Sprintf("k%d", i), text("old"), feedAt); err != nil {
			t.Fatal(err)
		}
	}
	// As a kvd of layout 3 leaves it: no change records, layout 3.
	if err := d.db.DeleteRange([]byte{tagChange}, []byte{tagChange + 1}, pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	if err := d.db.Set(formatKey, []byte{3}, pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := writeIdentityLayout(dir, 3); err != nil {
		t.Fatal(err)
	}

	d = mustOpen(t, dir)
	defer d.Close()
	if v, closer, err := d.db.Get(formatKey); err != nil || !bytes.Equal(v, []byte{formatVersion}) {
		t.Fatalf("layout record after the upgrade: %x, %v", v, err)
	} else {
		closer.Close()
	}
	_, _, err := d.ReadChanges(ctx, full.Org, full.ID, "", 0, 10, false)
	var hg *store.HistoryGoneError
	if !errors.As(err, &hg) || hg.Oldest == 0 {
		t.Fatalf("reading the upgraded namespace from 0: %v; want its history gone", err)
	}
	if cs, _, err := d.ReadChanges(ctx, empty.Org, empty.ID, "", 0, 10, false); err != nil || len(cs) != 0 {
		t.Fatalf("reading the upgraded empty namespace from 0: %v, %v", cs, err)
	}
	state := feedState{}
	at, err := d.Snapshot(ctx, full.Org, full.ID, "", feedAt, true, func(c store.Change) error { state.apply(t, c); return nil })
	if err != nil || len(state) != 5 || at < hg.Oldest {
		t.Fatalf("snapshot of the upgraded namespace: %d keys at %d (horizon %d), %v", len(state), at, hg.Oldest, err)
	}
	w, err := d.PutKey(ctx, full.Org, full.ID, "k0", text("new"), feedAt)
	if err != nil || w.Revision <= hg.Oldest {
		t.Fatalf("a write after the upgrade: revision %d (horizon %d), %v", w.Revision, hg.Oldest, err)
	}
	cs, _ := readFeed(t, d, full, "", at, 10, true)
	for _, c := range cs {
		state.apply(t, c)
	}
	if diff := diffStates(storedState(t, d, full, feedAt), state); len(diff) > 0 {
		t.Fatalf("snapshot and feed after the upgrade: %v", diff)
	}
	d.Close()
	r, err := Check(dir)
	if err != nil || len(r.Problems) > 0 || r.Layout != formatVersion {
		t.Fatalf("Check after the upgrade: %+v, %v", r, err)
	}
}

// writeIdentityLayout rewrites dir's identity file as a kvd of layout
// writes it.
func writeIdentityLayout(dir string, layout int) error {
	return os.WriteFile(filepath.Join(dir, identityName), fmt.Appendf(nil, `{"store":"kvd","layout":%d}`+"\n", layout), 0o600)
}

// TestReadChangesBoundsItsScan: a reader of a prefix that matches nothing
// far behind is answered with the head it read up to, below the feed's,
// and gets there in steps.
func TestReadChangesBoundsItsScan(t *testing.T) {
	ctx := context.Background()
	d := openFeed(t)
	ns := readyNamespace(t, d, "org", feedAt)
	ops := make([]store.Op, 0, store.MaxBatchOps)
	for i := range store.MaxBatchOps {
		ops = append(ops, store.Op{Kind: store.OpPut, Key: fmt.Sprintf("k%d", i), Value: text("v")})
	}
	for range changeScanBudget/store.MaxBatchOps + 2 {
		if _, err := d.Apply(ctx, ns.Org, ns.ID, ops, feedAt); err != nil {
			t.Fatal(err)
		}
	}
	head, _ := d.Head(ctx)
	steps := 0
	for after := store.Revision(0); after < head; steps++ {
		cs, h, err := d.ReadChanges(ctx, ns.Org, ns.ID, "nothing/", after, 10, false)
		if err != nil || len(cs) != 0 || h <= after {
			t.Fatalf("step %d from %d: %v, head %d, %v", steps, after, cs, h, err)
		}
		after = h
	}
	if steps < 2 {
		t.Fatalf("a scan of %d changes in %d step", changeScanBudget+2*store.MaxBatchOps, steps)
	}
}

// TestChangeRecordsDecodeStrictly: decodeChange refuses records of the
// wrong shape.
func TestChangeRecordsDecodeStrictly(t *testing.T) {
	good := appendChange(nil, store.ChangePut, feedAt, feedAt.UnixNano(), 0, "key", "a/b", []byte("value"))
	if r, err := decodeChange(good); err != nil || string(r.key) != "key" || string(r.value) != "value" || string(r.contentType) != "a/b" {
		t.Fatalf("a good record: %+v, %v", r, err)
	}
	del := appendChange(nil, store.ChangeDelete, feedAt, 0, 0, "key", "", nil)
	for name, b := range map[string][]byte{
		"empty":               nil,
		"short header":        good[:changeHeaderSize-1],
		"value cut":           good[:len(good)-1],
		"value too long":      append(bytes.Clone(good), 'x'),
		"unknown kind":        append([]byte{9}, good[1:]...),
		"delete with a value": append(bytes.Clone(del), 'x'),
		"key cut":             del[:len(del)-1],
	} {
		if _, err := decodeChange(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestUpgradeCutShortBeforeTheIdentity: a store whose layout record is
// ahead of its identity file (an upgrade from layout 2 that a crash cut
// short before it rewrote the file) opens, and gets its identity file
// rewritten; one whose layout record is behind is refused.
func TestUpgradeCutShortBeforeTheIdentity(t *testing.T) {
	dir := t.TempDir()
	d := mustOpen(t, dir)
	readyNamespace(t, d, "org", feedAt)
	d.Close()
	if err := writeIdentityLayout(dir, 2); err != nil {
		t.Fatal(err)
	}
	d = mustOpen(t, dir)
	d.Close()
	if id, err := readIdentity(vfs.Default, dir); err != nil || id == nil || id.Layout != formatVersion {
		t.Fatalf("identity after opening: %+v, %v", id, err)
	}
	rawPebble(t, dir, func(db *pebbledb.DB) { db.Set(formatKey, []byte{3}, pebbledb.Sync) })
	if d, err := Open(dir, Options{Logger: quietLog}); err == nil || !strings.Contains(err.Error(), "identity file says layout 4, its layout record 3") {
		if err == nil {
			d.Close()
		}
		t.Fatalf("a layout record behind the identity file: %v", err)
	}
}

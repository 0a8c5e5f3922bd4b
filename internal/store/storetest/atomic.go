package storetest

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// put writes key and returns what the store reported.
func put(t *testing.T, s store.Store, ns kv.Namespace, key string, v store.PutValue, now time.Time) store.Written {
	t.Helper()
	w, err := s.PutKey(ctx, ns.Org, ns.ID, key, v, now)
	if err != nil {
		t.Fatalf("PutKey(%q): %v", key, err)
	}
	return w
}

func revisionOf(t *testing.T, s store.Store, ns kv.Namespace, key string, now time.Time) store.Revision {
	t.Helper()
	v, err := s.GetKey(ctx, ns.Org, ns.ID, key, now)
	if err != nil {
		t.Fatalf("GetKey(%q): %v", key, err)
	}
	defer v.Close()
	return v.Revision
}

// wantPrecondition fails unless err is a *store.PreconditionError saying
// the key exists (with revision rev) or not.
func wantPrecondition(t *testing.T, what string, err error, op int, exists bool, rev store.Revision) {
	t.Helper()
	var pe *store.PreconditionError
	if !errors.As(err, &pe) || !errors.Is(err, store.ErrPrecondition) {
		t.Fatalf("%s: err = %v, want a *store.PreconditionError", what, err)
	}
	if pe.Op != op || pe.Exists != exists || exists && pe.Revision != rev {
		t.Fatalf("%s: %+v, want op %d, exists %v, revision %d", what, *pe, op, exists, rev)
	}
}

// testRevisions: every write gives the key a revision never given before,
// greater than the key's last; reads and listings report it.
func testRevisions(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	seen := map[store.Revision]string{}
	note := func(what string, r store.Revision) {
		t.Helper()
		if r == 0 {
			t.Fatalf("%s: revision 0", what)
		}
		if prev, ok := seen[r]; ok {
			t.Fatalf("%s: revision %d was given before, to %s", what, r, prev)
		}
		seen[r] = what
	}
	w1 := put(t, s, ns, "a", putValue("1"), base)
	note("first write of a", w1.Revision)
	if got := revisionOf(t, s, ns, "a", base); got != w1.Revision {
		t.Fatalf("GetKey reports revision %d, the write %d", got, w1.Revision)
	}
	w2 := put(t, s, ns, "a", putValue("1"), base) // the same bytes again
	note("second write of a", w2.Revision)
	if w2.Revision <= w1.Revision {
		t.Fatalf("rewrite got revision %d, not above %d", w2.Revision, w1.Revision)
	}
	note("write of b", put(t, s, ns, "b", putValue("x"), base).Revision)
	if _, err := s.DeleteKey(ctx, ns.Org, ns.ID, "a", base); err != nil {
		t.Fatal(err)
	}
	w3 := put(t, s, ns, "a", putValue("1"), base)
	note("re-creation of a", w3.Revision)
	if !w3.Created || w3.Revision <= w2.Revision {
		t.Fatalf("re-creation after delete: %+v, after revision %d", w3, w2.Revision)
	}
	// A batch's writes each take their own.
	res, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{
		{Kind: store.OpPut, Key: "c", Value: putValue("c")},
		{Kind: store.OpPut, Key: "c", Value: putValue("c2")},
		{Kind: store.OpIncr, Key: "n", By: 2},
	}, base)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		note(fmt.Sprintf("batch op %d", i), r.Revision)
	}
	if got := revisionOf(t, s, ns, "c", base); got != res[1].Revision {
		t.Fatalf("c has revision %d, its last write %d", got, res[1].Revision)
	}
	for _, k := range listAll(t, s, ns, "", 10, base) {
		if want := revisionOf(t, s, ns, k.Key, base); store.Revision(k.Revision) != want {
			t.Fatalf("listing shows %s at revision %d, GetKey %d", k.Key, k.Revision, want)
		}
	}
}

// testRevisionsAfterRestart: a restarted engine never gives a revision
// again.
func testRevisionsAfterRestart(t *testing.T, h Harness, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	var last store.Revision
	for i := range 5 {
		last = put(t, s, ns, fmt.Sprintf("k%d", i), putValue("v"), base).Revision
	}
	s = h.Reopen(t, s)
	defer s.Close()
	if got := revisionOf(t, s, ns, "k4", base); got != last {
		t.Fatalf("after restart k4 has revision %d, want %d", got, last)
	}
	if w := put(t, s, ns, "k0", putValue("again"), base); w.Revision <= last {
		t.Fatalf("after restart a write got revision %d, not above %d", w.Revision, last)
	}
}

// testConditionalPut: each kind of condition, held or not, and an expired
// key, which does not exist.
func testConditionalPut(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	absent := func(data string) store.PutValue { v := putValue(data); v.If = store.Condition{Absent: true}; return v }
	match := func(data string, revs ...store.Revision) store.PutValue {
		v := putValue(data)
		v.If = store.Condition{Revisions: revs}
		return v
	}
	w := put(t, s, ns, "k", absent("first"), base)
	if !w.Created {
		t.Fatalf("a put if absent of a new key: %+v", w)
	}
	_, err := s.PutKey(ctx, ns.Org, ns.ID, "k", absent("second"), base)
	wantPrecondition(t, "put if absent of an existing key", err, 0, true, w.Revision)
	_, err = s.PutKey(ctx, ns.Org, ns.ID, "k", match("third", w.Revision+1000, 7), base)
	wantPrecondition(t, "put if match of other revisions", err, 0, true, w.Revision)
	if got := mustGet(t, s, ns, "k", base); string(got.Data) != "first" {
		t.Fatalf("a failed precondition wrote %q", got.Data)
	}
	w2, err := s.PutKey(ctx, ns.Org, ns.ID, "k", match("fourth", 7, w.Revision), base)
	if err != nil || w2.Created || w2.Revision <= w.Revision {
		t.Fatalf("put if match of the current revision: %+v, %v", w2, err)
	}
	_, err = s.PutKey(ctx, ns.Org, ns.ID, "k", match("fifth", w.Revision), base)
	wantPrecondition(t, "put if match of the revision before", err, 0, true, w2.Revision)
	exists := putValue("sixth")
	exists.If.Exists = true
	if _, err := s.PutKey(ctx, ns.Org, ns.ID, "k", exists, base); err != nil {
		t.Fatalf("put if exists of an existing key: %v", err)
	}
	_, err = s.PutKey(ctx, ns.Org, ns.ID, "missing", exists, base)
	wantPrecondition(t, "put if exists of a missing key", err, 0, false, 0)
	_, err = s.PutKey(ctx, ns.Org, ns.ID, "missing", match("x", w.Revision), base)
	wantPrecondition(t, "put if match of a missing key", err, 0, false, 0)
	wantKeyNotFound(t, s, ns, "missing", base)

	// An expired key does not exist: if-absent creates, if-match fails.
	ttl := putValue("short")
	ttl.ExpiresAt = base.Add(time.Second)
	we := put(t, s, ns, "ttl", ttl, base)
	later := base.Add(2 * time.Second)
	_, err = s.PutKey(ctx, ns.Org, ns.ID, "ttl", match("x", we.Revision), later)
	wantPrecondition(t, "put if match of an expired key", err, 0, false, 0)
	if w, err := s.PutKey(ctx, ns.Org, ns.ID, "ttl", absent("new"), later); err != nil || !w.Created {
		t.Fatalf("put if absent of an expired key: %+v, %v", w, err)
	}
}

// testConcurrentConditionalPuts: of writers that all read one revision
// and write if it still holds, exactly one wins; of writers that all put
// if absent, exactly one creates.
func testConcurrentConditionalPuts(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	rev := put(t, s, ns, "k", putValue("0"), base).Revision
	const n = 16
	var wins, creates, failed int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			v := putValue(strconv.Itoa(i))
			v.If.Revisions = []store.Revision{rev}
			_, err := s.PutKey(ctx, ns.Org, ns.ID, "k", v, base)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrPrecondition):
				failed++
			default:
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			v := putValue(strconv.Itoa(i))
			v.If.Absent = true
			w, err := s.PutKey(ctx, ns.Org, ns.ID, "new", v, base)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && w.Created:
				creates++
			case errors.Is(err, store.ErrPrecondition):
				failed++
			default:
				t.Error(w, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || creates != 1 || failed != 2*n-2 {
		t.Fatalf("%d if-match wins, %d if-absent creations, %d refused; want 1, 1, %d", wins, creates, failed, 2*n-2)
	}
}

// testBatch: each op sees the ones before it; results say what each did.
func testBatch(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	wa := put(t, s, ns, "a", store.PutValue{Data: []byte("A"), ContentType: "text/x-a"}, base)
	put(t, s, ns, "e", putValue("E"), base)
	ttl := store.PutValue{Data: []byte("T"), ContentType: "text/plain", ExpiresAt: base.Add(time.Hour)}
	res, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{
		{Kind: store.OpCheck, Key: "a", If: store.Condition{Revisions: []store.Revision{wa.Revision}}},
		{Kind: store.OpCheck, Key: "b", If: store.Condition{Absent: true}},
		{Kind: store.OpGet, Key: "a"},
		{Kind: store.OpGet, Key: "b"},
		{Kind: store.OpPut, Key: "b", Value: ttl},
		{Kind: store.OpGet, Key: "b"},
		{Kind: store.OpCheck, Key: "b", If: store.Condition{Exists: true}},
		{Kind: store.OpDelete, Key: "e"},
		{Kind: store.OpDelete, Key: "never"},
		{Kind: store.OpGet, Key: "e"},
		{Kind: store.OpPut, Key: "a", Value: putValue("A2")},
	}, base)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 11 {
		t.Fatalf("%d results for 11 ops", len(res))
	}
	if g := res[2]; !g.Found || string(g.Data) != "A" || g.ContentType != "text/x-a" || g.Revision != wa.Revision {
		t.Fatalf("get of a: %+v", g)
	}
	if res[3].Found {
		t.Fatalf("get of b before its put found %q", res[3].Data)
	}
	if p := res[4]; !p.Created || p.Revision == 0 {
		t.Fatalf("put of b: %+v", p)
	}
	if g := res[5]; !g.Found || string(g.Data) != "T" || g.Revision != res[4].Revision || !g.ExpiresAt.Equal(base.Add(time.Hour)) {
		t.Fatalf("get of b after its put: %+v", g)
	}
	if !res[7].Deleted || res[8].Deleted || res[9].Found {
		t.Fatalf("deletes: %+v, %+v; get after delete %+v", res[7], res[8], res[9])
	}
	if p := res[10]; p.Created || p.Revision <= wa.Revision {
		t.Fatalf("put of a: %+v", p)
	}
	if got := mustGet(t, s, ns, "a", base); string(got.Data) != "A2" {
		t.Fatalf("a = %q after the batch", got.Data)
	}
	if got := mustGet(t, s, ns, "b", base); string(got.Data) != "T" || !got.ExpiresAt.Equal(base.Add(time.Hour)) {
		t.Fatalf("b = %+v after the batch", got)
	}
	wantKeyNotFound(t, s, ns, "e", base)
	wantKeyNotFound(t, s, ns, "b", base.Add(2*time.Hour))
	// A batch of reads only changes nothing.
	res, err = s.Apply(ctx, ns.Org, ns.ID, []store.Op{{Kind: store.OpGet, Key: "a"}, {Kind: store.OpCheck, Key: "zz", If: store.Condition{Absent: true}}}, base)
	if err != nil || !res[0].Found || string(res[0].Data) != "A2" {
		t.Fatalf("read-only batch: %+v, %v", res, err)
	}
}

// testBatchAllOrNothing: a batch that fails anywhere writes nothing, even
// what its ops before the failure wrote.
func testBatchAllOrNothing(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	w := put(t, s, ns, "a", putValue("A"), base)
	put(t, s, ns, "text", putValue("not a number"), base)
	before := usageByNS(t, s, "org-a", ns.ID, baseMonth, base.Add(time.Minute))[ns.ID]
	for _, tc := range []struct {
		name string
		ops  []store.Op
		want func(error)
	}{
		{"a failed check", []store.Op{
			{Kind: store.OpPut, Key: "x", Value: putValue("x")},
			{Kind: store.OpDelete, Key: "a"},
			{Kind: store.OpCheck, Key: "a", If: store.Condition{Exists: true}},
		}, func(err error) { wantPrecondition(t, "check after delete", err, 2, false, 0) }},
		{"a stale etag", []store.Op{
			{Kind: store.OpPut, Key: "a", Value: putValue("B")},
			{Kind: store.OpCheck, Key: "a", If: store.Condition{Revisions: []store.Revision{w.Revision}}},
			{Kind: store.OpPut, Key: "y", Value: putValue("y")},
		}, func(err error) {
			var pe *store.PreconditionError
			if !errors.As(err, &pe) || pe.Op != 1 || !pe.Exists || pe.Revision == w.Revision {
				t.Fatalf("check after put: %v %+v", err, pe)
			}
		}},
		{"an incr of text", []store.Op{
			{Kind: store.OpPut, Key: "x", Value: putValue("x")},
			{Kind: store.OpIncr, Key: "text", By: 1},
		}, func(err error) {
			var oe *store.OpError
			if !errors.As(err, &oe) || oe.Op != 1 || !errors.Is(err, store.ErrNotInteger) {
				t.Fatalf("incr of text: %v", err)
			}
		}},
	} {
		_, err := s.Apply(ctx, ns.Org, ns.ID, tc.ops, base)
		tc.want(err)
		if got := mustGet(t, s, ns, "a", base); string(got.Data) != "A" {
			t.Fatalf("%s: a = %q", tc.name, got.Data)
		}
		wantKeyNotFound(t, s, ns, "x", base)
		wantKeyNotFound(t, s, ns, "y", base)
		if got := revisionOf(t, s, ns, "a", base); got != w.Revision {
			t.Fatalf("%s: a's revision moved to %d", tc.name, got)
		}
	}
	after := usageByNS(t, s, "org-a", ns.ID, baseMonth, base.Add(time.Minute))[ns.ID]
	if after.UsageCounts != before.UsageCounts || after.Bytes != before.Bytes {
		t.Fatalf("failed batches counted: before %+v, after %+v", before, after)
	}
}

// testBatchIncr: a missing or expired key counts as 0; the sum is stored
// as decimal text/plain; overflow and non-integers are refused.
func testBatchIncr(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	incr := func(key string, by int64, now time.Time) (store.Result, error) {
		res, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{{Kind: store.OpIncr, Key: key, By: by}}, now)
		if err != nil {
			return store.Result{}, err
		}
		return res[0], nil
	}
	r, err := incr("n", 5, base)
	if err != nil || r.Int != 5 || !r.Created {
		t.Fatalf("incr of a missing key: %+v, %v", r, err)
	}
	r, err = incr("n", -7, base)
	if err != nil || r.Int != -2 || r.Created {
		t.Fatalf("incr by -7: %+v, %v", r, err)
	}
	if got := mustGet(t, s, ns, "n", base); string(got.Data) != "-2" || got.ContentType != store.CounterContentType {
		t.Fatalf("stored counter: %q %q", got.Data, got.ContentType)
	}
	res, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{{Kind: store.OpIncr, Key: "m", By: 1}, {Kind: store.OpIncr, Key: "m", By: 1}, {Kind: store.OpGet, Key: "m"}}, base)
	if err != nil || res[1].Int != 2 || string(res[2].Data) != "2" {
		t.Fatalf("two incrs in one batch: %+v, %v", res, err)
	}
	// An incr keeps the expiry of a live key; an expired one counts as 0.
	ttl := store.PutValue{Data: []byte("41"), ContentType: "text/plain", ExpiresAt: base.Add(time.Minute)}
	put(t, s, ns, "t", ttl, base)
	if r, err := incr("t", 1, base); err != nil || r.Int != 42 {
		t.Fatalf("incr of a live key with a TTL: %+v, %v", r, err)
	}
	if got := mustGet(t, s, ns, "t", base); !got.ExpiresAt.Equal(base.Add(time.Minute)) {
		t.Fatalf("incr changed the expiry to %v", got.ExpiresAt)
	}
	if r, err := incr("t", 1, base.Add(2*time.Minute)); err != nil || r.Int != 1 || !r.Created {
		t.Fatalf("incr of an expired key: %+v, %v", r, err)
	}
	for _, tc := range []struct {
		value string
		by    int64
		want  error
	}{
		{"9223372036854775807", 1, store.ErrOverflow},
		{"-9223372036854775808", -1, store.ErrOverflow},
		{"1", math.MaxInt64, store.ErrOverflow},
		{"12.5", 1, store.ErrNotInteger},
		{" 12", 1, store.ErrNotInteger},
		{"+12", 1, store.ErrNotInteger},
		{"", 1, store.ErrNotInteger},
		{"99999999999999999999", 1, store.ErrNotInteger},
		{"0x10", 1, store.ErrNotInteger},
	} {
		put(t, s, ns, "bad", putValue(tc.value), base)
		if _, err := incr("bad", tc.by, base); !errors.Is(err, tc.want) {
			t.Fatalf("incr of %q by %d: %v, want %v", tc.value, tc.by, err, tc.want)
		}
		if got := mustGet(t, s, ns, "bad", base); string(got.Data) != tc.value {
			t.Fatalf("a refused incr changed %q to %q", tc.value, got.Data)
		}
	}
	if r, err := incr("big", math.MinInt64, base); err != nil || r.Int != math.MinInt64 {
		t.Fatalf("incr to the smallest int64: %+v, %v", r, err)
	}
}

// testBatchErrors: the namespace checks, the bounds of a batch and of its
// reads.
func testBatchErrors(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	one := []store.Op{{Kind: store.OpPut, Key: "k", Value: putValue("v")}}
	_, err := s.Apply(ctx, "org-b", ns.ID, one, base)
	wantIs(t, "a batch on another organization's namespace", err, store.ErrNamespaceNotFound)
	_, err = s.Apply(ctx, "org-a", kv.NewID(), one, base)
	wantIs(t, "a batch on a missing namespace", err, store.ErrNamespaceNotFound)
	pending := newNamespace(t, s, "org-a", "pending", base)
	_, err = s.Apply(ctx, "org-a", pending.ID, one, base)
	wantNotReady(t, "a batch on a pending namespace", err, kv.StatusPending)
	_, err = s.Apply(ctx, "org-a", ns.ID, nil, base)
	wantIs(t, "an empty batch", err, store.ErrInvalidArgument)
	_, err = s.Apply(ctx, "org-a", ns.ID, make([]store.Op, store.MaxBatchOps+1), base)
	wantIs(t, "a batch over the limit", err, store.ErrInvalidArgument)
	wantKeyNotFound(t, s, ns, "k", base)

	// Gets that would return more than MaxBatchReadBytes.
	big := make([]byte, kv.MaxValueSize)
	var gets []store.Op
	for i := range store.MaxBatchReadBytes/kv.MaxValueSize + 1 {
		key := fmt.Sprintf("big%02d", i)
		put(t, s, ns, key, store.PutValue{Data: big, ContentType: kv.DefaultContentType}, base)
		gets = append(gets, store.Op{Kind: store.OpGet, Key: key})
	}
	_, err = s.Apply(ctx, "org-a", ns.ID, gets, base)
	wantIs(t, "gets over the read limit", err, store.ErrBatchTooLarge)
	if _, err := s.Apply(ctx, "org-a", ns.ID, gets[1:], base); err != nil {
		t.Fatalf("gets at the read limit: %v", err)
	}
}

// testBatchUsage: a batch counts a write per put and incr, a delete per
// removal, and the change of stored bytes, as single-key calls would.
func testBatchUsage(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	put(t, s, ns, "gone", putValue("12345"), base) // 4+5 bytes
	ttl := putValue("xx")
	ttl.ExpiresAt = base.Add(time.Second)
	put(t, s, ns, "old", ttl, base) // 3+2 bytes, expired at base+1s
	at := base.Add(10 * time.Second)
	_, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{
		{Kind: store.OpPut, Key: "a", Value: putValue("abc")},  // +4
		{Kind: store.OpPut, Key: "a", Value: putValue("abcd")}, // +1
		{Kind: store.OpIncr, Key: "n", By: 10},                 // +3
		{Kind: store.OpDelete, Key: "gone"},                    // -9
		{Kind: store.OpDelete, Key: "missing"},
		{Kind: store.OpPut, Key: "old", Value: putValue("y")}, // +4 (the old value ended at its expiry)
		{Kind: store.OpGet, Key: "a"},
		{Kind: store.OpCheck, Key: "a", If: store.Condition{Exists: true}},
	}, at)
	if err != nil {
		t.Fatal(err)
	}
	u := usageByNS(t, s, "org-a", ns.ID, baseMonth, at)[ns.ID]
	// Before: two puts (2 writes). The batch: 4 writes, 1 delete; reads
	// are the caller's to count.
	if u.UsageCounts != (store.UsageCounts{Writes: 6, Deletes: 1}) {
		t.Fatalf("counts = %+v", u.UsageCounts)
	}
	if want := int64(len("a") + 4 + len("n") + 2 + len("old") + 1); u.Bytes != want {
		t.Fatalf("stored bytes = %d, want %d", u.Bytes, want)
	}
}

// testConcurrentBatches: concurrent incrs and read-modify-write batches
// of one key lose nothing.
func testConcurrentBatches(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{{Kind: store.OpIncr, Key: "hits", By: 1}, {Kind: store.OpIncr, Key: "other", By: 2}}, base); err != nil {
					t.Error(err)
					return
				}
				// Compare-and-swap through a check of the revision read.
				for {
					res, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{{Kind: store.OpGet, Key: "cas"}}, base)
					if err != nil {
						t.Error(err)
						return
					}
					n, cond := 0, store.Condition{Absent: true}
					if res[0].Found {
						n, _ = strconv.Atoi(string(res[0].Data))
						cond = store.Condition{Revisions: []store.Revision{res[0].Revision}}
					}
					_, err = s.Apply(ctx, ns.Org, ns.ID, []store.Op{
						{Kind: store.OpCheck, Key: "cas", If: cond},
						{Kind: store.OpPut, Key: "cas", Value: putValue(strconv.Itoa(n + 1))},
					}, base)
					if err == nil {
						break
					}
					if !errors.Is(err, store.ErrPrecondition) {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	for key, want := range map[string]string{"hits": "200", "other": "400", "cas": "200"} {
		if got := mustGet(t, s, ns, key, base); string(got.Data) != want {
			t.Errorf("%s = %q, want %s", key, got.Data, want)
		}
	}
}

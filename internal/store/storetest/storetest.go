// Package storetest is the conformance suite every store.Store engine must
// pass, in the manner of go-cloud's drivertest: an engine's tests call Run
// with a Harness that opens the engine on fresh data, reopens it on the
// same data (a restart) and, where the engine allows, opens a second
// handle on it (a second process):
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Funcs{
//			OpenFunc: func(t *testing.T) store.Store { return openOn(t, t.TempDir()) },
//			ReopenFunc: ...,
//		})
//	}
//
// The suite pins the contract written in the doc comments of package
// store, edge cases included: every error sentinel, every case the
// contract decides, a context that is done, a restart, and two handles at
// once. Every time is passed to the store explicitly, from a fixed base, so
// no case sleeps or depends on the clock.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// Harness opens an engine for the suite.
type Harness interface {
	// Open returns a store on fresh, empty data; the suite closes it.
	Open(t *testing.T) store.Store
	// Reopen closes s, which Open (or Reopen) returned, and opens the same
	// data again, as a restarted process would.
	Reopen(t *testing.T, s store.Store) store.Store
	// Second returns another handle on the data of s, as a second process
	// sharing the engine would have, or nil when the engine admits one
	// process at a time. The suite closes it.
	Second(t *testing.T, s store.Store) store.Store
}

// Funcs is a Harness made of functions; a nil SecondFunc means one
// process at a time.
type Funcs struct {
	OpenFunc   func(t *testing.T) store.Store
	ReopenFunc func(t *testing.T, s store.Store) store.Store
	SecondFunc func(t *testing.T, s store.Store) store.Store
}

func (f Funcs) Open(t *testing.T) store.Store { return f.OpenFunc(t) }
func (f Funcs) Reopen(t *testing.T, s store.Store) store.Store {
	return f.ReopenFunc(t, s)
}
func (f Funcs) Second(t *testing.T, s store.Store) store.Store {
	if f.SecondFunc == nil {
		return nil
	}
	return f.SecondFunc(t, s)
}

// base is the suite's "now"; cases move time by offsets from it.
var base = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

// setupTime is when setup claims lifecycle jobs: far enough before base
// that any lease setup takes has expired by the time a case runs.
var setupTime = base.Add(-24 * time.Hour)

// Run runs every case of the suite as a subtest of t. Cases run in parallel
// with each other, each on its own store; Run returns when all have
// finished.
func Run(t *testing.T, h Harness) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Tokens", testTokens},
		{"TokenManyRevocations", testTokenManyRevocations},
		{"CreateGetNamespace", testCreateGetNamespace},
		{"NamespaceNameUniqueness", testNamespaceNameUniqueness},
		{"ListNamespaces", testListNamespaces},
		{"MarkDeleting", testMarkDeleting},
		{"CompleteProvision", testCompleteProvision},
		{"ClaimLifecycleJob", testClaimLifecycleJob},
		{"ClaimLifecycleJobConcurrent", testClaimLifecycleJobConcurrent},
		{"PurgeNamespace", testPurgeNamespace},
		{"PutGetDeleteKey", testPutGetDeleteKey},
		{"MissingKeyAndNamespace", testMissingKeyAndNamespace},
		{"Values", testValues},
		{"ContentType", testContentType},
		{"PathLikeKeys", testPathLikeKeys},
		{"ListKeys", testListKeys},
		{"ListKeysLimits", testListKeysLimits},
		{"TTL", testTTL},
		{"SweepExpired", testSweepExpired},
		{"ConcurrentFirstWrites", testConcurrentFirstWrites},
		{"TenantIsolation", testTenantIsolation},
		{"NamespaceIsolation", testNamespaceIsolation},
		{"NotReady", testNotReady},
		{"UsageCounts", testUsageCounts},
		{"UsageStorage", testUsageStorage},
		{"InvalidArguments", testInvalidArguments},
		{"Revisions", testRevisions},
		{"ConditionalPut", testConditionalPut},
		{"ConcurrentConditionalPuts", testConcurrentConditionalPuts},
		{"Batch", testBatch},
		{"BatchAllOrNothing", testBatchAllOrNothing},
		{"BatchIncr", testBatchIncr},
		{"BatchErrors", testBatchErrors},
		{"BatchUsage", testBatchUsage},
		{"ConcurrentBatches", testConcurrentBatches},
		{"Changes", testChanges},
		{"ChangesFailedWrites", testChangesFailedWrites},
		{"ChangesExpire", testChangesExpire},
		{"ChangesNamespace", testChangesNamespace},
		{"CompactChanges", testCompactChanges},
		{"Snapshot", testSnapshot},
		{"ChangesTail", testChangesTail},
		{"SnapshotUnderWrites", testSnapshotUnderWrites},
		{"ContextDone", testContextDone},
		{"AfterClose", testAfterClose},
	}
	harnessed := []struct {
		name string
		fn   func(t *testing.T, h Harness, s store.Store)
	}{
		{"Restart", testRestart},
		{"TwoHandles", testTwoHandles},
		{"RevisionsAfterRestart", testRevisionsAfterRestart},
		{"ChangesTwoHandles", testChangesTwoHandles},
		{"ChangesAfterRestart", testChangesAfterRestart},
	}
	// The group makes Run wait for its parallel cases, so a caller may
	// release what the harness uses as soon as Run returns.
	t.Run("storetest", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				s := h.Open(t)
				t.Cleanup(func() { s.Close() })
				c.fn(t, s)
			})
		}
		for _, c := range harnessed {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				s := h.Open(t)
				c.fn(t, h, s)
			})
		}
	})
}

// ---- helpers

var ctx = context.Background()

// newNamespace creates a pending namespace of org created at.
func newNamespace(t *testing.T, s store.Store, org, name string, at time.Time) kv.Namespace {
	t.Helper()
	ns := kv.Namespace{ID: kv.NewID(), Org: org, Name: name, Status: kv.StatusPending, CreatedAt: at, UpdatedAt: at}
	if err := s.CreateNamespace(ctx, ns); err != nil {
		t.Fatalf("CreateNamespace(%s/%s): %v", org, name, err)
	}
	return ns
}

// provision moves a pending namespace to status to as the lifecycle worker
// does: claim, then complete as the holder.
func provision(t *testing.T, s store.Store, ns kv.Namespace, to kv.Status) kv.Namespace {
	t.Helper()
	holder := "storetest-setup-" + ns.ID.String()
	// Claim until this namespace comes up. Other jobs claimed on the way
	// stay leased only until long before base.
	for range 100 {
		got, ok, err := s.ClaimLifecycleJob(ctx, holder, setupTime, time.Minute)
		if err != nil {
			t.Fatalf("ClaimLifecycleJob: %v", err)
		}
		if !ok || got.ID == ns.ID {
			break
		}
	}
	if err := s.CompleteProvision(ctx, ns.ID, holder, to, setupTime); err != nil {
		t.Fatalf("CompleteProvision(%s, %s): %v", ns.ID, to, err)
	}
	got, err := s.GetNamespace(ctx, ns.Org, ns.ID)
	if err != nil {
		t.Fatalf("GetNamespace after CompleteProvision: %v", err)
	}
	if got.Status != to {
		t.Fatalf("status after CompleteProvision(%s) = %s", to, got.Status)
	}
	return got
}

// readyNamespace creates a provision_ok namespace.
func readyNamespace(t *testing.T, s store.Store, org, name string) kv.Namespace {
	t.Helper()
	return provision(t, s, newNamespace(t, s, org, name, base), kv.StatusProvisionOK)
}

func putValue(data string) store.PutValue {
	return store.PutValue{Data: []byte(data), ContentType: kv.DefaultContentType}
}

func mustPut(t *testing.T, s store.Store, ns kv.Namespace, key string, v store.PutValue, now time.Time) bool {
	t.Helper()
	w, err := s.PutKey(ctx, ns.Org, ns.ID, key, v, now)
	if err != nil {
		t.Fatalf("PutKey(%q): %v", key, err)
	}
	return w.Created
}

// mustGet returns a copy of the value's fields and closes it.
func mustGet(t *testing.T, s store.Store, ns kv.Namespace, key string, now time.Time) store.Value {
	t.Helper()
	v, err := s.GetKey(ctx, ns.Org, ns.ID, key, now)
	if err != nil {
		t.Fatalf("GetKey(%q) at %v: %v", key, now.Sub(base), err)
	}
	c := store.Value{Data: bytes.Clone(v.Data), ContentType: v.ContentType, UpdatedAt: v.UpdatedAt, ExpiresAt: v.ExpiresAt}
	v.Close()
	v.Close() // Close is safe more than once
	return c
}

// wantNotReady fails unless err is a *store.NotReadyError for status.
func wantNotReady(t *testing.T, what string, err error, status kv.Status) {
	t.Helper()
	var nr *store.NotReadyError
	if !errors.As(err, &nr) || nr.Status != status {
		t.Fatalf("%s: err = %v, want a *store.NotReadyError for %s", what, err, status)
	}
}

// wantIs fails unless errors.Is(err, target).
func wantIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want one matching %v", what, err, target)
	}
}

func wantKeyNotFound(t *testing.T, s store.Store, ns kv.Namespace, key string, now time.Time) {
	t.Helper()
	v, err := s.GetKey(ctx, ns.Org, ns.ID, key, now)
	if err == nil {
		v.Close()
		t.Fatalf("GetKey(%q) at %v found %q, want not found", key, now.Sub(base), v.Data)
	}
	wantIs(t, fmt.Sprintf("GetKey(%q)", key), err, store.ErrKeyNotFound)
}

func sameNamespace(t *testing.T, what string, got, want kv.Namespace) {
	t.Helper()
	if got.ID != want.ID || got.Org != want.Org || got.Name != want.Name || got.Status != want.Status ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// listAll lists every live key of ns with prefix at now, page by page.
func listAll(t *testing.T, s store.Store, ns kv.Namespace, prefix string, limit int, now time.Time) []kv.KeyInfo {
	t.Helper()
	var all []kv.KeyInfo
	after := ""
	for {
		page, more, err := s.ListKeys(ctx, ns.Org, ns.ID, prefix, after, limit, now)
		if err != nil {
			t.Fatalf("ListKeys(prefix %q, after %q, limit %d): %v", prefix, after, limit, err)
		}
		if len(page) > limit {
			t.Fatalf("ListKeys(limit %d) returned %d keys", limit, len(page))
		}
		all = append(all, page...)
		if !more {
			return all
		}
		if len(page) == 0 {
			t.Fatalf("ListKeys(prefix %q, after %q) returned no keys but more", prefix, after)
		}
		after = page[len(page)-1].Key
	}
}

func keyNames(infos []kv.KeyInfo) []string {
	names := make([]string, len(infos))
	for i, k := range infos {
		names[i] = k.Key
	}
	return names
}

// ---- tokens

// ---- namespaces

func testCreateGetNamespace(t *testing.T, s store.Store) {
	ns := newNamespace(t, s, "org-a", "my-cache", base.Add(123*time.Millisecond))
	got, err := s.GetNamespace(ctx, "org-a", ns.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameNamespace(t, "GetNamespace", got, ns)

	_, err = s.GetNamespace(ctx, "org-b", ns.ID)
	wantIs(t, "GetNamespace(other org)", err, store.ErrNamespaceNotFound)
	_, err = s.GetNamespace(ctx, "org-a", kv.NewID())
	wantIs(t, "GetNamespace(missing)", err, store.ErrNamespaceNotFound)
}

func testNamespaceNameUniqueness(t *testing.T, s store.Store) {
	a := readyNamespace(t, s, "org-a", "dup")
	err := s.CreateNamespace(ctx, kv.Namespace{ID: kv.NewID(), Org: "org-a", Name: "dup", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base})
	wantIs(t, "CreateNamespace(same name, same org)", err, store.ErrNameTaken)
	b := newNamespace(t, s, "org-b", "dup", base) // another org may use the name
	if b.ID == a.ID {
		t.Fatal("ids collide")
	}

	if _, err := s.MarkDeleting(ctx, "org-a", a.ID, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	err = s.CreateNamespace(ctx, kv.Namespace{ID: kv.NewID(), Org: "org-a", Name: "dup", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base})
	wantIs(t, "CreateNamespace(name of a deleting namespace)", err, store.ErrNameTaken)

	if err := s.PurgeNamespace(ctx, a.ID, "worker"); err != nil {
		t.Fatal(err)
	}
	c := newNamespace(t, s, "org-a", "dup", base.Add(2*time.Second)) // freed by the purge
	if got, err := s.GetNamespace(ctx, "org-a", c.ID); err != nil || got.Name != "dup" {
		t.Fatalf("GetNamespace(recreated) = %+v, %v", got, err)
	}
	if _, err := s.GetNamespace(ctx, "org-b", b.ID); err != nil {
		t.Fatalf("the other org's namespace: %v", err)
	}
}

func testListNamespaces(t *testing.T, s store.Store) {
	// Created out of order; two share a creation time and sort by id.
	var want []kv.Namespace
	for i, off := range []time.Duration{3, 1, 5, 2, 5} {
		want = append(want, newNamespace(t, s, "org-a", fmt.Sprintf("ns-%d", i), base.Add(off*time.Second)))
	}
	newNamespace(t, s, "org-b", "ns-0", base)
	newNamespace(t, s, "org-b", "other", base.Add(-time.Hour))
	// Status does not matter: a deleting namespace is listed until purged.
	d, err := s.MarkDeleting(ctx, "org-a", want[0].ID, base.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want[0] = d
	sort.Slice(want, func(i, j int) bool {
		if !want[i].CreatedAt.Equal(want[j].CreatedAt) {
			return want[i].CreatedAt.Before(want[j].CreatedAt)
		}
		return bytes.Compare(want[i].ID[:], want[j].ID[:]) < 0
	})

	for offset := 0; offset <= len(want)+1; offset++ {
		for limit := 1; limit <= len(want)+1; limit++ {
			page, total, err := s.ListNamespaces(ctx, "org-a", offset, limit)
			if err != nil {
				t.Fatal(err)
			}
			if total != len(want) {
				t.Fatalf("ListNamespaces(%d, %d) total = %d, want %d", offset, limit, total, len(want))
			}
			exp := want[min(offset, len(want)):min(offset+limit, len(want))]
			if len(page) != len(exp) {
				t.Fatalf("ListNamespaces(%d, %d) returned %d namespaces, want %d", offset, limit, len(page), len(exp))
			}
			for i := range page {
				sameNamespace(t, fmt.Sprintf("ListNamespaces(%d, %d)[%d]", offset, limit, i), page[i], exp[i])
			}
		}
	}
	if page, total, err := s.ListNamespaces(ctx, "org-b", 0, 10); err != nil || total != 2 || len(page) != 2 || page[0].Name != "other" {
		t.Fatalf("ListNamespaces(org-b) = %+v, %d, %v; want other, ns-0", page, total, err)
	}
	if page, total, err := s.ListNamespaces(ctx, "org-none", 0, 10); err != nil || total != 0 || len(page) != 0 {
		t.Fatalf("ListNamespaces(org with none) = %+v, %d, %v", page, total, err)
	}
}

func testMarkDeleting(t *testing.T, s store.Store) {
	ready := readyNamespace(t, s, "org-a", "ready")
	failed := provision(t, s, newNamespace(t, s, "org-a", "failed", base), kv.StatusProvisionFailed)
	pending := newNamespace(t, s, "org-a", "pending", base)

	_, err := s.MarkDeleting(ctx, "org-b", ready.ID, base)
	wantIs(t, "MarkDeleting(other org)", err, store.ErrNamespaceNotFound)
	_, err = s.MarkDeleting(ctx, "org-a", kv.NewID(), base)
	wantIs(t, "MarkDeleting(missing)", err, store.ErrNamespaceNotFound)

	for _, ns := range []kv.Namespace{ready, failed, pending} {
		at := base.Add(time.Minute + 250*time.Millisecond)
		got, err := s.MarkDeleting(ctx, "org-a", ns.ID, at)
		if err != nil {
			t.Fatalf("MarkDeleting(%s): %v", ns.Status, err)
		}
		want := ns
		want.Status, want.UpdatedAt = kv.StatusDeleting, at
		sameNamespace(t, "MarkDeleting result", got, want)
		got, err = s.GetNamespace(ctx, "org-a", ns.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameNamespace(t, "GetNamespace after MarkDeleting", got, want)

		_, err = s.MarkDeleting(ctx, "org-a", ns.ID, at.Add(time.Second))
		wantIs(t, "MarkDeleting twice", err, store.ErrAlreadyDeleting)
	}
}

func testCompleteProvision(t *testing.T, s store.Store) {
	for _, to := range []kv.Status{kv.StatusProvisionOK, kv.StatusProvisionFailed} {
		ns := newNamespace(t, s, "org-a", strings.ReplaceAll(string(to), "_", "-"), base)
		claimed, ok, err := s.ClaimLifecycleJob(ctx, "w1", base, time.Minute)
		if err != nil || !ok || claimed.ID != ns.ID {
			t.Fatalf("ClaimLifecycleJob = %+v, %v, %v; want %s", claimed, ok, err, ns.ID)
		}
		at := base.Add(1500 * time.Millisecond)
		if err := s.CompleteProvision(ctx, ns.ID, "w1", to, at); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetNamespace(ctx, "org-a", ns.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := ns
		want.Status, want.UpdatedAt = to, at
		sameNamespace(t, "after CompleteProvision", got, want)
	}

	// Marked deleting while provisioning: completing changes nothing.
	ns := newNamespace(t, s, "org-a", "deleted-meanwhile", base)
	if _, ok, err := s.ClaimLifecycleJob(ctx, "w2", base, time.Minute); err != nil || !ok {
		t.Fatalf("ClaimLifecycleJob = %v, %v", ok, err)
	}
	del, err := s.MarkDeleting(ctx, "org-a", ns.ID, base.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteProvision(ctx, ns.ID, "w2", kv.StatusProvisionOK, base.Add(2*time.Second)); err != nil {
		t.Fatalf("CompleteProvision after MarkDeleting: %v", err)
	}
	got, err := s.GetNamespace(ctx, "org-a", ns.ID)
	if err != nil {
		t.Fatal(err)
	}
	sameNamespace(t, "CompleteProvision after MarkDeleting", got, del)

	if err := s.CompleteProvision(ctx, kv.NewID(), "w2", kv.StatusProvisionOK, base); err != nil {
		t.Fatalf("CompleteProvision(missing namespace) = %v, want nil", err)
	}
}

func testClaimLifecycleJob(t *testing.T, s store.Store) {
	if ns, ok, err := s.ClaimLifecycleJob(ctx, "a", base, time.Minute); err != nil || ok {
		t.Fatalf("ClaimLifecycleJob on an empty store = %+v, %v, %v", ns, ok, err)
	}
	ready := readyNamespace(t, s, "org-a", "ready")
	provision(t, s, newNamespace(t, s, "org-a", "failed", base), kv.StatusProvisionFailed)
	if ns, ok, err := s.ClaimLifecycleJob(ctx, "a", base, time.Minute); err != nil || ok {
		t.Fatalf("ClaimLifecycleJob with only provision_ok and provision_failed namespaces = %+v, %v, %v", ns, ok, err)
	}

	const lease = 30 * time.Second
	p := newNamespace(t, s, "org-a", "pending", base)
	claim := func(holder string, at time.Duration) (kv.Namespace, bool) {
		t.Helper()
		ns, ok, err := s.ClaimLifecycleJob(ctx, holder, base.Add(at), lease)
		if err != nil {
			t.Fatalf("ClaimLifecycleJob(%s, +%v): %v", holder, at, err)
		}
		return ns, ok
	}
	if ns, ok := claim("a", 0); !ok || ns.ID != p.ID || ns.Status != kv.StatusPending || ns.Name != "pending" {
		t.Fatalf("claim = %+v, %v; want the pending namespace", ns, ok)
	}
	if ns, ok := claim("b", lease-time.Second); ok {
		t.Fatalf("claimed %+v while a's lease is live", ns)
	}
	if ns, ok := claim("b", lease); !ok || ns.ID != p.ID {
		t.Fatalf("claim when a's lease expired = %+v, %v; want the pending namespace", ns, ok)
	}
	if ns, ok := claim("a", lease+time.Second); ok {
		t.Fatalf("claimed %+v while b's lease is live", ns)
	}
	if err := s.CompleteProvision(ctx, p.ID, "b", kv.StatusProvisionOK, base.Add(lease+2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ns, ok := claim("c", 10*lease); ok {
		t.Fatalf("claimed %+v after provisioning completed", ns)
	}

	// A deleting namespace is a job too.
	if _, err := s.MarkDeleting(ctx, "org-a", ready.ID, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if ns, ok := claim("c", 10*lease); !ok || ns.ID != ready.ID || ns.Status != kv.StatusDeleting {
		t.Fatalf("claim = %+v, %v; want the deleting namespace", ns, ok)
	}
	if ns, ok := claim("d", 11*lease-time.Nanosecond); ok {
		t.Fatalf("claimed %+v while c's lease is live", ns)
	}
	if err := s.PurgeNamespace(ctx, ready.ID, "c"); err != nil {
		t.Fatal(err)
	}
	if ns, ok := claim("d", 100*lease); ok {
		t.Fatalf("claimed %+v after the purge", ns)
	}
}

func testClaimLifecycleJobConcurrent(t *testing.T, s store.Store) {
	want := map[kv.ID]bool{}
	for i := range 3 {
		want[newNamespace(t, s, "org-a", fmt.Sprintf("p%d", i), base).ID] = true
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		got    = map[kv.ID]string{}
		start  = make(chan struct{})
		errs   []error
		claims int
	)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			holder := fmt.Sprintf("h%d", i)
			ns, ok, err := s.ClaimLifecycleJob(ctx, holder, base, time.Minute)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if ok {
				claims++
				if prev, dup := got[ns.ID]; dup {
					errs = append(errs, fmt.Errorf("namespace %s leased to both %s and %s", ns.ID, prev, holder))
				}
				got[ns.ID] = holder
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if claims > len(want) {
		t.Fatalf("%d claims succeeded for %d jobs", claims, len(want))
	}
	// Concurrent claimers may miss jobs others hold locked for a moment,
	// but a later claim finds whatever is left.
	for {
		ns, ok, err := s.ClaimLifecycleJob(ctx, "late", base, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if _, dup := got[ns.ID]; dup {
			t.Fatalf("namespace %s claimed again under a live lease", ns.ID)
		}
		got[ns.ID] = "late"
	}
	for id := range want {
		if got[id] == "" {
			t.Fatalf("job %s never claimed", id)
		}
	}
}

func testPurgeNamespace(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "big")
	other := readyNamespace(t, s, "org-a", "other")
	mustPut(t, s, other, "k", store.PutValue{Data: []byte("v"), ContentType: "text/plain", ExpiresAt: base.Add(time.Hour)}, base)

	// Purging a namespace that is not deleting leaves it alone, and says so.
	mustPut(t, s, ns, "first", putValue("1"), base)
	wantIs(t, "PurgeNamespace of a provision_ok namespace", s.PurgeNamespace(ctx, ns.ID, "worker"), store.ErrNotDeleting)
	if got, err := s.GetNamespace(ctx, "org-a", ns.ID); err != nil || got.Status != kv.StatusProvisionOK {
		t.Fatalf("PurgeNamespace of a provision_ok namespace removed or changed it: %+v, %v", got, err)
	}
	mustGet(t, s, ns, "first", base)

	const n = 5000
	keys := make(chan string)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				v := putValue("value-" + k)
				if strings.HasSuffix(k, "7") {
					v.ExpiresAt = base.Add(time.Hour)
				}
				if _, err := s.PutKey(ctx, ns.Org, ns.ID, k, v, base); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range n - 1 {
		keys <- fmt.Sprintf("k/%05d", i)
	}
	close(keys)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if all := listAll(t, s, ns, "", kv.MaxListLimit, base); len(all) != n {
		t.Fatalf("listed %d keys, want %d", len(all), n)
	}

	if _, err := s.MarkDeleting(ctx, "org-a", ns.ID, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.PurgeNamespace(ctx, ns.ID, "worker"); err != nil {
		t.Fatalf("PurgeNamespace: %v", err)
	}
	_, err := s.GetNamespace(ctx, "org-a", ns.ID)
	wantIs(t, "GetNamespace after purge", err, store.ErrNamespaceNotFound)
	_, err = s.GetKey(ctx, "org-a", ns.ID, "first", base)
	wantIs(t, "GetKey after purge", err, store.ErrNamespaceNotFound)
	if err := s.PurgeNamespace(ctx, ns.ID, "worker"); err != nil {
		t.Fatalf("PurgeNamespace again = %v, want nil", err)
	}
	if err := s.PurgeNamespace(ctx, kv.NewID(), "worker"); err != nil {
		t.Fatalf("PurgeNamespace(missing) = %v, want nil", err)
	}
	if _, total, err := s.ListNamespaces(ctx, "org-a", 0, 10); err != nil || total != 1 {
		t.Fatalf("ListNamespaces after purge: total %d, %v; want 1", total, err)
	}

	// The purged namespace's expiry entries went with it: only the other
	// namespace's key is left to sweep.
	if got, err := s.SweepExpired(ctx, base.Add(2*time.Hour), 10*n); err != nil || got != 1 {
		t.Fatalf("SweepExpired after purge = %d, %v; want 1 (the other namespace's key)", got, err)
	}

	// The name is free, and its new namespace starts empty.
	again := readyNamespace(t, s, "org-a", "big")
	if all := listAll(t, s, again, "", kv.MaxListLimit, base); len(all) != 0 {
		t.Fatalf("a new namespace with the purged one's name lists %d keys", len(all))
	}
	wantKeyNotFound(t, s, again, "first", base)
}

// ---- keys

func testPutGetDeleteKey(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	wantKeyNotFound(t, s, ns, "user/123", base)

	at := base.Add(123456789 * time.Nanosecond) // nanoseconds survive
	if !mustPut(t, s, ns, "user/123", store.PutValue{Data: []byte("one"), ContentType: "text/plain"}, at) {
		t.Fatal("first PutKey: created = false")
	}
	v := mustGet(t, s, ns, "user/123", at)
	if string(v.Data) != "one" || v.ContentType != "text/plain" || !v.UpdatedAt.Equal(at) || !v.ExpiresAt.IsZero() {
		t.Fatalf("GetKey = %q %q updated %v expires %v", v.Data, v.ContentType, v.UpdatedAt, v.ExpiresAt)
	}

	at2 := at.Add(time.Second + time.Nanosecond)
	if mustPut(t, s, ns, "user/123", putValue("two"), at2) {
		t.Fatal("second PutKey: created = true")
	}
	v = mustGet(t, s, ns, "user/123", at2)
	if string(v.Data) != "two" || v.ContentType != kv.DefaultContentType || !v.UpdatedAt.Equal(at2) {
		t.Fatalf("GetKey after replace = %q %q %v", v.Data, v.ContentType, v.UpdatedAt)
	}
	if list := listAll(t, s, ns, "", 10, at2); len(list) != 1 || list[0].Key != "user/123" || list[0].Size != 3 || !list[0].UpdatedAt.Equal(at2) {
		t.Fatalf("ListKeys = %+v", list)
	}

	if deleted, err := s.DeleteKey(ctx, "org-a", ns.ID, "user/123", at2); err != nil || !deleted {
		t.Fatalf("DeleteKey = %v, %v; want true, nil", deleted, err)
	}
	wantKeyNotFound(t, s, ns, "user/123", at2)
	if deleted, err := s.DeleteKey(ctx, "org-a", ns.ID, "user/123", at2); err != nil || deleted {
		t.Fatalf("DeleteKey(missing) = %v, %v; want false, nil", deleted, err)
	}
	if deleted, err := s.DeleteKey(ctx, "org-a", ns.ID, "never-there", at2); err != nil || deleted {
		t.Fatalf("DeleteKey(missing) = %v, %v; want false, nil", deleted, err)
	}
	if !mustPut(t, s, ns, "user/123", putValue("three"), at2) {
		t.Fatal("PutKey after DeleteKey: created = false")
	}
	if string(mustGet(t, s, ns, "user/123", at2).Data) != "three" {
		t.Fatal("value after re-creating")
	}
}

func testMissingKeyAndNamespace(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	missing := kv.Namespace{ID: kv.NewID(), Org: "org-a"}

	_, err := s.GetKey(ctx, "org-a", ns.ID, "nope", base)
	wantIs(t, "GetKey(missing key)", err, store.ErrKeyNotFound)

	_, err = s.GetKey(ctx, "org-a", missing.ID, "nope", base)
	wantIs(t, "GetKey(missing namespace)", err, store.ErrNamespaceNotFound)
	_, err = s.PutKey(ctx, "org-a", missing.ID, "k", putValue("v"), base)
	wantIs(t, "PutKey(missing namespace)", err, store.ErrNamespaceNotFound)
	_, err = s.DeleteKey(ctx, "org-a", missing.ID, "k", base)
	wantIs(t, "DeleteKey(missing namespace)", err, store.ErrNamespaceNotFound)
	_, _, err = s.ListKeys(ctx, "org-a", missing.ID, "", "", 10, base)
	wantIs(t, "ListKeys(missing namespace)", err, store.ErrNamespaceNotFound)
}

func testValues(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")

	// Empty values, whether Data is nil or empty.
	if !mustPut(t, s, ns, "empty", store.PutValue{Data: nil, ContentType: "text/plain"}, base) {
		t.Fatal("PutKey(nil data): created = false")
	}
	if v := mustGet(t, s, ns, "empty", base); len(v.Data) != 0 || v.ContentType != "text/plain" {
		t.Fatalf("empty value read back as %q %q", v.Data, v.ContentType)
	}
	if mustPut(t, s, ns, "empty", store.PutValue{Data: []byte{}, ContentType: "text/x-empty"}, base) {
		t.Fatal("PutKey(empty data) over a key: created = true")
	}
	if v := mustGet(t, s, ns, "empty", base); len(v.Data) != 0 || v.ContentType != "text/x-empty" {
		t.Fatalf("empty value read back as %q %q", v.Data, v.ContentType)
	}

	// The largest value, byte for byte, every byte value included.
	big := make([]byte, kv.MaxValueSize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.Uint32())
	}
	copy(big, []byte{0, 0xff, '\n', 0})
	in := bytes.Clone(big)
	mustPut(t, s, ns, "big", store.PutValue{Data: in, ContentType: kv.DefaultContentType}, base)
	// The store does not keep the caller's slice.
	for i := range in {
		in[i] = 'x'
	}
	if v := mustGet(t, s, ns, "big", base); !bytes.Equal(v.Data, big) {
		t.Fatalf("1 MiB value differs after round trip (len %d)", len(v.Data))
	}

	sizes := map[string]int64{}
	for _, k := range listAll(t, s, ns, "", 10, base) {
		sizes[k.Key] = k.Size
	}
	if sizes["empty"] != 0 || sizes["big"] != kv.MaxValueSize || len(sizes) != 2 {
		t.Fatalf("listed sizes = %v", sizes)
	}
}

func testContentType(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	long := "application/" + strings.Repeat("x", kv.MaxContentTypeLen-len("application/"))
	for i, ct := range []string{"application/json", "text/plain; charset=utf-8", long, kv.DefaultContentType, "image/png"} {
		key := fmt.Sprintf("k%d", i)
		mustPut(t, s, ns, key, store.PutValue{Data: []byte("v"), ContentType: ct}, base)
		if got := mustGet(t, s, ns, key, base).ContentType; got != ct {
			t.Fatalf("ContentType = %q, want %q", got, ct)
		}
		// Replacing a value replaces its type.
		mustPut(t, s, ns, "same", store.PutValue{Data: []byte("v"), ContentType: ct}, base)
		if got := mustGet(t, s, ns, "same", base).ContentType; got != ct {
			t.Fatalf("ContentType after replace = %q, want %q", got, ct)
		}
	}
}

// pathLikeKeys differ only by '/' or '.'; every one is distinct.
var pathLikeKeys = []string{"a//b", "a/b", "a/./b", "a/../b", "./x", "x", ".x", "../x", "trailing/", "trailing", "trailing//", "/lead", "lead", "a.b", "a..b", "..", "."}

func testPathLikeKeys(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	for i, k := range pathLikeKeys {
		if !mustPut(t, s, ns, k, putValue(fmt.Sprintf("value %d", i)), base) {
			t.Fatalf("PutKey(%q) created = false: merged with another key", k)
		}
	}
	for i, k := range pathLikeKeys {
		if got, want := string(mustGet(t, s, ns, k, base).Data), fmt.Sprintf("value %d", i); got != want {
			t.Fatalf("GetKey(%q) = %q, want %q", k, got, want)
		}
	}
	want := slices.Clone(pathLikeKeys)
	sort.Strings(want)
	if got := keyNames(listAll(t, s, ns, "", 1000, base)); !slices.Equal(got, want) {
		t.Fatalf("ListKeys =\n%q\nwant\n%q", got, want)
	}
	if _, err := s.DeleteKey(ctx, "org-a", ns.ID, "a/b", base); err != nil {
		t.Fatal(err)
	}
	wantKeyNotFound(t, s, ns, "a/b", base)
	for _, k := range []string{"a//b", "a/./b", "a/../b"} {
		mustGet(t, s, ns, k, base)
	}
}

// listKeys are chosen to sort differently bytewise than in any collation
// that ignores punctuation or case.
var listKeys = []string{
	"-", ".", "./x", "0", "9", "=", "A", "Z", "a", "a-", "a.", "a/", "a//b", "a/../b", "a/b", "a/b/c", "a0", "a=", "aA", "a_b", "aa",
	"b", "b/x", "trailing", "trailing/", "x", "z", "zz/", strings.Repeat("z", kv.MaxKeyLen),
}

func testListKeys(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	at := base.Add(7 * time.Nanosecond)
	for i, k := range listKeys {
		mustPut(t, s, ns, k, putValue(strings.Repeat("v", i)), at.Add(time.Duration(i)*time.Second))
	}
	size := map[string]int{}
	for i, k := range listKeys {
		size[k] = i
	}
	sorted := slices.Clone(listKeys)
	sort.Strings(sorted)
	now := base.Add(time.Hour)

	// Every key comes back once, in byte order, with its size and time,
	// whatever the page size.
	for _, limit := range []int{1, 2, 3, 7, len(sorted) - 1, len(sorted), len(sorted) + 1, kv.MaxListLimit} {
		all := listAll(t, s, ns, "", limit, now)
		if got := keyNames(all); !slices.Equal(got, sorted) {
			t.Fatalf("limit %d: ListKeys =\n%q\nwant\n%q", limit, got, sorted)
		}
		for _, k := range all {
			i := size[k.Key]
			if k.Size != int64(i) || !k.UpdatedAt.Equal(at.Add(time.Duration(i)*time.Second)) {
				t.Fatalf("ListKeys(%q) = size %d updated %v; want %d, %v", k.Key, k.Size, k.UpdatedAt, i, at.Add(time.Duration(i)*time.Second))
			}
		}
	}

	prefixes := []string{"", "a", "a/", "a//", "a/b", "b", "trailing", "trailing/", "z", "zz/", "nomatch", "-", ".", "0"}
	afters := []string{"", "-", "a", "a/", "a/b", "a0", "b", "trailing", "zzz", "a/a", "0"}
	for _, prefix := range prefixes {
		for _, after := range afters {
			var want []string
			for _, k := range sorted {
				if strings.HasPrefix(k, prefix) && k > after {
					want = append(want, k)
				}
			}
			got, more, err := s.ListKeys(ctx, "org-a", ns.ID, prefix, after, kv.MaxListLimit, now)
			if err != nil {
				t.Fatal(err)
			}
			if names := keyNames(got); !slices.Equal(names, want) || more {
				t.Fatalf("ListKeys(prefix %q, after %q) = %q, more %v; want %q, false", prefix, after, names, more, want)
			}
			// A page of two says whether more follow.
			got, more, err = s.ListKeys(ctx, "org-a", ns.ID, prefix, after, 2, now)
			if err != nil {
				t.Fatal(err)
			}
			if names := keyNames(got); !slices.Equal(names, want[:min(2, len(want))]) || more != (len(want) > 2) {
				t.Fatalf("ListKeys(prefix %q, after %q, limit 2) = %q, more %v; want %q, %v", prefix, after, names, more, want[:min(2, len(want))], len(want) > 2)
			}
		}
	}
}

func testListKeysLimits(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	empty, more, err := s.ListKeys(ctx, "org-a", ns.ID, "", "", 1, base)
	if err != nil || len(empty) != 0 || more {
		t.Fatalf("ListKeys of an empty namespace = %v, %v, %v", empty, more, err)
	}
	for _, k := range []string{"k1", "k2", "k3"} {
		mustPut(t, s, ns, k, putValue(k), base)
	}
	for _, tc := range []struct {
		limit int
		after string
		want  []string
		more  bool
	}{
		{1, "", []string{"k1"}, true},
		{2, "", []string{"k1", "k2"}, true},
		{3, "", []string{"k1", "k2", "k3"}, false}, // exactly the count: no more
		{4, "", []string{"k1", "k2", "k3"}, false},
		{1, "k2", []string{"k3"}, false},
		{2, "k1", []string{"k2", "k3"}, false},
		{1, "k3", nil, false}, // after the last key
		{1, "k", []string{"k1"}, true},
		{kv.MaxListLimit, "", []string{"k1", "k2", "k3"}, false},
	} {
		got, more, err := s.ListKeys(ctx, "org-a", ns.ID, "", tc.after, tc.limit, base)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(keyNames(got), tc.want) || more != tc.more {
			t.Fatalf("ListKeys(after %q, limit %d) = %q, more %v; want %q, %v", tc.after, tc.limit, keyNames(got), more, tc.want, tc.more)
		}
	}
	// A page that ends at the last live key before an expired one has no
	// more.
	mustPut(t, s, ns, "k4", store.PutValue{Data: []byte("x"), ContentType: "text/plain", ExpiresAt: base}, base)
	got, more, err := s.ListKeys(ctx, "org-a", ns.ID, "", "k2", 1, base)
	if err != nil || !slices.Equal(keyNames(got), []string{"k3"}) || more {
		t.Fatalf("ListKeys before an expired key = %q, %v, %v; want [k3], false", keyNames(got), more, err)
	}
}

func testTTL(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	exp := base.Add(10*time.Second + time.Nanosecond)
	if !mustPut(t, s, ns, "t", store.PutValue{Data: []byte("v1"), ContentType: "text/plain", ExpiresAt: exp}, base) {
		t.Fatal("created = false")
	}
	mustPut(t, s, ns, "permanent", putValue("p"), base)

	if v := mustGet(t, s, ns, "t", exp.Add(-time.Nanosecond)); !v.ExpiresAt.Equal(exp) || string(v.Data) != "v1" {
		t.Fatalf("before expiry: %q expires %v, want %v", v.Data, v.ExpiresAt, exp)
	}
	if got := keyNames(listAll(t, s, ns, "", 10, exp.Add(-time.Nanosecond))); !slices.Equal(got, []string{"permanent", "t"}) {
		t.Fatalf("ListKeys before expiry = %q", got)
	}
	// Expired at its expiry instant and after.
	wantKeyNotFound(t, s, ns, "t", exp)
	wantKeyNotFound(t, s, ns, "t", exp.Add(time.Hour))
	if got := keyNames(listAll(t, s, ns, "", 10, exp)); !slices.Equal(got, []string{"permanent"}) {
		t.Fatalf("ListKeys at expiry = %q, want only permanent", got)
	}
	if got, _, err := s.ListKeys(ctx, "org-a", ns.ID, "t", "", 10, exp); err != nil || len(got) != 0 {
		t.Fatalf("ListKeys(prefix t) at expiry = %q, %v", keyNames(got), err)
	}

	// Overwriting an expired key creates it; without ExpiresAt it is
	// permanent again.
	if !mustPut(t, s, ns, "t", putValue("v2"), exp) {
		t.Fatal("PutKey over an expired key: created = false")
	}
	if v := mustGet(t, s, ns, "t", base.Add(100*365*24*time.Hour)); string(v.Data) != "v2" || !v.ExpiresAt.IsZero() {
		t.Fatalf("after a PutKey without expiry: %q expires %v, want permanent", v.Data, v.ExpiresAt)
	}

	// A live key given a TTL is replaced, not created, and then expires.
	at := base.Add(time.Minute)
	if mustPut(t, s, ns, "permanent", store.PutValue{Data: []byte("p2"), ContentType: "text/plain", ExpiresAt: at.Add(time.Second)}, at) {
		t.Fatal("PutKey with TTL over a live key: created = true")
	}
	mustGet(t, s, ns, "permanent", at)
	wantKeyNotFound(t, s, ns, "permanent", at.Add(time.Second))

	// An expiry at or before now is expired at once.
	for i, e := range []time.Time{at, at.Add(-time.Hour)} {
		k := fmt.Sprintf("born-expired-%d", i)
		if !mustPut(t, s, ns, k, store.PutValue{Data: []byte("x"), ContentType: "text/plain", ExpiresAt: e}, at) {
			t.Fatal("created = false")
		}
		wantKeyNotFound(t, s, ns, k, at)
		if !mustPut(t, s, ns, k, store.PutValue{Data: []byte("y"), ContentType: "text/plain", ExpiresAt: e}, at) {
			t.Fatal("PutKey over a key expired by now: created = false")
		}
	}
	// Deleting an expired key succeeds.
	if _, err := s.DeleteKey(ctx, "org-a", ns.ID, "born-expired-0", at); err != nil {
		t.Fatal(err)
	}
}

func testSweepExpired(t *testing.T, s store.Store) {
	ns1 := readyNamespace(t, s, "org-a", "one")
	ns2 := readyNamespace(t, s, "org-b", "two")
	ttl := func(d time.Duration) store.PutValue {
		return store.PutValue{Data: []byte("v"), ContentType: "text/plain", ExpiresAt: base.Add(d)}
	}
	for i := 1; i <= 5; i++ {
		mustPut(t, s, ns1, fmt.Sprintf("e%d", i), ttl(time.Duration(i)*time.Second), base)
	}
	mustPut(t, s, ns2, "f", ttl(3*time.Second), base)
	mustPut(t, s, ns1, "permanent", putValue("p"), base)
	mustPut(t, s, ns1, "future", ttl(time.Hour), base)
	// Rewritten without expiry, and with a later one: the earlier expiry
	// must not remove them.
	mustPut(t, s, ns1, "made-permanent", ttl(2*time.Second), base)
	mustPut(t, s, ns1, "made-permanent", putValue("p"), base)
	mustPut(t, s, ns2, "extended", ttl(2*time.Second), base)
	mustPut(t, s, ns2, "extended", ttl(2*time.Hour), base)

	if n, err := s.SweepExpired(ctx, base, 100); err != nil || n != 0 {
		t.Fatalf("SweepExpired before any expiry = %d, %v", n, err)
	}
	if n, err := s.SweepExpired(ctx, base.Add(3*time.Second), 100); err != nil || n != 4 {
		t.Fatalf("SweepExpired(+3s) = %d, %v; want 4 (e1 e2 e3 f)", n, err)
	}
	// Removed, not merely hidden: gone even when read at an earlier now.
	for _, k := range []string{"e1", "e2", "e3"} {
		wantKeyNotFound(t, s, ns1, k, base)
	}
	wantKeyNotFound(t, s, ns2, "f", base)
	mustGet(t, s, ns1, "e4", base)
	if n, err := s.SweepExpired(ctx, base.Add(3*time.Second), 100); err != nil || n != 0 {
		t.Fatalf("SweepExpired(+3s) again = %d, %v; want 0", n, err)
	}

	// max bounds each sweep.
	for i, want := range []int{1, 1, 0} {
		if n, err := s.SweepExpired(ctx, base.Add(5*time.Second), 1); err != nil || n != want {
			t.Fatalf("SweepExpired(+5s, max 1) #%d = %d, %v; want %d", i, n, err, want)
		}
	}
	if n, err := s.SweepExpired(ctx, base.Add(time.Minute), 0); err != nil || n != 0 {
		t.Fatalf("SweepExpired(max 0) = %d, %v", n, err)
	}
	for _, k := range []string{"permanent", "future", "made-permanent"} {
		mustGet(t, s, ns1, k, base.Add(time.Minute))
	}
	mustGet(t, s, ns2, "extended", base.Add(time.Minute))
	if got := keyNames(listAll(t, s, ns1, "", 10, base)); !slices.Equal(got, []string{"future", "made-permanent", "permanent"}) {
		t.Fatalf("keys left = %q", got)
	}
	if n, err := s.SweepExpired(ctx, base.Add(3*time.Hour), 100); err != nil || n != 2 {
		t.Fatalf("SweepExpired(+3h) = %d, %v; want 2 (future, extended)", n, err)
	}
}

func testConcurrentFirstWrites(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	const writers = 32
	race := func(key string, now time.Time) int {
		t.Helper()
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
			errs    []error
			start   = make(chan struct{})
		)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c, err := s.PutKey(ctx, ns.Org, ns.ID, key, putValue(fmt.Sprintf("writer %d", i)), now)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				if c.Created {
					created++
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(errs) > 0 {
			t.Fatal(errors.Join(errs...))
		}
		return created
	}
	for i := range 4 {
		key := fmt.Sprintf("new-%d", i)
		if n := race(key, base); n != 1 {
			t.Fatalf("%d concurrent first writes of %s: %d reported created, want exactly 1", writers, key, n)
		}
		if v := string(mustGet(t, s, ns, key, base).Data); !strings.HasPrefix(v, "writer ") {
			t.Fatalf("value = %q", v)
		}
	}
	// Over an expired key, too.
	mustPut(t, s, ns, "expired", store.PutValue{Data: []byte("old"), ContentType: "text/plain", ExpiresAt: base.Add(time.Second)}, base)
	if n := race("expired", base.Add(2*time.Second)); n != 1 {
		t.Fatalf("%d concurrent writes over an expired key: %d reported created, want exactly 1", writers, n)
	}
	// And none when the key exists.
	if n := race("new-0", base); n != 0 {
		t.Fatalf("%d concurrent writes of an existing key: %d reported created, want 0", writers, n)
	}
}

func testTenantIsolation(t *testing.T, s store.Store) {
	a := readyNamespace(t, s, "org-a", "shared-name")
	b := readyNamespace(t, s, "org-b", "shared-name") // same name, other org
	mustPut(t, s, a, "k", putValue("a's"), base)

	nf := store.ErrNamespaceNotFound
	_, err := s.GetKey(ctx, "org-b", a.ID, "k", base)
	wantIs(t, "GetKey by another org", err, nf)
	_, err = s.GetKey(ctx, "org-b", a.ID, "missing", base)
	wantIs(t, "GetKey(missing key) by another org", err, nf)
	_, err = s.PutKey(ctx, "org-b", a.ID, "k", putValue("b's"), base)
	wantIs(t, "PutKey by another org", err, nf)
	_, err = s.PutKey(ctx, "org-b", a.ID, "new", putValue("b's"), base)
	wantIs(t, "PutKey(new key) by another org", err, nf)
	_, err = s.DeleteKey(ctx, "org-b", a.ID, "k", base)
	wantIs(t, "DeleteKey by another org", err, nf)
	_, _, err = s.ListKeys(ctx, "org-b", a.ID, "", "", 10, base)
	wantIs(t, "ListKeys by another org", err, nf)
	_, err = s.GetNamespace(ctx, "org-b", a.ID)
	wantIs(t, "GetNamespace by another org", err, nf)
	_, err = s.MarkDeleting(ctx, "org-b", a.ID, base)
	wantIs(t, "MarkDeleting by another org", err, nf)
	_, err = s.GetKey(ctx, "", a.ID, "k", base)
	wantIs(t, "GetKey by the empty org", err, nf)

	// Nothing org-b tried changed org-a's data.
	if v := mustGet(t, s, a, "k", base); string(v.Data) != "a's" {
		t.Fatalf("org-a's value = %q", v.Data)
	}
	if got := keyNames(listAll(t, s, a, "", 10, base)); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("org-a's keys = %q", got)
	}
	if got, err := s.GetNamespace(ctx, "org-a", a.ID); err != nil || got.Status != kv.StatusProvisionOK {
		t.Fatalf("org-a's namespace = %+v, %v", got, err)
	}
	if got := listAll(t, s, b, "", 10, base); len(got) != 0 {
		t.Fatalf("org-b's namespace lists %q", keyNames(got))
	}
	page, total, err := s.ListNamespaces(ctx, "org-b", 0, 10)
	if err != nil || total != 1 || len(page) != 1 || page[0].ID != b.ID {
		t.Fatalf("ListNamespaces(org-b) = %+v, %d, %v", page, total, err)
	}
}

func testNamespaceIsolation(t *testing.T, s store.Store) {
	n1 := readyNamespace(t, s, "org-a", "one")
	n2 := readyNamespace(t, s, "org-a", "two")
	for _, k := range []string{"k", "k/1", "shared"} {
		mustPut(t, s, n1, k, putValue("one:"+k), base)
	}
	for _, k := range []string{"k", "k/2", "other"} {
		if !mustPut(t, s, n2, k, putValue("two:"+k), base) {
			t.Fatalf("PutKey(%q) in the second namespace: created = false", k)
		}
	}
	if v := mustGet(t, s, n1, "k", base); string(v.Data) != "one:k" {
		t.Fatalf("n1 k = %q", v.Data)
	}
	if v := mustGet(t, s, n2, "k", base); string(v.Data) != "two:k" {
		t.Fatalf("n2 k = %q", v.Data)
	}
	if got := keyNames(listAll(t, s, n1, "", 1, base)); !slices.Equal(got, []string{"k", "k/1", "shared"}) {
		t.Fatalf("n1 keys = %q", got)
	}
	if got := keyNames(listAll(t, s, n2, "k", 1, base)); !slices.Equal(got, []string{"k", "k/2"}) {
		t.Fatalf("n2 keys with prefix k = %q", got)
	}
	if _, err := s.DeleteKey(ctx, "org-a", n1.ID, "k", base); err != nil {
		t.Fatal(err)
	}
	wantKeyNotFound(t, s, n1, "k", base)
	wantKeyNotFound(t, s, n1, "other", base)
	if v := mustGet(t, s, n2, "k", base); string(v.Data) != "two:k" {
		t.Fatalf("n2 k after deleting n1's = %q", v.Data)
	}
}

func testNotReady(t *testing.T, s store.Store) {
	deleting := readyNamespace(t, s, "org-a", "deleting")
	mustPut(t, s, deleting, "k", putValue("v"), base)
	failed := provision(t, s, newNamespace(t, s, "org-a", "failed", base), kv.StatusProvisionFailed)
	if _, err := s.MarkDeleting(ctx, "org-a", deleting.ID, base); err != nil {
		t.Fatal(err)
	}
	pending := newNamespace(t, s, "org-a", "pending", base)

	for _, tc := range []struct {
		ns     kv.Namespace
		status kv.Status
	}{{pending, kv.StatusPending}, {deleting, kv.StatusDeleting}, {failed, kv.StatusProvisionFailed}} {
		check := func(what string, err error) {
			t.Helper()
			wantNotReady(t, what, err, tc.status)
		}
		_, err := s.GetKey(ctx, "org-a", tc.ns.ID, "k", base)
		check("GetKey on "+string(tc.status), err)
		_, err = s.PutKey(ctx, "org-a", tc.ns.ID, "k2", putValue("v"), base)
		check("PutKey on "+string(tc.status), err)
		_, err = s.DeleteKey(ctx, "org-a", tc.ns.ID, "k", base)
		check("DeleteKey on "+string(tc.status), err)
		_, _, err = s.ListKeys(ctx, "org-a", tc.ns.ID, "", "", 10, base)
		check("ListKeys on "+string(tc.status), err)
		// Another org still sees no namespace at all.
		_, err = s.GetKey(ctx, "org-b", tc.ns.ID, "k", base)
		wantIs(t, "GetKey by another org on "+string(tc.status), err, store.ErrNamespaceNotFound)
	}
	// Nothing was written meanwhile: once provisioned, pending is empty.
	ready := provision(t, s, pending, kv.StatusProvisionOK)
	if got := listAll(t, s, ready, "", 10, base); len(got) != 0 {
		t.Fatalf("a PutKey on a pending namespace wrote %q", keyNames(got))
	}
}

// usageByNS returns org's usage in month as of now, by namespace id, with
// its days. It checks that UsageByDay gives Usage's monthly figures, and
// days that cover the period and add up to them.
func usageByNS(t *testing.T, s store.Store, org string, nsID kv.ID, month, now time.Time) map[kv.ID]store.NamespaceUsage {
	t.Helper()
	list, err := s.Usage(context.Background(), org, nsID, month, now)
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	out := map[kv.ID]store.NamespaceUsage{}
	for _, u := range list {
		if _, dup := out[u.NamespaceID]; dup {
			t.Fatalf("Usage lists namespace %s twice", u.NamespaceID)
		}
		if u.Days != nil {
			t.Fatalf("Usage gave days: %+v", u.Days)
		}
		out[u.NamespaceID] = u
	}
	daily, err := s.UsageByDay(context.Background(), org, nsID, month, now)
	if err != nil {
		t.Fatalf("UsageByDay: %v", err)
	}
	if len(daily) != len(out) {
		t.Fatalf("UsageByDay has %d namespaces, Usage %d", len(daily), len(out))
	}
	// The days from the month's first to the one holding the period's end.
	end := month.AddDate(0, 1, 0)
	if now.Before(end) {
		end = now
	}
	var wantDays []time.Time
	for d := month; d.Before(month.AddDate(0, 1, 0)) && !d.After(end); d = d.AddDate(0, 0, 1) {
		wantDays = append(wantDays, d)
	}
	for _, u := range daily {
		m, ok := out[u.NamespaceID]
		if !ok {
			t.Fatalf("UsageByDay has namespace %s, Usage does not", u.NamespaceID)
		}
		if u.UsageCounts != m.UsageCounts || u.ByteNanos.Cmp(m.ByteNanos) != 0 || u.Bytes != m.Bytes {
			t.Fatalf("UsageByDay's month of %s = %+v %v %d, Usage's %+v %v %d", u.NamespaceID, u.UsageCounts, u.ByteNanos, u.Bytes, m.UsageCounts, m.ByteNanos, m.Bytes)
		}
		if len(u.Days) != len(wantDays) {
			t.Fatalf("%s: %d days, want %d (%v to %v)", u.NamespaceID, len(u.Days), len(wantDays), month, end)
		}
		var sum store.UsageCounts
		nanos := new(big.Int)
		for i, d := range u.Days {
			if !d.Day.Equal(wantDays[i]) || d.ByteNanos == nil {
				t.Fatalf("%s: day %d is %v (byte-ns %v), want %v", u.NamespaceID, i, d.Day, d.ByteNanos, wantDays[i])
			}
			sum.Add(d.UsageCounts)
			nanos.Add(nanos, d.ByteNanos)
		}
		if len(u.Days) > 0 && (sum != u.UsageCounts || nanos.Cmp(u.ByteNanos) != 0 || u.Days[len(u.Days)-1].Bytes != u.Bytes) {
			t.Fatalf("%s: days add up to %+v, %v byte-ns, %d bytes at the end; the month is %+v, %v, %d",
				u.NamespaceID, sum, nanos, u.Days[len(u.Days)-1].Bytes, u.UsageCounts, u.ByteNanos, u.Bytes)
		}
		m.Days = u.Days
		out[u.NamespaceID] = m
	}
	return out
}

// wantDay checks the figures of the day of u that starts at day.
func wantDay(t *testing.T, what string, u store.NamespaceUsage, day time.Time, counts store.UsageCounts, byteSeconds, bytes int64) {
	t.Helper()
	for _, d := range u.Days {
		if d.Day.Equal(day) {
			wantUsage(t, what, store.NamespaceUsage{UsageCounts: d.UsageCounts, ByteNanos: d.ByteNanos, Bytes: d.Bytes}, counts, byteSeconds, bytes)
			return
		}
	}
	t.Fatalf("%s: no day %v in %+v", what, day, u.Days)
}

func wantUsage(t *testing.T, what string, got store.NamespaceUsage, counts store.UsageCounts, byteSeconds, bytes int64) {
	t.Helper()
	want := new(big.Int).Mul(big.NewInt(byteSeconds), big.NewInt(1e9))
	if got.UsageCounts != counts || got.ByteNanos == nil || got.ByteNanos.Cmp(want) != 0 || got.Bytes != bytes {
		t.Fatalf("%s: usage = %+v (%v byte-ns), want %+v, %d byte-s, %d bytes", what, got.UsageCounts, got.ByteNanos, counts, byteSeconds, bytes)
	}
}

// testUsageCounts: writes and deletes that change something are counted with
// the change, deletes of missing keys and refused operations are not, and
// AddUsage adds buffered counts; per namespace and per organization.
func testUsageCounts(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := readyNamespace(t, s, "org-a", "a")
	b := readyNamespace(t, s, "org-a", "b")
	other := readyNamespace(t, s, "org-b", "c")
	month := time.Date(2030, time.March, 1, 0, 0, 0, 0, time.UTC)
	at := month.Add(time.Hour)
	for i := range 5 {
		mustPut(t, s, a, fmt.Sprintf("k%d", i), putValue("v"), at)
	}
	mustPut(t, s, a, "k0", putValue("again"), at)
	mustPut(t, s, b, "x", putValue("v"), at)
	mustPut(t, s, other, "x", putValue("v"), at)
	for _, k := range []string{"k1", "k2", "missing"} {
		if _, err := s.DeleteKey(ctx, "org-a", a.ID, k, at); err != nil {
			t.Fatal(err)
		}
	}
	// Refused: another organization's namespace, and one not ready.
	s.PutKey(ctx, "org-b", a.ID, "k", putValue("v"), at)
	pending := newNamespace(t, s, "org-a", "pending", at)
	s.PutKey(ctx, "org-a", pending.ID, "k", putValue("v"), at)

	if err := s.AddUsage(ctx, []store.UsageDelta{
		{Org: "org-a", NamespaceID: a.ID, Month: month, UsageCounts: store.UsageCounts{Reads: 7, Lists: 2, Deletes: 1}},
		{Org: "org-a", NamespaceID: a.ID, Month: month, Day: month.AddDate(0, 0, 1).Add(time.Minute), UsageCounts: store.UsageCounts{Reads: 3}},
		{Org: "org-a", NamespaceID: b.ID, Month: month.AddDate(0, 1, 0), UsageCounts: store.UsageCounts{Reads: 100}},
	}); err != nil {
		t.Fatal(err)
	}
	now := month.AddDate(0, 0, 1).Add(2 * time.Hour)
	got := usageByNS(t, s, "org-a", kv.ID{}, month, now)
	if len(got) != 2 {
		t.Fatalf("org-a has usage for %d namespaces, want 2: %+v", len(got), got)
	}
	if c := got[a.ID].UsageCounts; c != (store.UsageCounts{Reads: 10, Writes: 6, Deletes: 3, Lists: 2}) {
		t.Fatalf("namespace a counts = %+v", c)
	}
	if d := got[a.ID].Days; len(d) != 2 || d[0].UsageCounts != (store.UsageCounts{Reads: 7, Writes: 6, Deletes: 3, Lists: 2}) || d[1].UsageCounts != (store.UsageCounts{Reads: 3}) {
		t.Fatalf("namespace a days = %+v", d)
	}
	if c := got[b.ID].UsageCounts; c != (store.UsageCounts{Writes: 1}) {
		t.Fatalf("namespace b counts = %+v (reads of April must not show in March)", c)
	}
	if only := usageByNS(t, s, "org-a", b.ID, month, now); len(only) != 1 || only[b.ID].Writes != 1 {
		t.Fatalf("usage of b alone = %+v", only)
	}
	if theirs := usageByNS(t, s, "org-b", kv.ID{}, month, now); len(theirs) != 1 || theirs[other.ID].Writes != 1 {
		t.Fatalf("org-b usage = %+v", theirs)
	}
	april := usageByNS(t, s, "org-a", kv.ID{}, month.AddDate(0, 1, 0), month.AddDate(0, 1, 1))
	if april[b.ID].Reads != 100 || april[a.ID].Writes != 0 || april[b.ID].Days[0].Reads != 100 {
		t.Fatalf("April = %+v (counts without a day are the month's first day's)", april)
	}
	if future := usageByNS(t, s, "org-a", kv.ID{}, month.AddDate(0, 2, 0), now); len(future) != 0 {
		t.Fatalf("a month after now has usage: %+v", future)
	}
}

// testUsageStorage checks stored bytes integrated over time against values
// worked out by hand: puts, an overwrite that changes size, a delete, TTL
// expiry before and after the sweep, a month boundary and a namespace
// deletion.
func testUsageStorage(t *testing.T, s store.Store) {
	ctx := context.Background()
	march := time.Date(2030, time.March, 1, 0, 0, 0, 0, time.UTC)
	april := march.AddDate(0, 1, 0)
	sec := func(n int) time.Time { return march.Add(time.Duration(n) * time.Second) }
	a := readyNamespace(t, s, "org-u", "a")
	b := readyNamespace(t, s, "org-u", "b")
	val := func(n int) store.PutValue {
		return store.PutValue{Data: bytes.Repeat([]byte("v"), n), ContentType: kv.DefaultContentType}
	}
	ttl := func(n int, until time.Time) store.PutValue { v := val(n); v.ExpiresAt = until; return v }

	mustPut(t, s, a, "k1", val(8), sec(10))                                   // 10 bytes from 10s
	mustPut(t, s, a, "k2", ttl(98, sec(50)), sec(20))                         // 100 bytes from 20s to 50s
	mustPut(t, s, a, "k1", val(18), sec(30))                                  // 20 bytes from 30s
	if _, err := s.DeleteKey(ctx, "org-u", a.ID, "k1", sec(40)); err != nil { // until 40s
		t.Fatal(err)
	}
	// 10×20 + 20×10 + 100×30 = 3400 byte-seconds; k2 has expired, not swept.
	wantUsage(t, "before the sweep", usageByNS(t, s, "org-u", a.ID, march, sec(100))[a.ID], store.UsageCounts{Writes: 3, Deletes: 1}, 3400, 0)
	if n, err := s.SweepExpired(ctx, sec(100), 10); err != nil || n != 1 {
		t.Fatalf("SweepExpired = %d, %v", n, err)
	}
	wantUsage(t, "after the sweep", usageByNS(t, s, "org-u", a.ID, march, sec(100))[a.ID], store.UsageCounts{Writes: 3, Deletes: 1}, 3400, 0)

	// Across the month boundary: k3 (10 bytes) from 10s before April.
	mustPut(t, s, a, "k3", val(8), april.Add(-10*time.Second))
	// b: k4 (10 bytes) from 5s before April to 5s after, never swept.
	mustPut(t, s, b, "k4", ttl(8, april.Add(5*time.Second)), april.Add(-5*time.Second))
	now := april.Add(30 * time.Second)
	m := usageByNS(t, s, "org-u", kv.ID{}, march, now)
	wantUsage(t, "March, a", m[a.ID], store.UsageCounts{Writes: 4, Deletes: 1}, 3500, 10)
	wantUsage(t, "March, b", m[b.ID], store.UsageCounts{Writes: 1}, 50, 10)
	// By day: the first and the last of March; nothing in between.
	wantDay(t, "March 1, a", m[a.ID], march, store.UsageCounts{Writes: 3, Deletes: 1}, 3400, 0)
	wantDay(t, "March 15, a", m[a.ID], march.AddDate(0, 0, 14), store.UsageCounts{}, 0, 0)
	wantDay(t, "March 31, a", m[a.ID], april.AddDate(0, 0, -1), store.UsageCounts{Writes: 1}, 100, 10)
	wantDay(t, "March 1, b", m[b.ID], march, store.UsageCounts{}, 0, 0)
	wantDay(t, "March 31, b", m[b.ID], april.AddDate(0, 0, -1), store.UsageCounts{Writes: 1}, 50, 10)
	ap := usageByNS(t, s, "org-u", kv.ID{}, april, now)
	wantUsage(t, "April, a", ap[a.ID], store.UsageCounts{}, 300, 10)
	wantUsage(t, "April, b", ap[b.ID], store.UsageCounts{}, 50, 0)
	wantDay(t, "April 1, b", ap[b.ID], april, store.UsageCounts{}, 50, 0)

	// Deleting a namespace stops its storage at once.
	for _, ns := range []kv.Namespace{a, b} {
		if _, err := s.MarkDeleting(ctx, "org-u", ns.ID, april.Add(40*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	later := april.Add(100 * time.Second)
	ap = usageByNS(t, s, "org-u", kv.ID{}, april, later)
	wantUsage(t, "April after deletion, a", ap[a.ID], store.UsageCounts{}, 400, 0)
	wantUsage(t, "April after deletion, b", ap[b.ID], store.UsageCounts{}, 50, 0)
	for _, ns := range []kv.Namespace{a, b} {
		if err := s.PurgeNamespace(ctx, ns.ID, "h"); err != nil {
			t.Fatal(err)
		}
	}
	ap = usageByNS(t, s, "org-u", kv.ID{}, april, later)
	wantUsage(t, "April after purge, a", ap[a.ID], store.UsageCounts{}, 400, 0)
	if may := usageByNS(t, s, "org-u", kv.ID{}, april.AddDate(0, 1, 0), april.AddDate(0, 1, 1)); len(may) != 0 {
		t.Fatalf("May usage of deleted namespaces = %+v", may)
	}

	// Across midnight: c's k5 (10 bytes) from 60s before April 2 to 60s
	// after, expiring; k6 (20 bytes) from 01:00 on April 2 to 10s into
	// April 3.
	c := readyNamespace(t, s, "org-v", "c")
	day2, day3 := april.AddDate(0, 0, 1), april.AddDate(0, 0, 2)
	mustPut(t, s, c, "k5", ttl(8, day2.Add(time.Minute)), day2.Add(-time.Minute))
	mustPut(t, s, c, "k6", val(18), day2.Add(time.Hour))
	if _, err := s.DeleteKey(ctx, "org-v", c.ID, "k6", day3.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	checkDays := func(what string) {
		t.Helper()
		u := usageByNS(t, s, "org-v", kv.ID{}, april, day3.Add(30*time.Second))[c.ID]
		wantUsage(t, what+", April", u, store.UsageCounts{Writes: 2, Deletes: 1}, 600+600+20*82800+200, 0)
		wantDay(t, what+", April 1", u, april, store.UsageCounts{Writes: 1}, 600, 10)
		wantDay(t, what+", April 2", u, day2, store.UsageCounts{Writes: 1}, 600+20*82800, 20)
		wantDay(t, what+", April 3", u, day3, store.UsageCounts{Deletes: 1}, 200, 0)
		if len(u.Days) != 3 {
			t.Fatalf("%s: %d days, want 3", what, len(u.Days))
		}
	}
	checkDays("before the sweep")
	if n, err := s.SweepExpired(ctx, day3, 10); err != nil || n != 1 {
		t.Fatalf("SweepExpired = %d, %v", n, err)
	}
	checkDays("after the sweep")
	// One namespace's days alone are the same.
	if only := usageByNS(t, s, "org-v", c.ID, april, day3.Add(30*time.Second)); len(only[c.ID].Days) != 3 || only[c.ID].Days[1].Bytes != 20 {
		t.Fatalf("usage of c alone = %+v", only)
	}

	// Overwriting a value that expired, unswept, on an earlier day: its
	// bytes stop at its expiry, in its day; the new ones count from the
	// write. d's k7 (10 bytes) from 60s before April 2 to 60s after; then
	// 20 bytes from 01:00 on April 3.
	d := readyNamespace(t, s, "org-w", "d")
	mustPut(t, s, d, "k7", ttl(8, day2.Add(time.Minute)), day2.Add(-time.Minute))
	mustPut(t, s, d, "k7", val(18), day3.Add(time.Hour))
	u := usageByNS(t, s, "org-w", kv.ID{}, april, day3.Add(2*time.Hour))[d.ID]
	wantUsage(t, "overwritten after its expiry, April", u, store.UsageCounts{Writes: 2}, 600+600+20*3600, 20)
	wantDay(t, "overwritten after its expiry, April 1", u, april, store.UsageCounts{Writes: 1}, 600, 10)
	wantDay(t, "overwritten after its expiry, April 2", u, day2, store.UsageCounts{}, 600, 0)
	wantDay(t, "overwritten after its expiry, April 3", u, day3, store.UsageCounts{Writes: 1}, 20*3600, 20)
}

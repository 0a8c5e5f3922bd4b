package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// The cases that pin what the contract decides beyond the happy path:
// arguments a caller must not pass, a context that is done, a restart, two
// handles on one engine.

// baseMonth is the first instant of base's month.
var baseMonth = time.Date(base.Year(), base.Month(), 1, 0, 0, 0, 0, time.UTC)

// everyCall is one call of every method of a store on namespace ns (which
// holds key "k"), with the context given. CreateNamespace creates "x";
// CreateToken creates token tok_t, of digest of "t".
func everyCall(s store.Store, ns kv.Namespace) map[string]func(ctx context.Context) error {
	d := store.DigestToken("t")
	return map[string]func(ctx context.Context) error{
		"CreateToken": func(ctx context.Context) error {
			return s.CreateToken(ctx, store.Token{ID: "tok_t", Org: "org", Permissions: kv.AllPermissions, CreatedAt: base}, d)
		},
		"TokenByDigest": func(ctx context.Context) error { _, err := s.TokenByDigest(ctx, d); return err },
		"ListTokens":    func(ctx context.Context) error { _, err := s.ListTokens(ctx, ""); return err },
		"RevokeToken":   func(ctx context.Context) error { _, err := s.RevokeToken(ctx, "tok_t", base); return err },
		"TouchTokens": func(ctx context.Context) error {
			return s.TouchTokens(ctx, map[string]time.Time{"tok_t": base})
		},
		"RevokedSince": func(ctx context.Context) error { _, _, err := s.RevokedSince(ctx, 0); return err },
		"CreateNamespace": func(ctx context.Context) error {
			return s.CreateNamespace(ctx, kv.Namespace{ID: kv.NewID(), Org: ns.Org, Name: "x", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base})
		},
		"GetNamespace":   func(ctx context.Context) error { _, err := s.GetNamespace(ctx, ns.Org, ns.ID); return err },
		"ListNamespaces": func(ctx context.Context) error { _, _, err := s.ListNamespaces(ctx, ns.Org, 0, 10); return err },
		"MarkDeleting":   func(ctx context.Context) error { _, err := s.MarkDeleting(ctx, ns.Org, ns.ID, base); return err },
		"ClaimLifecycleJob": func(ctx context.Context) error {
			_, _, err := s.ClaimLifecycleJob(ctx, "h", base, time.Minute)
			return err
		},
		"CompleteProvision": func(ctx context.Context) error {
			return s.CompleteProvision(ctx, ns.ID, "h", kv.StatusProvisionOK, base)
		},
		"PurgeNamespace": func(ctx context.Context) error { return s.PurgeNamespace(ctx, ns.ID, "h") },
		"GetKey": func(ctx context.Context) error {
			v, err := s.GetKey(ctx, ns.Org, ns.ID, "k", base)
			if err == nil {
				v.Close()
			}
			return err
		},
		"PutKey": func(ctx context.Context) error {
			_, err := s.PutKey(ctx, ns.Org, ns.ID, "k", putValue("new"), base)
			return err
		},
		"DeleteKey": func(ctx context.Context) error { _, err := s.DeleteKey(ctx, ns.Org, ns.ID, "k", base); return err },
		"Apply": func(ctx context.Context) error {
			_, err := s.Apply(ctx, ns.Org, ns.ID, []store.Op{{Kind: store.OpPut, Key: "k", Value: putValue("new")}, {Kind: store.OpIncr, Key: "n", By: 1}}, base)
			return err
		},
		"ListKeys": func(ctx context.Context) error {
			_, _, err := s.ListKeys(ctx, ns.Org, ns.ID, "", "", 10, base)
			return err
		},
		"AddUsage": func(ctx context.Context) error {
			return s.AddUsage(ctx, []store.UsageDelta{{Org: ns.Org, NamespaceID: ns.ID, Month: base, UsageCounts: store.UsageCounts{Reads: 1}}})
		},
		"Usage":        func(ctx context.Context) error { _, err := s.Usage(ctx, ns.Org, kv.ID{}, base, base); return err },
		"UsageByDay":   func(ctx context.Context) error { _, err := s.UsageByDay(ctx, ns.Org, kv.ID{}, base, base); return err },
		"SweepExpired": func(ctx context.Context) error { _, err := s.SweepExpired(ctx, base.Add(time.Hour), 10); return err },
	}
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// testInvalidArguments: what a caller must not pass is refused the same
// way by every engine, and changes nothing.
func testInvalidArguments(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	mustPut(t, s, ns, "k", putValue("v"), base)
	_, _, err := s.ListNamespaces(ctx, "org-a", -1, 10)
	wantIs(t, "ListNamespaces(offset -1)", err, store.ErrInvalidArgument)
	_, _, err = s.ListNamespaces(ctx, "org-a", 0, 0)
	wantIs(t, "ListNamespaces(limit 0)", err, store.ErrInvalidArgument)
	_, _, err = s.ListKeys(ctx, "org-a", ns.ID, "", "", 0, base)
	wantIs(t, "ListKeys(limit 0)", err, store.ErrInvalidArgument)

	pending := newNamespace(t, s, "org-a", "pending", base)
	for _, to := range []kv.Status{kv.StatusPending, kv.StatusDeleting, kv.StatusDeleteFailed, "bogus"} {
		err := s.CompleteProvision(ctx, pending.ID, "h", to, base)
		wantIs(t, fmt.Sprintf("CompleteProvision(to %q)", to), err, store.ErrInvalidArgument)
	}
	if got, err := s.GetNamespace(ctx, "org-a", pending.ID); err != nil || got.Status != kv.StatusPending {
		t.Fatalf("a refused CompleteProvision changed the namespace: %+v, %v", got, err)
	}
	// A namespace id already in use, under another name.
	err = s.CreateNamespace(ctx, kv.Namespace{ID: ns.ID, Org: "org-a", Name: "other", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base})
	wantIs(t, "CreateNamespace(an id in use)", err, store.ErrIDTaken)

	// Sweeping none is no work.
	if n, err := s.SweepExpired(ctx, base.Add(time.Hour), 0); n != 0 || err != nil {
		t.Fatalf("SweepExpired(max 0) = %d, %v; want 0, nil", n, err)
	}
}

// testContextDone: called with a context that is canceled, or whose
// deadline has passed, every method returns the context's error and
// changes nothing.
func testContextDone(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	mustPut(t, s, ns, "k", putValue("v"), base)
	before := usageByNS(t, s, "org-a", kv.ID{}, baseMonth, base.Add(time.Minute))

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	calls := everyCall(s, ns)
	for _, name := range sortedNames(calls) {
		if err := calls[name](canceled); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a canceled context: err = %v, want context.Canceled", name, err)
		}
		if err := calls[name](expired); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s past its deadline: err = %v, want context.DeadlineExceeded", name, err)
		}
	}
	// Nothing changed.
	if got := mustGet(t, s, ns, "k", base); string(got.Data) != "v" {
		t.Fatalf("key k is %q after calls with a done context", got.Data)
	}
	if got, err := s.GetNamespace(ctx, "org-a", ns.ID); err != nil || got.Status != kv.StatusProvisionOK {
		t.Fatalf("namespace after calls with a done context: %+v, %v", got, err)
	}
	if _, total, err := s.ListNamespaces(ctx, "org-a", 0, 10); err != nil || total != 1 {
		t.Fatalf("namespaces after calls with a done context: %d, %v; want 1", total, err)
	}
	_, err := s.TokenByDigest(ctx, store.DigestToken("t"))
	wantIs(t, "TokenByDigest of a token created with a done context", err, store.ErrTokenNotFound)
	after := usageByNS(t, s, "org-a", kv.ID{}, baseMonth, base.Add(time.Minute))
	if b, a := before[ns.ID], after[ns.ID]; b.UsageCounts != a.UsageCounts || b.Bytes != a.Bytes {
		t.Fatalf("usage changed under calls with a done context: %+v -> %+v", b, a)
	}
}

func testAfterClose(t *testing.T, s store.Store) {
	ns := readyNamespace(t, s, "org-a", "ns")
	mustPut(t, s, ns, "k", putValue("v"), base)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	calls := everyCall(s, ns)
	for _, name := range sortedNames(calls) {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s after Close panicked: %v", name, r)
				}
			}()
			if err := calls[name](ctx); !errors.Is(err, store.ErrClosed) {
				t.Errorf("%s after Close: err = %v, want store.ErrClosed", name, err)
			}
		}()
	}
}

// testRestart: everything acknowledged is there after a restart: tokens,
// namespaces in every status, keys with their content types and expiries,
// usage.
func testRestart(t *testing.T, h Harness, s store.Store) {
	d := store.DigestToken("restart-token")
	tok := newToken(t, s, "org-r", "restart", "restart-token", base)
	if _, err := s.RevokeToken(ctx, newToken(t, s, "org-r", "gone", "revoked-token", base).ID, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	ready := readyNamespace(t, s, "org-r", "ready")
	failed := provision(t, s, newNamespace(t, s, "org-r", "failed", base), kv.StatusProvisionFailed)
	pending := newNamespace(t, s, "org-r", "pending", base)
	gone := readyNamespace(t, s, "org-r", "deleting")
	mustPut(t, s, gone, "k", putValue("doomed"), base)
	deleting, err := s.MarkDeleting(ctx, "org-r", gone.ID, base.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]store.PutValue{
		"plain":    {Data: []byte("plain"), ContentType: "text/plain"},
		"binary":   {Data: []byte{0, 0xff, 1}, ContentType: kv.DefaultContentType},
		"json":     {Data: []byte(`{"a":1}`), ContentType: "application/json"},
		"expiring": {Data: []byte("soon"), ContentType: "text/plain", ExpiresAt: base.Add(time.Hour)},
		"empty":    {Data: []byte{}, ContentType: kv.DefaultContentType},
	}
	for k, v := range values {
		mustPut(t, s, ready, k, v, base)
	}
	if err := s.AddUsage(ctx, []store.UsageDelta{{Org: "org-r", NamespaceID: ready.ID, Month: base, Day: base, UsageCounts: store.UsageCounts{Reads: 7, Lists: 2}}}); err != nil {
		t.Fatal(err)
	}
	now := base.Add(time.Minute)
	before := usageByNS(t, s, "org-r", kv.ID{}, baseMonth, now)

	s = h.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	if got, err := s.TokenByDigest(ctx, d); err != nil {
		t.Fatalf("token after restart: %v", err)
	} else {
		sameToken(t, "token after restart", got, tok)
	}
	if got, err := s.TokenByDigest(ctx, store.DigestToken("revoked-token")); err != nil || !got.RevokedAt.Equal(base.Add(time.Second)) {
		t.Fatalf("revoked token after restart: %+v, %v", got, err)
	}
	for _, want := range []kv.Namespace{ready, failed, pending, deleting} {
		got, err := s.GetNamespace(ctx, "org-r", want.ID)
		if err != nil {
			t.Fatalf("namespace %s after restart: %v", want.Name, err)
		}
		sameNamespace(t, "namespace "+want.Name+" after restart", got, want)
	}
	for k, v := range values {
		got := mustGet(t, s, ready, k, base)
		if string(got.Data) != string(v.Data) || got.ContentType != v.ContentType || !got.ExpiresAt.Equal(v.ExpiresAt) || !got.UpdatedAt.Equal(base) {
			t.Fatalf("key %s after restart: %+v, want %+v updated at %v", k, got, v, base)
		}
	}
	wantKeyNotFound(t, s, ready, "expiring", base.Add(time.Hour))
	after := usageByNS(t, s, "org-r", kv.ID{}, baseMonth, now)
	if len(after) != len(before) {
		t.Fatalf("usage after restart covers %d namespaces, before %d", len(after), len(before))
	}
	for id, b := range before {
		a := after[id]
		if a.UsageCounts != b.UsageCounts || a.Bytes != b.Bytes || a.ByteNanos.Cmp(b.ByteNanos) != 0 {
			t.Fatalf("usage of %s after restart %+v, before %+v", id, a, b)
		}
	}
	// The lifecycle picks up where it was: the deleting namespace can be
	// purged, the pending one provisioned.
	claimed := map[kv.ID]bool{}
	for range 10 {
		ns, ok, err := s.ClaimLifecycleJob(ctx, "after-restart", base.Add(48*time.Hour), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		claimed[ns.ID] = true
	}
	if !claimed[pending.ID] || !claimed[deleting.ID] || len(claimed) != 2 {
		t.Fatalf("jobs claimable after restart: %v; want the pending and the deleting namespace", claimed)
	}
}

// testTwoHandles: two handles on one engine, as two processes sharing a
// database have, see each other's changes at once, and the promises that
// hold within one handle hold across them.
func testTwoHandles(t *testing.T, h Harness, a store.Store) {
	t.Cleanup(func() { a.Close() })
	b := h.Second(t, a)
	if b == nil {
		t.Skip("the engine admits one process at a time")
	}
	t.Cleanup(func() { b.Close() })

	d := store.DigestToken("shared-token")
	tok := newToken(t, a, "org-s", "shared", "shared-token", base)
	if got, err := b.TokenByDigest(ctx, d); err != nil || got.Org != "org-s" {
		t.Fatalf("a token created through one handle, read through the other: %+v, %v", got, err)
	}
	// A revocation through one handle reaches the other's RevokedSince.
	_, mark, err := b.RevokedSince(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RevokeToken(ctx, tok.ID, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if digests, _, err := b.RevokedSince(ctx, mark); err != nil || !slices.Contains(digests, d) {
		t.Fatalf("RevokedSince through the other handle = %x, %v; want the revoked digest", digests, err)
	}
	ns := readyNamespace(t, a, "org-s", "shared")
	if got, err := b.GetNamespace(ctx, "org-s", ns.ID); err != nil || got.Status != kv.StatusProvisionOK {
		t.Fatalf("namespace through the other handle: %+v, %v", got, err)
	}
	err = b.CreateNamespace(ctx, kv.Namespace{ID: kv.NewID(), Org: "org-s", Name: "shared", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base})
	wantIs(t, "CreateNamespace of a name taken through the other handle", err, store.ErrNameTaken)

	mustPut(t, a, ns, "k", putValue("from a"), base)
	if got := mustGet(t, b, ns, "k", base); string(got.Data) != "from a" {
		t.Fatalf("through the other handle: %q", got.Data)
	}

	// Of concurrent first writes of one key through both, exactly one is
	// created.
	for round := range 20 {
		key := fmt.Sprintf("race-%d", round)
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := 0
		for i := range 8 {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := s.PutKey(ctx, ns.Org, ns.ID, key, putValue(fmt.Sprint(i)), base)
				if err != nil {
					t.Error(err)
					return
				}
				if c.Created {
					mu.Lock()
					created++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if created != 1 {
			t.Fatalf("%s: %d writes through two handles reported created, want exactly 1", key, created)
		}
	}

	// Once deleting through one, no key operation succeeds through the other.
	if _, err := b.MarkDeleting(ctx, "org-s", ns.ID, base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = a.PutKey(ctx, ns.Org, ns.ID, "late", putValue("v"), base.Add(2*time.Second))
	wantNotReady(t, "PutKey through one handle after MarkDeleting through the other", err, kv.StatusDeleting)
	ua := usageByNS(t, a, "org-s", ns.ID, baseMonth, base.Add(time.Minute))
	ub := usageByNS(t, b, "org-s", ns.ID, baseMonth, base.Add(time.Minute))
	if ua[ns.ID].UsageCounts != ub[ns.ID].UsageCounts || ua[ns.ID].Writes != 161 {
		t.Fatalf("usage through the two handles: %+v and %+v; want 161 writes in both", ua[ns.ID], ub[ns.ID])
	}
}

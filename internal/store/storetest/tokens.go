package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// newToken stores a token of org named name under the digest of secret.
func newToken(t *testing.T, s store.Tokens, org, name, secret string, at time.Time) store.Token {
	t.Helper()
	tok := store.Token{ID: "tok_" + name, Name: name, Org: org, Permissions: kv.AllPermissions, CreatedAt: at}
	if err := s.CreateToken(ctx, tok, store.DigestToken(secret)); err != nil {
		t.Fatalf("CreateToken(%s): %v", name, err)
	}
	return tok
}

func sameToken(t *testing.T, what string, got, want store.Token) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.Org != want.Org ||
		!slices.Equal(got.Permissions, want.Permissions) || !slices.Equal(got.Namespaces, want.Namespaces) || !slices.Equal(got.Prefixes, want.Prefixes) ||
		!got.ExpiresAt.Equal(want.ExpiresAt) || !got.CreatedAt.Equal(want.CreatedAt) || !got.LastUsedAt.Equal(want.LastUsedAt) || !got.RevokedAt.Equal(want.RevokedAt) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func testTokens(t *testing.T, s store.Store) {
	d1 := store.DigestToken("secret-one")
	_, err := s.TokenByDigest(ctx, d1)
	wantIs(t, "TokenByDigest(missing)", err, store.ErrTokenNotFound)

	ns := kv.NewID()
	full := newToken(t, s, "org-a", "full", "secret-one", base)
	scoped := store.Token{
		ID: "tok_scoped", Name: "reader", Org: "org-a", Permissions: kv.ReadOnlyPermissions,
		Namespaces: []kv.ID{ns}, Prefixes: []string{"flags/", "users/"},
		ExpiresAt: base.Add(24 * time.Hour), CreatedAt: base.Add(time.Second),
	}
	if err := s.CreateToken(ctx, scoped, store.DigestToken("secret-two")); err != nil {
		t.Fatal(err)
	}
	other := newToken(t, s, "org-b", "other", "secret-three", base.Add(2*time.Second))

	got, err := s.TokenByDigest(ctx, d1)
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "the full token", got, full)
	got, err = s.TokenByDigest(ctx, store.DigestToken("secret-two"))
	if err != nil {
		t.Fatal(err)
	}
	sameToken(t, "the scoped token", got, scoped)

	// An id or a digest in use is refused, and changes nothing.
	err = s.CreateToken(ctx, store.Token{ID: "tok_full", Org: "org-c", Permissions: kv.AllPermissions, CreatedAt: base}, store.DigestToken("secret-four"))
	wantIs(t, "CreateToken(an id in use)", err, store.ErrTokenTaken)
	err = s.CreateToken(ctx, store.Token{ID: "tok_new", Org: "org-c", Permissions: kv.AllPermissions, CreatedAt: base}, d1)
	wantIs(t, "CreateToken(a digest in use)", err, store.ErrTokenTaken)
	_, err = s.TokenByDigest(ctx, store.DigestToken("secret-four"))
	wantIs(t, "TokenByDigest of a refused creation", err, store.ErrTokenNotFound)

	// Listings: by organization, or all, oldest first.
	list, err := s.ListTokens(ctx, "org-a")
	if err != nil || len(list) != 2 || list[0].ID != "tok_full" || list[1].ID != "tok_scoped" {
		t.Fatalf("ListTokens(org-a) = %+v, %v", list, err)
	}
	all, err := s.ListTokens(ctx, "")
	if err != nil || len(all) != 3 || all[2].ID != other.ID {
		t.Fatalf("ListTokens() = %+v, %v", all, err)
	}
	if none, err := s.ListTokens(ctx, "org-none"); err != nil || len(none) != 0 {
		t.Fatalf("ListTokens(an organization without tokens) = %+v, %v", none, err)
	}

	// Revocation: the first time stays; RevokedSince names the digests.
	_, mark, err := s.RevokedSince(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := s.RevokeToken(ctx, "tok_scoped", base.Add(time.Minute))
	if err != nil || !revoked.RevokedAt.Equal(base.Add(time.Minute)) || revoked.ID != "tok_scoped" {
		t.Fatalf("RevokeToken = %+v, %v", revoked, err)
	}
	again, err := s.RevokeToken(ctx, "tok_scoped", base.Add(time.Hour))
	if err != nil || !again.RevokedAt.Equal(base.Add(time.Minute)) {
		t.Fatalf("RevokeToken again = %+v, %v; want the first revocation's time kept", again, err)
	}
	if got, err := s.TokenByDigest(ctx, store.DigestToken("secret-two")); err != nil || !got.RevokedAt.Equal(base.Add(time.Minute)) {
		t.Fatalf("a revoked token reads %+v, %v", got, err)
	}
	_, err = s.RevokeToken(ctx, "tok_none", base)
	wantIs(t, "RevokeToken(unknown id)", err, store.ErrTokenNotFound)
	digests, next, err := s.RevokedSince(ctx, mark)
	if err != nil || !slices.Contains(digests, store.DigestToken("secret-two")) || slices.Contains(digests, d1) {
		t.Fatalf("RevokedSince(%d) = %x, %d, %v; want the scoped token's digest", mark, digests, next, err)
	}
	if next <= mark {
		t.Fatalf("RevokedSince moved the mark from %d to %d", mark, next)
	}

	// Last use: the later time wins; unknown ids are ignored.
	used := base.Add(10 * time.Minute)
	if err := s.TouchTokens(ctx, map[string]time.Time{"tok_full": used, "tok_none": used}); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchTokens(ctx, map[string]time.Time{"tok_full": used.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.TokenByDigest(ctx, d1); err != nil || !got.LastUsedAt.Equal(used) {
		t.Fatalf("LastUsedAt = %v, %v; want %v", got.LastUsedAt, err, used)
	}
}

// testTokenManyRevocations: every revocation reaches RevokedSince, however
// many come at once.
func testTokenManyRevocations(t *testing.T, s store.Store) {
	_, mark, err := s.RevokedSince(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		newToken(t, s, "org-a", fmt.Sprint(i), fmt.Sprint("secret-", i), base)
	}
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.RevokeToken(ctx, fmt.Sprint("tok_", i), base.Add(time.Second))
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[store.TokenDigest]bool{}
	for range 10 {
		digests, next, err := s.RevokedSince(ctx, mark)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range digests {
			seen[d] = true
		}
		mark = next
	}
	for i := range n {
		if !seen[store.DigestToken(fmt.Sprint("secret-", i))] {
			t.Fatalf("the revocation of token %d never reached RevokedSince", i)
		}
	}
}

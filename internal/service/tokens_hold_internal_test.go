package service

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
)

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestTokenHold: a hold is dropped when the token is revoked (by this
// process, or as read from the store), when its cache entry is replaced
// or evicted; it is stale once the token expires; a TELNYX_API_KEY
// token's hold never is.
func TestTokenHold(t *testing.T) {
	ctx := context.Background()
	db, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clock := time.Now()
	svc := New(Config{Store: db, StaticTokens: map[string]string{"static-secret": "org"}, Now: func() time.Time { return clock }})

	_, static, err := svc.HoldToken(ctx, "static-secret", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if static.Dropped != nil || static.Stale(clock.Add(1000*time.Hour)) {
		t.Fatalf("a static token's hold = %+v: it never changes", static)
	}

	secret, rec, err := svc.CreateToken(ctx, TokenSpec{Org: "org", ExpiresIn: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	_, h, err := svc.HoldToken(ctx, secret, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if h.Stale(clock) || closed(h.Dropped) {
		t.Fatal("a fresh hold is stale")
	}
	if !h.Stale(clock.Add(time.Hour)) || h.Stale(clock.Add(time.Hour-time.Second)) {
		t.Fatalf("hold expiring at %v: stale at the wrong time", h.Expires)
	}
	_, again, err := svc.HoldToken(ctx, secret, "127.0.0.1:1")
	if err != nil || again.Dropped != h.Dropped {
		t.Fatalf("a second hold of a cached token: %v, another entry", err)
	}
	if _, err := svc.RevokeToken(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if !closed(h.Dropped) || !h.Stale(clock) {
		t.Fatal("a revoked token's hold is not dropped")
	}
	if _, _, err := svc.HoldToken(ctx, secret, "127.0.0.1:1"); err == nil {
		t.Fatal("a revoked token holds again")
	}

	// Revoked in another process: this one reads it from the store.
	secret2, rec2, err := svc.CreateToken(ctx, TokenSpec{Org: "org"})
	if err != nil {
		t.Fatal(err)
	}
	_, h2, err := svc.HoldToken(ctx, secret2, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	other := New(Config{Store: db})
	if _, err := other.RevokeToken(ctx, rec2.ID); err != nil {
		t.Fatal(err)
	}
	if closed(h2.Dropped) {
		t.Fatal("dropped before this process read the revocation")
	}
	svc.PollRevocations(ctx)
	if !closed(h2.Dropped) {
		t.Fatal("a token revoked elsewhere: its hold is not dropped once read")
	}

	// An entry replaced (two lookups of one token at once) or evicted
	// drops its holds: they authenticate again.
	secret3, _, err := svc.CreateToken(ctx, TokenSpec{Org: "org"})
	if err != nil {
		t.Fatal(err)
	}
	_, h3, err := svc.HoldToken(ctx, secret3, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	c := svc.tokens
	d := store.DigestToken(secret3)
	c.remember(d, &cachedToken{t: c.known[d].t, dropped: make(chan struct{})}, c.mark)
	if !closed(h3.Dropped) {
		t.Fatal("a replaced entry's hold is not dropped")
	}
	held := map[store.TokenDigest]*cachedToken{}
	for i := len(c.known); i < maxKnown; i++ {
		d := store.DigestToken(fmt.Sprint("filler-", i))
		held[d] = &cachedToken{dropped: make(chan struct{})}
		c.known[d] = held[d]
	}
	c.remember(store.DigestToken("one more"), &cachedToken{dropped: make(chan struct{})}, c.mark)
	evicted := 0
	for d, ct := range held {
		_, cached := c.known[d]
		if closed(ct.dropped) == cached {
			t.Fatalf("an entry cached %v has its holds dropped %v", cached, closed(ct.dropped))
		}
		if !cached {
			evicted++
		}
	}
	if evicted == 0 {
		t.Fatal("the eviction dropped nothing")
	}
}

// revokingStore runs during once, within the next token lookup, after
// the store has answered it.
type revokingStore struct {
	store.Store
	during func()
}

func (s *revokingStore) TokenByDigest(ctx context.Context, d store.TokenDigest) (store.Token, error) {
	t, err := s.Store.TokenByDigest(ctx, d)
	if f := s.during; f != nil {
		s.during = nil
		f()
	}
	return t, err
}

// TestRevokedDuringLookup: a token revoked (and the revocation read) while
// a request's lookup of it was under way is not cached as valid: the next
// request is refused without any further read of revocations.
func TestRevokedDuringLookup(t *testing.T) {
	ctx := context.Background()
	db, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rs := &revokingStore{Store: db}
	svc := New(Config{Store: rs})
	other := New(Config{Store: db}) // another process sharing the store
	secret, rec, err := other.CreateToken(ctx, TokenSpec{Org: "org"})
	if err != nil {
		t.Fatal(err)
	}
	rs.during = func() {
		if _, err := other.RevokeToken(ctx, rec.ID); err != nil {
			t.Error(err)
		}
		svc.PollRevocations(ctx)
	}
	_, h, err := svc.HoldToken(ctx, secret, "127.0.0.1:1")
	if err != nil {
		t.Fatalf("the lookup that read the token before its revocation: %v", err)
	}
	if !h.Stale(time.Now()) {
		t.Error("its hold is not dropped: a stream would keep watching")
	}
	if _, err := svc.Authenticate(ctx, secret, "127.0.0.1:1"); err == nil {
		t.Fatal("the token revoked during the lookup is still accepted")
	}
}

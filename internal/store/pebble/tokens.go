package pebble

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// Tokens. Each is a record under its digest:
//
//	0x02 digest(32) -> token record (JSON, with "v":1)
//
// A store written before tokens had records holds the organization's name
// alone as the value; such a token is read as a full token of that
// organization, with an id derived from its digest, and rewritten in the
// new form when the store opens. The tokens live in memory too: a request
// costs no token read, and the directory's lock makes this process the only
// writer, so memory and disk never disagree.

// tokenTable is the engine's tokens in memory.
type tokenTable struct {
	mu       sync.RWMutex
	byDigest map[store.TokenDigest]*store.Token
	byID     map[string]store.TokenDigest
	// revoked is every revocation made by this process, in order; the
	// mark of RevokedSince is an index into it.
	revoked []store.TokenDigest
}

func newTokenTable() *tokenTable {
	return &tokenTable{byDigest: map[store.TokenDigest]*store.Token{}, byID: map[string]store.TokenDigest{}}
}

// tokenRecord is the stored form of a token. Times are Unix nanoseconds;
// 0 is the zero time.
type tokenRecord struct {
	V           int             `json:"v"`
	ID          string          `json:"id"`
	Name        string          `json:"name,omitempty"`
	Org         string          `json:"org"`
	Permissions []kv.Permission `json:"permissions"`
	Namespaces  []kv.ID         `json:"namespaces,omitempty"`
	Prefixes    []string        `json:"prefixes,omitempty"`
	ExpiresAt   int64           `json:"expires_at,omitempty"`
	CreatedAt   int64           `json:"created_at,omitempty"`
	LastUsedAt  int64           `json:"last_used_at,omitempty"`
	RevokedAt   int64           `json:"revoked_at,omitempty"`
}

const tokenRecordVersion = 1

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func encodeToken(t *store.Token) []byte {
	b, err := json.Marshal(tokenRecord{
		V: tokenRecordVersion, ID: t.ID, Name: t.Name, Org: t.Org, Permissions: t.Permissions,
		Namespaces: t.Namespaces, Prefixes: t.Prefixes,
		ExpiresAt: nanos(t.ExpiresAt), CreatedAt: nanos(t.CreatedAt), LastUsedAt: nanos(t.LastUsedAt), RevokedAt: nanos(t.RevokedAt),
	})
	if err != nil {
		panic(err) // plain fields always marshal
	}
	return b
}

// decodeToken decodes the record under digest dg; legacy is true for a
// record of before token records (the organization alone).
func decodeToken(dg store.TokenDigest, b []byte) (t store.Token, legacy bool, err error) {
	if len(b) == 0 || b[0] != '{' {
		return store.Token{ID: legacyTokenID(dg), Org: string(b), Permissions: kv.AllPermissions}, true, nil
	}
	var r tokenRecord
	if err := json.Unmarshal(b, &r); err != nil || r.V != tokenRecordVersion || r.ID == "" || r.Org == "" {
		return store.Token{}, false, errors.New("kvd/pebble: corrupt token record")
	}
	return store.Token{
		ID: r.ID, Name: r.Name, Org: r.Org, Permissions: kv.NormalizePermissions(r.Permissions),
		Namespaces: r.Namespaces, Prefixes: r.Prefixes,
		ExpiresAt: fromNanos(r.ExpiresAt), CreatedAt: fromNanos(r.CreatedAt), LastUsedAt: fromNanos(r.LastUsedAt), RevokedAt: fromNanos(r.RevokedAt),
	}, false, nil
}

// legacyTokenID is the id a token of before token records gets: derived
// from its digest, so every reading gives the same (the PostgreSQL engine
// derives it the same way).
func legacyTokenID(dg store.TokenDigest) string {
	sum := sha256.Sum256(dg[:]) // not the digest itself: a listing shows the id
	return "tok_" + hex.EncodeToString(sum[:12])
}

// loadToken adds a token read at open; it reports whether the record
// must be rewritten in the current form.
func (tt *tokenTable) loadToken(dg store.TokenDigest, value []byte) (rewrite bool, err error) {
	t, legacy, err := decodeToken(dg, value)
	if err != nil {
		return false, err
	}
	tt.byDigest[dg] = &t
	tt.byID[t.ID] = dg
	return legacy, nil
}

// rewriteLegacyTokens writes the records of tokens read in the legacy form
// anew, in one synced batch.
func (d *DB) rewriteLegacyTokens(digests []store.TokenDigest) error {
	if len(digests) == 0 {
		return nil
	}
	b := d.db.NewBatch()
	defer b.Close()
	for _, dg := range digests {
		if err := b.Set(tokenKey(dg), encodeToken(d.tokens.byDigest[dg]), nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kvd/pebble: rewrite token records: %w", err)
	}
	return nil
}

func copyToken(t *store.Token) store.Token {
	c := *t
	c.Permissions = slices.Clone(t.Permissions)
	c.Namespaces = slices.Clone(t.Namespaces)
	c.Prefixes = slices.Clone(t.Prefixes)
	return c
}

// CreateToken implements store.Tokens.
func (d *DB) CreateToken(ctx context.Context, t store.Token, dg store.TokenDigest) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	defer d.end()
	tt := d.tokens
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if _, ok := tt.byDigest[dg]; ok {
		return store.ErrTokenTaken
	}
	if _, ok := tt.byID[t.ID]; ok {
		return store.ErrTokenTaken
	}
	t = copyToken(&t)
	if err := d.db.Set(tokenKey(dg), encodeToken(&t), pebble.Sync); err != nil {
		return fmt.Errorf("kvd/pebble: create token: %w", err)
	}
	tt.byDigest[dg] = &t
	tt.byID[t.ID] = dg
	return nil
}

// TokenByDigest implements store.Tokens from memory.
func (d *DB) TokenByDigest(ctx context.Context, dg store.TokenDigest) (store.Token, error) {
	if err := d.begin(ctx); err != nil {
		return store.Token{}, err
	}
	defer d.end()
	tt := d.tokens
	tt.mu.RLock()
	defer tt.mu.RUnlock()
	t, ok := tt.byDigest[dg]
	if !ok {
		return store.Token{}, store.ErrTokenNotFound
	}
	return copyToken(t), nil
}

// ListTokens implements store.Tokens from memory.
func (d *DB) ListTokens(ctx context.Context, org string) ([]store.Token, error) {
	if err := d.begin(ctx); err != nil {
		return nil, err
	}
	defer d.end()
	tt := d.tokens
	tt.mu.RLock()
	var out []store.Token
	for _, t := range tt.byDigest {
		if org == "" || t.Org == org {
			out = append(out, copyToken(t))
		}
	}
	tt.mu.RUnlock()
	slices.SortFunc(out, func(a, b store.Token) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// RevokeToken implements store.Tokens.
func (d *DB) RevokeToken(ctx context.Context, id string, now time.Time) (store.Token, error) {
	if err := d.begin(ctx); err != nil {
		return store.Token{}, err
	}
	defer d.end()
	tt := d.tokens
	tt.mu.Lock()
	defer tt.mu.Unlock()
	dg, ok := tt.byID[id]
	if !ok {
		return store.Token{}, store.ErrTokenNotFound
	}
	t := tt.byDigest[dg]
	if !t.RevokedAt.IsZero() {
		return copyToken(t), nil
	}
	revoked := copyToken(t)
	revoked.RevokedAt = now.UTC()
	if err := d.db.Set(tokenKey(dg), encodeToken(&revoked), pebble.Sync); err != nil {
		return store.Token{}, fmt.Errorf("kvd/pebble: revoke token: %w", err)
	}
	*t = revoked
	tt.revoked = append(tt.revoked, dg)
	return copyToken(t), nil
}

// TouchTokens implements store.Tokens: the times are kept in memory and
// written without a sync, as befits a figure for display.
func (d *DB) TouchTokens(ctx context.Context, used map[string]time.Time) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	defer d.end()
	tt := d.tokens
	tt.mu.Lock()
	defer tt.mu.Unlock()
	b := d.db.NewBatch()
	defer b.Close()
	for id, at := range used {
		dg, ok := tt.byID[id]
		if !ok {
			continue
		}
		t := tt.byDigest[dg]
		if !at.After(t.LastUsedAt) {
			continue
		}
		t.LastUsedAt = at.UTC()
		if err := b.Set(tokenKey(dg), encodeToken(t), nil); err != nil {
			return err
		}
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("kvd/pebble: touch tokens: %w", err)
	}
	return nil
}

// RevokedSince implements store.Tokens. This process is the engine's only
// one, so its own revocations are all there are; marks count them.
func (d *DB) RevokedSince(ctx context.Context, mark uint64) ([]store.TokenDigest, uint64, error) {
	if err := d.begin(ctx); err != nil {
		return nil, 0, err
	}
	defer d.end()
	tt := d.tokens
	tt.mu.RLock()
	defer tt.mu.RUnlock()
	n := uint64(len(tt.revoked))
	if mark >= n {
		return nil, n, nil
	}
	return slices.Clone(tt.revoked[mark:]), n, nil
}

package pebble

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// A token stored before token records (the organization alone) opens as a
// full token of its organization, with the id derived from its digest
// (as the PostgreSQL engine's migration derives it), and is rewritten in
// the current form.
func TestLegacyTokens(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := store.DigestToken("an old token")
	if err := db.db.Set(tokenKey(d), []byte("acme"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for round := range 2 {
		db, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := db.TokenByDigest(ctx, d)
		sum := sha256.Sum256(d[:])
		if want := "tok_" + hex.EncodeToString(sum[:12]); err != nil || tok.ID != want || tok.Org != "acme" || !slices.Equal(tok.Permissions, kv.AllPermissions) {
			t.Fatalf("round %d: the old token = %+v, %v; want a full token of acme with id %s", round, tok, err, want)
		}
		raw, closer, err := db.db.Get(tokenKey(d))
		if err != nil {
			t.Fatal(err)
		}
		if raw[0] != '{' {
			t.Fatalf("round %d: the record was not rewritten: %q", round, raw)
		}
		closer.Close()
		db.Close()
	}
}

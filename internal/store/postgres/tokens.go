package postgres

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// Tokens live in the tokens table (migration 0004), under the digests of
// their secrets. The engine keeps no cache of its own: the service caches
// the tokens it has seen and learns of revocations through RevokedSince,
// whose marks are the revoked_seq column, drawn from a sequence in the
// transaction of the revocation.

const tokenColumns = `id, name, org, permissions, namespaces, prefixes, expires_at, created_at, last_used_at, revoked_at`

const (
	sqlCreateToken = `INSERT INTO tokens (digest, ` + tokenColumns + `)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)`
	sqlTokenByDigest = `SELECT ` + tokenColumns + ` FROM tokens WHERE digest = $1`
	sqlListTokens    = `SELECT ` + tokenColumns + ` FROM tokens WHERE $1 = '' OR org = $1 ORDER BY created_at, id`
	// The first revocation stays: a token revoked already is returned as
	// it is, by the second statement.
	sqlRevokeToken = `UPDATE tokens SET revoked_at = $2, revoked_seq = nextval('token_revocations')
WHERE id = $1 AND revoked_at IS NULL
RETURNING ` + tokenColumns
	sqlTokenByID  = `SELECT ` + tokenColumns + ` FROM tokens WHERE id = $1`
	sqlTouchToken = `UPDATE tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)`
	// revokedOverlap revocations before the mark are read again: sequence
	// numbers are drawn before their transactions commit, so one may become
	// visible after a higher one (a revocation is one short statement, so
	// far fewer than this many others can pass it).
	sqlRevokedSince = `SELECT digest, revoked_seq FROM tokens WHERE revoked_seq > $1 - 64 ORDER BY revoked_seq`
)

// timeArg maps the zero time to NULL.
func timeArg(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func scanToken(r rowScanner) (store.Token, error) {
	var (
		t                                 store.Token
		perms                             []string
		namespaces                        [][16]byte
		prefixes                          []string
		expires, created, used, revokedAt *time.Time
	)
	if err := r.Scan(&t.ID, &t.Name, &t.Org, &perms, &namespaces, &prefixes, &expires, &created, &used, &revokedAt); err != nil {
		return store.Token{}, err
	}
	ps := make([]kv.Permission, len(perms))
	for i, p := range perms {
		ps[i] = kv.Permission(p)
	}
	t.Permissions = kv.NormalizePermissions(ps)
	if namespaces != nil {
		t.Namespaces = make([]kv.ID, len(namespaces))
		for i, n := range namespaces {
			t.Namespaces[i] = kv.ID(n)
		}
	}
	t.Prefixes = prefixes
	for _, f := range []struct {
		dst *time.Time
		src *time.Time
	}{{&t.ExpiresAt, expires}, {&t.CreatedAt, created}, {&t.LastUsedAt, used}, {&t.RevokedAt, revokedAt}} {
		if f.src != nil {
			*f.dst = f.src.UTC()
		}
	}
	return t, nil
}

// CreateToken implements store.Tokens.
func (db *DB) CreateToken(ctx context.Context, t store.Token, d store.TokenDigest) error {
	perms := make([]string, len(t.Permissions))
	for i, p := range t.Permissions {
		perms[i] = string(p)
	}
	var namespaces [][16]byte
	if t.Namespaces != nil {
		namespaces = make([][16]byte, len(t.Namespaces))
		for i, n := range t.Namespaces {
			namespaces[i] = [16]byte(n)
		}
	}
	return db.conn(ctx, "create token", func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, sqlCreateToken, d[:], t.ID, t.Name, t.Org, perms, namespaces, t.Prefixes, timeArg(t.ExpiresAt), t.CreatedAt)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			return store.ErrTokenTaken
		}
		return err
	})
}

// TokenByDigest implements store.Tokens.
func (db *DB) TokenByDigest(ctx context.Context, d store.TokenDigest) (store.Token, error) {
	var t store.Token
	err := db.conn(ctx, "token by digest", func(c *pgx.Conn) error {
		var err error
		t, err = scanToken(c.QueryRow(ctx, sqlTokenByDigest, d[:]))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrTokenNotFound
		}
		return err
	})
	return t, err
}

// ListTokens implements store.Tokens.
func (db *DB) ListTokens(ctx context.Context, org string) ([]store.Token, error) {
	var out []store.Token
	err := db.conn(ctx, "list tokens", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, sqlListTokens, org)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			t, err := scanToken(rows)
			if err != nil {
				return err
			}
			out = append(out, t)
		}
		return rows.Err()
	})
	return out, err
}

// RevokeToken implements store.Tokens.
func (db *DB) RevokeToken(ctx context.Context, id string, now time.Time) (store.Token, error) {
	var t store.Token
	err := db.conn(ctx, "revoke token", func(c *pgx.Conn) error {
		var err error
		t, err = scanToken(c.QueryRow(ctx, sqlRevokeToken, id, now.UTC()))
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// Revoked already, or no such token.
		t, err = scanToken(c.QueryRow(ctx, sqlTokenByID, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrTokenNotFound
		}
		return err
	})
	return t, err
}

// TouchTokens implements store.Tokens, one statement per token, in id
// order (so that concurrent touches lock rows in one order).
func (db *DB) TouchTokens(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	ids := make([]string, 0, len(used))
	for id := range used {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return db.conn(ctx, "touch tokens", func(c *pgx.Conn) error {
		b := &pgx.Batch{}
		for _, id := range ids {
			b.Queue(sqlTouchToken, id, used[id].UTC())
		}
		return c.SendBatch(ctx, b).Close()
	})
}

// RevokedSince implements store.Tokens.
func (db *DB) RevokedSince(ctx context.Context, mark uint64) ([]store.TokenDigest, uint64, error) {
	var (
		out  []store.TokenDigest
		next = mark
	)
	err := db.conn(ctx, "revoked since", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, sqlRevokedSince, int64(mark))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				digest []byte
				seq    int64
			)
			if err := rows.Scan(&digest, &seq); err != nil {
				return err
			}
			var d store.TokenDigest
			copy(d[:], digest)
			out = append(out, d)
			next = max(next, uint64(seq))
		}
		return rows.Err()
	})
	return out, next, err
}

package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/edgekv/kv/internal/store"
	"github.com/jackc/pgx/v5/pgconn"
)

// wrap maps the errors that say the database cannot be reached, or went
// away, to store.ErrUnavailable (503 at the API) and keeps the cause; other
// engine errors stay internal.
func TestWrapUnavailable(t *testing.T) {
	ctx := context.Background()
	// A real connection failure: nothing listens on a port just freed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, refused := pgconn.Connect(ctx, "postgres://u@"+addr+"/db?sslmode=disable&connect_timeout=5")
	var ce *pgconn.ConnectError
	if !errors.As(refused, &ce) {
		t.Fatalf("connect to a closed port = %T %v, want a *pgconn.ConnectError", refused, refused)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	for _, c := range []struct {
		name        string
		ctx         context.Context
		err         error
		lost        bool
		unavailable bool
	}{
		{"connection refused", ctx, refused, false, true},
		{"starting up", ctx, &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}, false, true},
		{"admin shutdown", ctx, &pgconn.PgError{Code: "57P01", Severity: "FATAL"}, false, true},
		{"crash shutdown", ctx, &pgconn.PgError{Code: "57P02", Severity: "FATAL"}, false, true},
		{"too many connections", ctx, &pgconn.PgError{Code: "53300"}, false, true},
		{"connection failure", ctx, fmt.Errorf("in tx: %w", &pgconn.PgError{Code: "08006"}), false, true},
		{"connection lost mid-call", ctx, errors.New("unexpected EOF"), true, true},
		{"statement timeout", ctx, &pgconn.PgError{Code: "57014"}, false, true},
		{"read-only server", ctx, &pgconn.PgError{Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}, false, true},
		{"unique violation", ctx, &pgconn.PgError{Code: "23505"}, false, false},
		{"other failure", ctx, errors.New("boom"), false, false},
		{"caller gone", cancelled, errors.New("unexpected EOF"), true, false},
	} {
		err := wrap(c.ctx, "op", c.err, c.lost)
		if got := errors.Is(err, store.ErrUnavailable); got != c.unavailable {
			t.Errorf("%s: wrap = %v; matches store.ErrUnavailable: %v, want %v", c.name, err, got, c.unavailable)
		}
		if !errors.Is(err, c.err) {
			t.Errorf("%s: wrap = %v, which lost its cause %v", c.name, err, c.err)
		}
	}
	// A caller that went away is told so: the API answers it as such, not
	// as an internal error.
	if err := wrap(cancelled, "op", errors.New("unexpected EOF"), true); !errors.Is(err, context.Canceled) {
		t.Errorf("wrap with a canceled context = %v, want it to match context.Canceled", err)
	}
	// The contract's errors pass through as they are.
	nf := store.ErrKeyNotFound
	if err := wrap(ctx, "op", nf, true); err != error(nf) {
		t.Errorf("wrap(KeyNotFound) = %v", err)
	}
}

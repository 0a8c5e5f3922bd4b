package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/postgres"
)

// TestStatsCountsErrorsByKind pins how failed calls are counted for
// kvd_pg_errors_total: by the kind wrap maps them to.
func TestStatsCountsErrorsByKind(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want postgres.ErrorCounts
	}{
		{"statement timeout", ctx, &pgconn.PgError{Code: "57014"}, postgres.ErrorCounts{TimedOut: 1}},
		{"server shutting down", ctx, &pgconn.PgError{Code: "57P01"}, postgres.ErrorCounts{Unavailable: 1}},
		{"read-only server", ctx, &pgconn.PgError{Code: "25006"}, postgres.ErrorCounts{Unavailable: 1}},
		{"connection exception", ctx, &pgconn.PgError{Code: "08006"}, postgres.ErrorCounts{Unavailable: 1}},
		{"unavailable", ctx, fmt.Errorf("x: %w", store.ErrUnavailable), postgres.ErrorCounts{Unavailable: 1}},
		{"syntax error", ctx, &pgconn.PgError{Code: "42601"}, postgres.ErrorCounts{EngineFailures: 1}},
		{"anything else", ctx, errors.New("disk on fire"), postgres.ErrorCounts{EngineFailures: 1}},
		{"not found", ctx, store.ErrKeyNotFound, postgres.ErrorCounts{}},
		{"not ready", ctx, &store.NotReadyError{Status: kv.StatusPending}, postgres.ErrorCounts{}},
		{"caller gave up", canceled, context.Canceled, postgres.ErrorCounts{}},
		{"success", ctx, nil, postgres.ErrorCounts{}},
	} {
		if got := postgres.CountedAs(tc.ctx, "op", tc.err); got != tc.want {
			t.Errorf("%s: counted %+v; want %+v", tc.name, got, tc.want)
		}
	}
}

// TestStatsDuringOutage: while the database is down, failed calls count as
// unavailable and the breaker reads open; once it is back, closed.
func TestStatsDuringOutage(t *testing.T) {
	srv := pgtest.NewServer(t)
	db := open(t, srv.URL(t), postgres.Config{MaxConns: 2})
	ns := readyNamespace(t, db, "org", "ns")
	get := func() error {
		_, err := db.GetNamespace(ctx, "org", ns.ID)
		return err
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	s := db.Stats()
	if s.Errors != (postgres.ErrorCounts{}) || s.BreakerOpen || s.Pool == nil || s.Pool.TotalConns() < 1 {
		t.Fatalf("stats of a healthy engine: %+v, pool %d connections", s, s.Pool.TotalConns())
	}
	srv.Stop(t)
	deadline := time.Now().Add(time.Minute)
	for !db.Stats().BreakerOpen {
		if err := get(); err != nil && !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("with the database down: %v; want store.ErrUnavailable", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the breaker is not open a minute after the database stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s := db.Stats(); s.Errors.Unavailable < 1 || s.Errors.EngineFailures != 0 {
		t.Errorf("errors counted during the outage: %+v; want unavailable ones only", s.Errors)
	}
	srv.Restart(t)
	for get() != nil {
		if time.Now().After(deadline) {
			t.Fatal("calls still fail a minute after the database came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if db.Stats().BreakerOpen {
		t.Error("the breaker is open after a call succeeded")
	}
}

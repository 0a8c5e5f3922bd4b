package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/server"
	"github.com/edgekv/kv/internal/server/servertest"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestAPIPostgres runs the black-box suite on the PostgreSQL engine.
func TestAPIPostgres(t *testing.T) {
	servertest.Run(t, func(t *testing.T, opts ...kvdtest.Option) *kvdtest.Server {
		return kvdtest.Start(t, append([]kvdtest.Option{kvdtest.WithStore(pgtest.URL(t))}, opts...)...)
	})
}

// TestPostgresAbandonedAndTimedOut: a client that goes away while its
// statement waits, and a statement the database cancels for running past
// statement_timeout, are logged as what they are (debug; warn), never as
// an ERROR "internal error", and answered as what they are: nothing for
// the one, 503 for the other.
func TestPostgresAbandonedAndTimedOut(t *testing.T) {
	dbURL := pgtest.URL(t)
	logs := &kvdtest.SyncBuffer{}
	s := kvdtest.Start(t, kvdtest.WithStore(dbURL),
		kvdtest.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		kvdtest.WithConfig(func(c *server.Config) {
			c.Postgres.StatementTimeout = 500 * time.Millisecond
			c.MetricsListen = "127.0.0.1:0"
		}))
	id := readyNamespace(t, s)
	if resp, body := call(t, http.DefaultClient, "PUT", s.URL+"/v2/storage/kvs/"+id+"/keys/k", s.Token, "v"); resp.StatusCode != 201 {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	// Hold the key's row locked, so a write of it waits.
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), "SELECT 1 FROM keys WHERE key = 'k' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	// A client that gives up after 100 ms.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "PUT", s.URL+"/v2/storage/kvs/"+id+"/keys/k", strings.NewReader("abandoned"))
	req.Header.Set("Authorization", "Bearer "+s.Token)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the abandoned PUT was answered: %d", resp.StatusCode)
	}
	// A client that waits: the database cancels the statement.
	resp, body := call(t, http.DefaultClient, "PUT", s.URL+"/v2/storage/kvs/"+id+"/keys/k", s.Token, "timed out")
	if resp.StatusCode != http.StatusServiceUnavailable || errCode(t, body) != "10033" || resp.Header.Get("X-Should-Retry") != "true" || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("PUT past statement_timeout: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	tx.Rollback(t.Context())

	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "request abandoned by its client") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	l := logs.String()
	if strings.Contains(l, "level=ERROR") {
		t.Fatalf("an ERROR was logged:\n%s", l)
	}
	if !strings.Contains(l, "request abandoned by its client") || !strings.Contains(l, "level=WARN msg=\"storage unavailable\"") {
		t.Fatalf("the abandoned request and the timeout are not logged as such:\n%s", l)
	}
	mresp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer mresp.Body.Close()
	m, _ := io.ReadAll(mresp.Body)
	for _, want := range []string{`route="key",status="499"} 1`, `route="key",status="503"} 1`} {
		if !strings.Contains(string(m), want) {
			t.Fatalf("metrics lack %s:\n%s", want, m)
		}
	}
}

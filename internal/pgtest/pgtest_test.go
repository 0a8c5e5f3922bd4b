package pgtest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/edgekv/kv/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Each URL names its own empty database.
func TestURLIsFreshDatabase(t *testing.T) {
	ctx := context.Background()
	a, b := pgtest.URL(t), pgtest.URL(t)
	if a == b {
		t.Fatalf("two calls returned the same URL %s", a)
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	if _, err := ca.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)
	var n int
	if err := cb.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("second database has %d tables, want 0", n)
	}
}

// A crashed server comes back on the same data and port: what was committed
// before the crash is there, what was not is not, and the server recovered
// from its write-ahead log rather than from a clean shutdown.
func TestServerCrashRestart(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.NewServer(t)
	url := srv.URL(t)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "INSERT INTO t SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "INSERT INTO t VALUES (1001)"); err != nil {
		t.Fatal(err)
	}
	// A transaction still open at the crash.
	open, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(ctx)
	tx, err := open.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t SELECT generate_series(2000, 2999)"); err != nil {
		t.Fatal(err)
	}

	srv.Crash(t)
	if err := c.Ping(ctx); err == nil {
		t.Fatal("a connection made before the crash still answers")
	}
	if c2, err := pgx.Connect(ctx, url); err == nil {
		c2.Close(ctx)
		t.Fatal("the crashed server accepts connections")
	}

	srv.Restart(t)
	c3, err := pgx.Connect(ctx, url) // same URL: same port, same database
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer c3.Close(ctx)
	var n, max int
	if err := c3.QueryRow(ctx, "SELECT count(*), max(x) FROM t").Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != 1001 || max != 1001 {
		t.Fatalf("after the restart t has %d rows, max %d; want the 1001 committed rows, max 1001", n, max)
	}
	if log := srv.Log(); !strings.Contains(log, "not properly shut down") {
		t.Fatalf("the restart did not recover from a crash; server log:\n%s", log)
	}

	// It can crash and come back again.
	srv.Crash(t)
	srv.Restart(t)
	c4, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect after the second restart: %v", err)
	}
	defer c4.Close(ctx)
	if err := c4.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1001 {
		t.Fatalf("after the second restart t has %d rows (%v); want 1001", n, err)
	}
}

// A stopped server comes back on the same data and port after a clean
// shutdown (no recovery from the write-ahead log).
func TestServerStopRestart(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.NewServer(t)
	url := srv.URL(t)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE TABLE t AS SELECT generate_series(1, 10) AS x"); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	if err := c.Ping(ctx); err == nil {
		t.Fatal("a connection made before the stop still answers")
	}
	if c2, err := pgx.Connect(ctx, url); err == nil {
		c2.Close(ctx)
		t.Fatal("the stopped server accepts connections")
	}
	srv.Restart(t)
	c3, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer c3.Close(ctx)
	var n int
	if err := c3.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 10 {
		t.Fatalf("after the restart t has %d rows (%v); want 10", n, err)
	}
	log := srv.Log()
	if !strings.Contains(log, "database system was shut down at") || strings.Contains(log, "not properly shut down") {
		t.Fatalf("the restart did not follow a clean shutdown; server log:\n%s", log)
	}
}

// The proxy relays a session and counts every connection it accepts,
// including those it cannot pass on because the server is down.
func TestProxyCountsConnections(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.NewServer(t)
	p := pgtest.NewProxy(t, srv.Addr())
	url := p.URL(srv.URL(t))
	for i := range 3 {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatalf("connect %d through the proxy: %v", i, err)
		}
		var one int
		if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("query through the proxy: %d, %v", one, err)
		}
		c.Close(ctx)
	}
	if n := p.Accepted(); n != 3 {
		t.Fatalf("the proxy accepted %d connections, want 3", n)
	}
	srv.Stop(t)
	if c, err := pgx.Connect(ctx, url); err == nil {
		c.Close(ctx)
		t.Fatal("connected through the proxy to a stopped server")
	}
	// pgx follows a start-up that failed on a closed connection with a
	// cancel request, a connection of its own, sent in the background.
	if n := p.Accepted(); n < 4 || n > 5 {
		t.Fatalf("the proxy accepted %d connections, want 4 or 5 (one to the stopped server, and maybe pgx's cancel request)", n)
	}
}

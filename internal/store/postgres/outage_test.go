package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/postgres"
)

// While the database is down, calls that need a connection fail at once
// with store.ErrUnavailable, and however many callers there are, the engine
// makes no more connection attempts than the pool's size (those under way
// when the database went away) plus one probe per breaker interval; once
// the database is back, calls succeed again without anyone reopening
// anything.
func TestOutagePacesAttempts(t *testing.T) {
	srv := pgtest.NewServer(t)
	const (
		pool    = 4
		callers = 64
	)
	logs := &kvdtest.SyncBuffer{}
	db := open(t, srv.URL(t), postgres.Config{MaxConns: pool, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ns := readyNamespace(t, db, "org", "ns")
	put := func(key string) error {
		_, err := db.PutKey(ctx, "org", ns.ID, key, store.PutValue{Data: []byte("v"), ContentType: "text/plain"}, base)
		return err
	}

	var down atomic.Bool
	var refused, failed, other atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				err := put(fmt.Sprintf("k%d", (i*7+n)%32))
				switch {
				case err == nil:
				case errors.Is(err, store.ErrUnavailable):
					if down.Load() {
						refused.Add(1)
					}
					failed.Add(1)
					time.Sleep(time.Millisecond)
				default:
					other.Add(1)
					t.Errorf("PutKey: %v; want success or store.ErrUnavailable", err)
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)

	before := postgres.ConnectAttempts(db)
	wentDown := time.Now()
	srv.Stop(t)
	down.Store(true)
	time.Sleep(3 * time.Second)
	down.Store(false)
	attempts := postgres.ConnectAttempts(db) - before
	outage := time.Since(wentDown)
	srv.Restart(t)

	// Serving again, by itself.
	deadline := time.Now().Add(time.Minute)
	for put("after") != nil {
		if time.Now().After(deadline) {
			t.Fatal("PutKey still fails a minute after the database came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	bound := int64(pool + postgres.MaxProbes(outage))
	t.Logf("%d callers, a pool of %d: %d connection attempts in a %v outage (bound %d); %d calls answered ErrUnavailable while the database was down",
		callers, pool, attempts, outage.Round(time.Millisecond), bound, refused.Load())
	if attempts > bound {
		t.Errorf("%d connection attempts while the database was down for %v; want at most %d (the pool's %d, and one probe per interval)", attempts, outage, bound, pool)
	}
	if refused.Load() < callers {
		t.Errorf("%d calls failed while the database was down; want at least one per caller (%d): calls wait rather than fail", refused.Load(), callers)
	}
	// The log tells of the outage, in a few lines, not one per call.
	if l := logs.String(); !strings.Contains(l, "cannot connect to the database") || !strings.Contains(l, "connected to the database again") {
		t.Errorf("the log does not tell of the outage and the recovery:\n%s", l)
	} else if n := strings.Count(l, "\n"); n > 10 {
		t.Errorf("%d log lines for one outage:\n%s", n, l)
	}
}

// Open waits for a database that is not up yet, saying so in the log at
// most every few seconds, and returns once it is.
func TestOpenWaitsForDatabase(t *testing.T) {
	srv := pgtest.NewServer(t)
	u := srv.URL(t)
	srv.Stop(t)
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	type opened struct {
		db  *postgres.DB
		err error
	}
	done := make(chan opened, 1)
	start := time.Now()
	go func() {
		db, err := postgres.Open(ctx, u, postgres.Config{Logger: logger, OpenTimeout: 2 * time.Minute})
		done <- opened{db, err}
	}()
	time.Sleep(1500 * time.Millisecond)
	select {
	case o := <-done:
		t.Fatalf("Open returned while the database was down: %v", o.err)
	default:
	}
	srv.Restart(t)
	var o opened
	select {
	case o = <-done:
	case <-time.After(time.Minute):
		t.Fatal("Open still waiting a minute after the database came up")
	}
	if o.err != nil {
		t.Fatalf("Open: %v", o.err)
	}
	defer o.db.Close()
	waited := time.Since(start)
	ns := readyNamespace(t, o.db, "org", "ns") // migrated, and serving
	if _, err := o.db.GetKey(ctx, "org", ns.ID, "k", base); !errors.Is(err, store.ErrKeyNotFound) {
		t.Fatalf("GetKey after Open = %v, want not found", err)
	}
	mu.Lock()
	l := logs.String()
	mu.Unlock()
	lines := strings.Count(l, "waiting for the database")
	if lines < 1 || lines > 1+int(waited/(5*time.Second)) {
		t.Errorf("%d lines saying Open waits, in %v; want one at once and then at most one every 5s:\n%s", lines, waited, l)
	}
	if !strings.Contains(l, "connected to the database") {
		t.Errorf("the log does not say Open connected:\n%s", l)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// Open gives up after OpenTimeout with the last attempt's error, and at
// once when its context ends.
func TestOpenGivesUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	u := "postgres://kvd@" + addr + "/kv?sslmode=disable"
	quiet := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))

	_, err = postgres.Open(ctx, u, postgres.Config{Logger: quiet, OpenTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "did not accept a connection within 1s") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Open of a database that is not there = %v; want it to say it waited 1s, and why", err)
	}

	_, err = postgres.Open(ctx, u, postgres.Config{Logger: quiet, OpenTimeout: -1})
	if err == nil || !strings.Contains(err.Error(), "connect") {
		t.Fatalf("Open with a single attempt = %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(300 * time.Millisecond); cancel() }()
	_, err = postgres.Open(cctx, u, postgres.Config{Logger: quiet, OpenTimeout: time.Hour})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Open whose context was canceled = %v, want context.Canceled", err)
	}
}

// A server that turns read-only under the pool (a primary demoted, or made
// read-only while a failover manager promotes another) fails writes with
// store.ErrUnavailable, not an internal error, and none of the pool's
// connections to it is used again: with target_session_attrs=read-write,
// the next calls go to the server that takes writes.
func TestReadOnlyServer(t *testing.T) {
	first, second := pgtest.NewServer(t), pgtest.NewServer(t)
	// One database name on both, as a standby has its primary's: each
	// server's own "postgres".
	u1, u2 := dbURL(t, first.URL(t), "postgres"), dbURL(t, second.URL(t), "postgres")
	const conns = 4
	multi := mustParse(t, u1)
	multi.Host += "," + mustParse(t, u2).Host
	q := multi.Query()
	q.Set("target_session_attrs", "read-write")
	multi.RawQuery = q.Encode()
	db := open(t, multi.String(), postgres.Config{MaxConns: conns})
	ns := readyNamespace(t, db, "org", "ns")
	// The namespace on the second server too, as a promoted standby
	// would have it.
	db2 := open(t, u2, postgres.Config{})
	if err := db2.CreateNamespace(ctx, kv.Namespace{ID: ns.ID, Org: "org", Name: "ns", Status: kv.StatusPending, CreatedAt: base, UpdatedAt: base}); err != nil {
		t.Fatal(err)
	}
	if err := db2.CompleteProvision(ctx, ns.ID, "test", kv.StatusProvisionOK, base); err != nil {
		t.Fatal(err)
	}
	put := func(key string) error {
		_, err := db.PutKey(ctx, "org", ns.ID, key, store.PutValue{Data: []byte("v"), ContentType: "text/plain"}, base)
		return err
	}
	// Every connection of the pool in use, so that the pool holds conns
	// connections to the first server.
	putAll := func(prefix string) []error {
		errs := make([]error, conns)
		var wg sync.WaitGroup
		for i := range conns {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = put(fmt.Sprintf("%s%d", prefix, i)) }()
		}
		wg.Wait()
		return errs
	}
	for _, err := range putAll("before") {
		if err != nil {
			t.Fatal(err)
		}
	}

	raw1 := rawConn(t, u1)
	for _, sql := range []string{"ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"} {
		if _, err := raw1.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	// A session takes the reloaded setting before its next statement but
	// one; write until a write is refused.
	var refused error
	for i := 0; i < 10*conns && refused == nil; i++ {
		refused = put(fmt.Sprintf("during%d", i))
	}
	if !errors.Is(refused, store.ErrUnavailable) {
		t.Fatalf("a write on a server turned read-only = %v; want an error matching store.ErrUnavailable", refused)
	}
	t.Logf("refused: %v", refused)
	for i, err := range putAll("after") {
		if err != nil {
			t.Errorf("write %d after a write was refused as read-only: %v; want it made on the server that takes writes", i, err)
		}
	}
	raw2 := rawConn(t, u2)
	var n int
	if err := raw2.QueryRow(ctx, "SELECT count(*) FROM keys WHERE key LIKE 'after%'").Scan(&n); err != nil || n != conns {
		t.Fatalf("the second server holds %d of the %d writes made after the refusal (%v)", n, conns, err)
	}
}

// dbURL is u with database name.
func dbURL(t *testing.T, u, name string) string {
	p := mustParse(t, u)
	p.Path = "/" + name
	return p.String()
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

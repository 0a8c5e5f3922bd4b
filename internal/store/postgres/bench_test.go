package postgres

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store"
	"github.com/jackc/pgx/v5"
)

// The benchmarks compare PutKey and GetKey through the store with the very
// same SQL statements issued directly on pgx connections, at the same
// concurrency, so that the store's own cost shows as the ratio of the two:
//
//	go test -run '^$' -bench . -benchtime 3s -count 3 ./internal/store/postgres/

// benchParallelism goroutines per GOMAXPROCS issue requests; both sides
// get one connection per goroutine.
const benchParallelism = 4

const benchKeys = 1000

var benchValue = make([]byte, 100)

type benchEnv struct {
	url  string
	db   *DB
	ns   kv.Namespace
	id   [16]byte
	now  time.Time
	conc int
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	ctx := context.Background()
	conc := benchParallelism * runtime.GOMAXPROCS(0)
	url := pgtest.URL(b)
	db, err := Open(ctx, url, Config{MaxConns: conc})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ns := kv.Namespace{ID: kv.NewID(), Org: "bench", Name: "bench", Status: kv.StatusPending, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateNamespace(ctx, ns); err != nil {
		b.Fatal(err)
	}
	if err := db.CompleteProvision(ctx, ns.ID, "bench", kv.StatusProvisionOK, now); err != nil {
		b.Fatal(err)
	}
	for i := range benchKeys {
		if _, err := db.PutKey(ctx, ns.Org, ns.ID, benchKey(i), store.PutValue{Data: benchValue, ContentType: kv.DefaultContentType}, now); err != nil {
			b.Fatal(err)
		}
	}
	id := [16]byte(ns.ID)
	return &benchEnv{url: url, db: db, ns: ns, id: id, now: now, conc: conc}
}

func benchKey(i int) string { return fmt.Sprintf("bench/%04d", i%benchKeys) }

// rawConns opens one plain pgx connection per goroutine, warmed up so that
// connecting and preparing are not measured.
func (e *benchEnv) rawConns(b *testing.B, warm func(c *pgx.Conn) error) chan *pgx.Conn {
	b.Helper()
	ctx := context.Background()
	conns := make(chan *pgx.Conn, e.conc)
	for range e.conc {
		c, err := pgx.Connect(ctx, e.url)
		if err != nil {
			b.Fatal(err)
		}
		if err := warm(c); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(context.Background()) })
		conns <- c
	}
	return conns
}

// warmStore makes the store open and prepare its connections up front.
func (e *benchEnv) warmStore(b *testing.B, op func(ctx context.Context) error) {
	b.Helper()
	ctx := context.Background()
	done := make(chan error, e.conc)
	for range e.conc {
		go func() { done <- op(ctx) }()
	}
	for range e.conc {
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// run measures op at benchParallelism goroutines per GOMAXPROCS. With
// conns, each goroutine takes one connection for its whole run; without,
// op gets nil.
func (e *benchEnv) run(b *testing.B, conns chan *pgx.Conn, op func(ctx context.Context, c *pgx.Conn, key string) error) {
	var n atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		var c *pgx.Conn
		if conns != nil {
			c = <-conns
			defer func() { conns <- c }()
		}
		for pb.Next() {
			if err := op(ctx, c, benchKey(int(n.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkPutKey(b *testing.B) {
	e := newBenchEnv(b)
	v := store.PutValue{Data: benchValue, ContentType: kv.DefaultContentType}
	viaStore := func(ctx context.Context, _ *pgx.Conn, key string) error {
		_, err := e.db.PutKey(ctx, e.ns.Org, e.ns.ID, key, v, e.now)
		return err
	}
	viaPgx := func(ctx context.Context, c *pgx.Conn, key string) error {
		var (
			status, current *string
			version, rev    *int64
			pass            *bool
		)
		return c.QueryRow(ctx, sqlPutKey, putKeyArgs(e.id, e.ns.Org, key, v.Data, v.ContentType, v.ExpiresAt, store.Condition{}, e.now, shardOf(c))...).Scan(&status, &version, &rev, &pass, &current)
	}
	b.Run("store", func(b *testing.B) {
		e.warmStore(b, func(ctx context.Context) error { return viaStore(ctx, nil, benchKey(0)) })
		e.run(b, nil, viaStore)
	})
	b.Run("pgx", func(b *testing.B) {
		e.run(b, e.rawConns(b, func(c *pgx.Conn) error { return viaPgx(context.Background(), c, benchKey(0)) }), viaPgx)
	})
}

func BenchmarkGetKey(b *testing.B) {
	e := newBenchEnv(b)
	viaStore := func(ctx context.Context, _ *pgx.Conn, key string) error {
		v, err := e.db.GetKey(ctx, e.ns.Org, e.ns.ID, key, e.now)
		if err == nil {
			v.Close()
		}
		return err
	}
	viaPgx := func(ctx context.Context, c *pgx.Conn, key string) error {
		var (
			status, contentType *string
			data                []byte
			updated, expires    *int64
		)
		return c.QueryRow(ctx, sqlGetKey, e.id, e.ns.Org, []byte(key)).Scan(&status, &data, &contentType, &updated, &expires)
	}
	b.Run("store", func(b *testing.B) {
		e.warmStore(b, func(ctx context.Context) error { return viaStore(ctx, nil, benchKey(0)) })
		e.run(b, nil, viaStore)
	})
	b.Run("pgx", func(b *testing.B) {
		e.run(b, e.rawConns(b, func(c *pgx.Conn) error { return viaPgx(context.Background(), c, benchKey(0)) }), viaPgx)
	})
}

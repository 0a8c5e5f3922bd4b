package postgres_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/postgres"
)

// TestDatabaseRestart crashes the database server under a DB and starts it
// again: calls made while it is down fail with an error matching
// store.ErrUnavailable, and once it is back (and the breaker has made its
// next attempt, within one interval) every call succeeds, even when no
// call was made while it was down and the pool still holds the connections
// of before the crash. Connections of a healthy server are reused.
func TestDatabaseRestart(t *testing.T) {
	srv := pgtest.NewServer(t)
	const conns = 4
	db := open(t, srv.URL(t), postgres.Config{MaxConns: conns})
	ns := readyNamespace(t, db, "org", "ns")
	put := func(key, value string) error {
		_, err := db.PutKey(ctx, "org", ns.ID, key, store.PutValue{Data: []byte(value), ContentType: "text/plain"}, base)
		return err
	}
	// Every connection of the pool in use at once, so the pool holds
	// conns connections when the server goes down.
	fill := func() {
		var wg sync.WaitGroup
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := put(fmt.Sprintf("k%d", i), "v"); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	fill()
	made := postgres.NewConns(db)
	for i := range 20 {
		if err := put(fmt.Sprintf("k%d", i%conns), "w"); err != nil {
			t.Fatal(err)
		}
	}
	if n := postgres.NewConns(db) - made; n != 0 {
		t.Fatalf("%d connections made for calls one at a time with %d idle ones; want them reused", n, conns)
	}

	srv.Crash(t)
	for i := range 2 * conns {
		err := put("down", "v")
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("PutKey %d with the database down = %v, want an error matching store.ErrUnavailable", i, err)
		}
		if _, err := db.GetKey(ctx, "org", ns.ID, "k0", base); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("GetKey %d with the database down = %v, want an error matching store.ErrUnavailable", i, err)
		}
	}
	srv.Restart(t)
	// The breaker makes its next attempt within one interval: until then
	// calls are refused without dialing, and only so.
	deadline := time.Now().Add(10 * time.Second)
	for err := put("probe", "v"); err != nil; err = put("probe", "v") {
		if !postgres.NotConnecting(err) || time.Now().After(deadline) {
			t.Fatalf("PutKey after the restart: %v; want success, or the breaker's refusal until its next attempt", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range 2 * conns {
		if err := put(fmt.Sprintf("after%d", i), "v"); err != nil {
			t.Fatalf("PutKey %d after the restart: %v", i, err)
		}
	}

	// The same with no call while the server is down: the connections the
	// pool held before the crash are all dead, and no call may fail on one.
	fill()
	srv.Crash(t)
	srv.Restart(t)
	var wg sync.WaitGroup
	for i := range 2 * conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := db.GetKey(ctx, "org", ns.ID, "k0", base); err != nil {
				t.Errorf("GetKey %d right after a restart: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

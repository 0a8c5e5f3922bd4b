package crashtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/linearizability"
	"github.com/edgekv/kv/internal/pgtest"
)

// TestLinearizable runs many clients against kvd over HTTP, with no crash,
// and checks the history with porcupine: on the embedded engine, on
// PostgreSQL, and through two kvd processes sharing one PostgreSQL database
// (each client talks to one of them, so a key's operations cross processes).
func TestLinearizable(t *testing.T) {
	t.Run("pebble", func(t *testing.T) {
		checkConcurrent(t, startKVD(t, t.TempDir()))
	})
	t.Run("postgres", func(t *testing.T) {
		checkConcurrent(t, startKVD(t, pgtest.URL(t)))
	})
	t.Run("postgres-two-processes", func(t *testing.T) {
		url := pgtest.URL(t)
		checkConcurrent(t, startKVD(t, url), startKVD(t, url))
	})
}

func checkConcurrent(t *testing.T, servers ...*kvd) {
	const (
		clients = 16
		keys    = 8
		opsEach = 150
	)
	hc := newHTTPClient()
	a := api{hc: hc, base: servers[0].url()}
	ns := a.createNamespace(t, "linearizable")
	rec := linearizability.NewRecorder()
	var mu sync.Mutex
	var failures []error
	var wg sync.WaitGroup
	start := time.Now()
	for id := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &linearizability.Client{HTTP: hc, BaseURL: servers[id%len(servers)].url(), Token: apiKey, Namespace: ns, Rec: rec, ID: id}
			r := rand.New(rand.NewPCG(uint64(id), 7))
			for i := range opsEach {
				key := fmt.Sprintf("k%d", r.IntN(keys))
				var res linearizability.Result
				switch x := r.IntN(100); {
				case x < 45:
					res = c.Put(context.Background(), key, fmt.Sprintf("c%d-%d", id, i))
				case x < 60:
					res = c.Delete(context.Background(), key)
				default:
					res = c.Get(context.Background(), key)
				}
				if res.Err != nil {
					mu.Lock()
					failures = append(failures, res.Err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(failures...); err != nil {
		t.Fatalf("%d operations failed: %v", len(failures), err)
	}
	ops := rec.Operations()
	if len(ops) != clients*opsEach {
		t.Fatalf("recorded %d operations, want %d", len(ops), clients*opsEach)
	}
	if linearizability.Check(t, ops) {
		t.Logf("%d kvd process(es), %d clients: %v in %v; linearizable", len(servers), clients, rec.Stats(), time.Since(start).Round(time.Millisecond))
	}
}

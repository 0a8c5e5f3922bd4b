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
// (each client talks to one of them, so a key's operations cross processes;
// with small pools, so that reads and writes are served in groups).
func TestLinearizable(t *testing.T) {
	t.Run("pebble", func(t *testing.T) {
		checkConcurrent(t, startKVD(t, t.TempDir()))
	})
	t.Run("postgres", func(t *testing.T) {
		checkConcurrent(t, startKVD(t, pgtest.URL(t)))
	})
	t.Run("postgres-two-processes", func(t *testing.T) {
		url := pgtest.URL(t)
		checkConcurrent(t, startKVD(t, url, smallPool...), startKVD(t, url, smallPool...))
	})
}

// smallPool gives a kvd on PostgreSQL two connections: one group of plain
// writes and one statement of reads at a time, so that the clients' writes
// and reads mostly share transactions and statements.
var smallPool = []string{"--pg-max-conns", "2"}

// TestLinearizableConditional is TestLinearizable with conditional PUTs
// and DELETEs (If-Match the ETag just read, If-None-Match: *) and atomic
// batches over two keys, mixed with plain operations.
func TestLinearizableConditional(t *testing.T) {
	t.Run("pebble", func(t *testing.T) {
		checkConditional(t, startKVD(t, t.TempDir()))
	})
	t.Run("postgres", func(t *testing.T) {
		checkConditional(t, startKVD(t, pgtest.URL(t)))
	})
	t.Run("postgres-two-processes", func(t *testing.T) {
		url := pgtest.URL(t)
		checkConditional(t, startKVD(t, url, smallPool...), startKVD(t, url, smallPool...))
	})
}

func checkConditional(t *testing.T, servers ...*kvd) {
	const (
		clients = 12
		groups  = 3
		opsEach = 120
	)
	hc := newHTTPClient()
	a := api{hc: hc, base: servers[0].url()}
	ns := a.createNamespace(t, "conditional")
	rec := linearizability.NewRecorder()
	var mu sync.Mutex
	var failures []error
	var wg sync.WaitGroup
	counts := map[string]int{}
	for id := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &linearizability.Client{HTTP: hc, BaseURL: servers[id%len(servers)].url(), Token: apiKey, Namespace: ns, Rec: rec, ID: id}
			r := rand.New(rand.NewPCG(uint64(id), 11))
			type seen struct{ value, etag string }
			cache := map[string]*seen{} // what this client last read or wrote
			ctx := context.Background()
			for i := range opsEach {
				g := fmt.Sprintf("g%d", r.IntN(groups))
				ka, kb := g+"/a", g+"/b"
				key := []string{ka, kb}[r.IntN(2)]
				v := fmt.Sprintf("c%d-%d", id, i)
				var res linearizability.Result
				kind := ""
				remember := func(k string, res linearizability.Result, value string) {
					if res.Err == nil && !res.Out.Failed && !res.Out.Unknown && res.ETag != "" {
						cache[k] = &seen{value, res.ETag}
					}
				}
				switch x := r.IntN(100); {
				case x < 25:
					kind = "get"
					res = c.Do(ctx, linearizability.Input{Kind: linearizability.Get, Key: key, Group: g})
					if res.Out.Found {
						remember(key, res, res.Out.Value)
					} else if res.Err == nil {
						delete(cache, key)
					}
				case x < 35:
					kind = "put"
					res = c.Do(ctx, linearizability.Input{Kind: linearizability.Put, Key: key, Value: v, Group: g})
					remember(key, res, v)
				case x < 55:
					kind = "put-if"
					in := linearizability.Input{Kind: linearizability.Put, Key: key, Value: v, Group: g, Cond: linearizability.IfAbsent}
					if s := cache[key]; s != nil {
						in.Cond, in.Expect, in.ETag = linearizability.IfValue, s.value, s.etag
					}
					res = c.Do(ctx, in)
					remember(key, res, v)
				case x < 65:
					kind = "delete-if"
					if s := cache[key]; s != nil {
						res = c.Do(ctx, linearizability.Input{Kind: linearizability.Delete, Key: key, Group: g, Cond: linearizability.IfValue, Expect: s.value, ETag: s.etag})
						delete(cache, key)
					} else {
						res = c.Do(ctx, linearizability.Input{Kind: linearizability.Delete, Key: key, Group: g})
					}
				default:
					kind = "batch"
					check := linearizability.Input{Kind: linearizability.Precondition, Key: ka, Cond: linearizability.IfAbsent}
					if s := cache[ka]; s != nil {
						check.Cond, check.Expect, check.ETag = linearizability.IfValue, s.value, s.etag
					}
					ops := []linearizability.Input{check, {Kind: linearizability.Put, Key: kb, Value: v}, {Kind: linearizability.Get, Key: ka}, {Kind: linearizability.Get, Key: kb}}
					if r.IntN(3) == 0 {
						ops = append(ops, linearizability.Input{Kind: linearizability.Put, Key: ka, Value: v + "a"})
					} else if r.IntN(4) == 0 {
						ops = append(ops, linearizability.Input{Kind: linearizability.Delete, Key: ka})
					}
					res = c.Do(ctx, linearizability.Input{Kind: linearizability.Batch, Group: g, Ops: ops})
					delete(cache, ka)
					delete(cache, kb)
				}
				mu.Lock()
				if res.Err != nil {
					failures = append(failures, res.Err)
				}
				if res.Out.Failed {
					counts[kind+" 412"]++
				} else {
					counts[kind]++
				}
				mu.Unlock()
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
	if counts["put-if"] == 0 || counts["put-if 412"] == 0 || counts["batch"] == 0 || counts["batch 412"] == 0 {
		t.Fatalf("the mix did not exercise both outcomes: %v", counts)
	}
	if linearizability.Check(t, ops) {
		t.Logf("%d kvd process(es), %d clients: %v; linearizable", len(servers), clients, counts)
	}
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

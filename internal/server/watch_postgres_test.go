package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
)

// TestWatchAcrossKVD: two kvd on one PostgreSQL database; 8 writers write
// through the first while a watch through the second takes a snapshot and
// follows the changes. Every acknowledged PUT comes through exactly once,
// in increasing revision order, and the watcher's copy ends equal to the
// store.
func TestWatchAcrossKVD(t *testing.T) {
	db := pgtest.URL(t)
	key := "shared-key-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	a := kvdtest.Start(t, kvdtest.WithStore(db), kvdtest.WithAPIKey(key))
	b := kvdtest.Start(t, kvdtest.WithStore(db), kvdtest.WithAPIKey(key))
	id := readyNamespace(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nsA := client.New(client.WithBaseURL(a.URL), client.WithAPIKey(key)).Namespace(id)
	nsB := client.New(client.WithBaseURL(b.URL), client.WithAPIKey(key)).Namespace(id)

	stop := make(chan struct{})
	var mu sync.Mutex
	acked := map[uint64]string{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("k%02d", rng.IntN(32))
				if rng.IntN(4) == 0 {
					if err := nsA.Delete(ctx, k); err != nil {
						t.Errorf("DELETE: %v", err)
						return
					}
					continue
				}
				r, err := nsA.PutWithResult(ctx, k, []byte(fmt.Sprintf("w%d-%d", w, i)), nil)
				if err != nil {
					t.Errorf("PUT: %v", err)
					return
				}
				rev, _ := strconv.ParseUint(strings.Trim(r.ETag, `"`), 16, 64)
				mu.Lock()
				acked[rev] = k
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the snapshot is taken under writes

	copyOf := map[string]string{}
	seen := map[uint64]bool{}
	var last, readyRev uint64
	stopped := false
	sentinel := uint64(0)
	sentinelDone := make(chan struct{})
	for ev, err := range nsB.Watch(ctx, client.WatchOptions{Snapshot: true, Values: true}) {
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Kind {
		case client.EventPut:
			copyOf[ev.Key] = string(ev.Value)
		case client.EventDelete, client.EventExpire:
			delete(copyOf, ev.Key)
		case client.EventReady:
			last, readyRev = ev.Revision, ev.Revision
			if !stopped {
				stopped = true
				time.AfterFunc(500*time.Millisecond, func() {
					defer close(sentinelDone)
					close(stop)
					wg.Wait()
					r, err := nsA.PutWithResult(ctx, "zz-sentinel", []byte("end"), nil)
					if err != nil {
						t.Errorf("sentinel PUT: %v", err)
						cancel()
						return
					}
					rev, _ := strconv.ParseUint(strings.Trim(r.ETag, `"`), 16, 64)
					mu.Lock()
					sentinel = rev
					mu.Unlock()
				})
			}
			continue
		case client.EventReset:
			t.Fatal("the snapshot was cut off")
		}
		if last == 0 {
			continue // a snapshot put
		}
		if ev.Revision <= last || seen[ev.Revision] {
			t.Fatalf("event %s %s at %d after %d (seen before: %v)", ev.Kind, ev.Key, ev.Revision, last, seen[ev.Revision])
		}
		seen[ev.Revision] = true
		last = ev.Revision
		if ev.Key == "zz-sentinel" {
			break
		}
	}
	// The sentinel's event may come through before its PUT's answer.
	<-sentinelDone
	mu.Lock()
	defer mu.Unlock()
	if sentinel == 0 || !seen[sentinel] {
		t.Fatalf("the sentinel write (revision %d) did not come through", sentinel)
	}
	// Every acknowledged PUT after the snapshot's revision came through;
	// those before it are in the copy as the store has them.
	want := map[string]string{}
	page, err := nsA.List(ctx, "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range page.Keys {
		v, _, err := nsA.Get(ctx, k.Key)
		if err != nil {
			t.Fatal(err)
		}
		want[k.Key] = string(v)
	}
	for k, v := range want {
		if copyOf[k] != v {
			t.Errorf("key %s: the watcher has %q, the store %q", k, copyOf[k], v)
		}
	}
	for k := range copyOf {
		if _, ok := want[k]; !ok {
			t.Errorf("key %s: the watcher has it, the store does not", k)
		}
	}
	n := 0
	for rev := range acked {
		if rev > readyRev && !seen[rev] {
			t.Errorf("the acknowledged PUT at revision %d never came through", rev)
		}
		n++
	}
	t.Logf("%d acknowledged PUTs, %d events after the snapshot, %d keys", n, len(seen), len(want))
}

package pebble_test

import (
	"sync"
	"testing"

	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
	"github.com/edgekv/kv/internal/store/storetest"
)

// TestConformance runs the conformance suite on stores in temp dirs; a
// restart closes the engine and opens its directory again. The engine
// admits one process per directory, so there is no second handle.
func TestConformance(t *testing.T) {
	var mu sync.Mutex
	dirs := map[store.Store]string{}
	openIn := func(t *testing.T, dir string) store.Store {
		db, err := pebble.Open(dir, pebble.Options{})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		dirs[db] = dir
		mu.Unlock()
		return db
	}
	storetest.Run(t, storetest.Funcs{
		OpenFunc: func(t *testing.T) store.Store { return openIn(t, t.TempDir()) },
		ReopenFunc: func(t *testing.T, s store.Store) store.Store {
			mu.Lock()
			dir := dirs[s]
			mu.Unlock()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return openIn(t, dir)
		},
	})
}

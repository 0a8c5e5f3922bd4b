package pebble_test

import (
	"testing"

	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
	"github.com/edgekv/kv/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		db, err := pebble.Open(t.TempDir(), pebble.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

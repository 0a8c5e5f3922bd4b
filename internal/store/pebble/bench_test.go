package pebble_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
)

// BenchmarkPutKey measures PutKey of a 1 KiB value over 10,000 keys, one
// writer at a time (each put waits for its own log sync) and from 8
// parallel writers (log syncs shared), on disk and on a memory file
// system (where a sync costs nothing: the engine's own work).
func BenchmarkPutKey(b *testing.B) {
	for _, disk := range []bool{true, false} {
		for _, parallel := range []bool{false, true} {
			name := map[bool]string{true: "disk", false: "mem"}[disk] + "/" + map[bool]string{false: "serial", true: "parallel"}[parallel]
			b.Run(name, func(b *testing.B) {
				benchPutKey(b, disk, parallel)
			})
		}
	}
}

func benchPutKey(b *testing.B, disk, parallel bool) {
	ctx := context.Background()
	dir, o := b.TempDir(), pebble.Options{Logger: quiet}
	if !disk {
		dir, o.FS = "db", vfs.NewMem()
	}
	db, err := pebble.Open(dir, o)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	ns := kv.Namespace{ID: kv.NewID(), Org: "bench", Name: "bench", Status: kv.StatusPending, CreatedAt: now, UpdatedAt: now}
	if err := db.CreateNamespace(ctx, ns); err != nil {
		b.Fatal(err)
	}
	if _, _, err := db.ClaimLifecycleJob(ctx, "bench", now, time.Minute); err != nil {
		b.Fatal(err)
	}
	if err := db.CompleteProvision(ctx, ns.ID, "bench", kv.StatusProvisionOK, now); err != nil {
		b.Fatal(err)
	}
	v := store.PutValue{Data: make([]byte, 1<<10), ContentType: kv.DefaultContentType}
	var seq atomic.Int64
	put := func() {
		key := fmt.Sprintf("k%05d", seq.Add(1)%10000)
		if _, err := db.PutKey(ctx, "bench", ns.ID, key, v, now); err != nil {
			b.Error(err)
		}
	}
	b.SetBytes(int64(len(v.Data)))
	b.ResetTimer()
	if parallel {
		b.SetParallelism(4) // 8 writers on 2 CPUs
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				put()
			}
		})
		return
	}
	for range b.N {
		put()
	}
}

package service_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
)

// fullDisk is a free-space check the test turns on and off: the fault it
// stands for is a disk below its reserve.
type fullDisk struct{ full atomic.Bool }

func (f *fullDisk) Err() error {
	if f.full.Load() {
		return kv.Errorf(kv.EInsufficientStorage, "the disk is full")
	}
	return nil
}

// TestSpaceRefusesWritesOnly: while the space check refuses, key writes
// and namespace creations fail with EInsufficientStorage and write
// nothing; reads, listings and deletes of keys and namespaces work; once
// it lets writes through they succeed again.
func TestSpaceRefusesWritesOnly(t *testing.T) {
	ctx := context.Background()
	db, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	disk := &fullDisk{}
	svc := service.New(service.Config{Store: db, Space: disk})
	id := service.ReadyNamespace(t, svc, db, "n")
	for _, k := range []string{"a", "b"} {
		if _, err := svc.PutKey(ctx, service.FullPrincipal("org"), id, k, service.Put{Data: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}

	disk.full.Store(true)
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, kv.ErrInsufficientStorage) {
			t.Errorf("%s on a full disk: %v, want %s", what, err, kv.EInsufficientStorage)
		}
	}
	_, err = svc.PutKey(ctx, service.FullPrincipal("org"), id, "c", service.Put{Data: []byte("v")})
	refused("a new key", err)
	_, err = svc.PutKey(ctx, service.FullPrincipal("org"), id, "a", service.Put{Data: []byte("w")})
	refused("an overwrite", err)
	_, err = svc.CreateNamespace(ctx, service.FullPrincipal("org"), "m")
	refused("a namespace", err)
	if _, err := svc.GetKey(ctx, service.FullPrincipal("org"), id, "c"); !kv.IsKeyNotFound(err) {
		t.Errorf("the refused write of c: %v", err)
	}
	v, err := svc.GetKey(ctx, service.FullPrincipal("org"), id, "a")
	if err != nil || string(v.Data) != "v" {
		t.Fatalf("read on a full disk: %v", err)
	}
	v.Close()
	if page, err := svc.ListKeys(ctx, service.FullPrincipal("org"), id, "", "", 10); err != nil || len(page.Keys) != 2 {
		t.Errorf("listing on a full disk: %+v, %v", page, err)
	}
	if err := svc.DeleteKey(ctx, service.FullPrincipal("org"), id, "b", store.Condition{}); err != nil {
		t.Errorf("delete on a full disk: %v", err)
	}
	if _, err := svc.DeleteNamespace(ctx, service.FullPrincipal("org"), id); err != nil {
		t.Errorf("namespace delete on a full disk: %v", err)
	}

	disk.full.Store(false)
	if _, err := svc.CreateNamespace(ctx, service.FullPrincipal("org"), "m"); err != nil {
		t.Errorf("a namespace once there is room: %v", err)
	}
}

package pebble_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store/pebble"
)

// TestClaimWhilePurging: one worker claims jobs while another purges
// namespaces; neither waits for the other forever (claiming once held the
// namespace table while it waited for a namespace a purge held, and the
// purge waited for the table).
func TestClaimWhilePurging(t *testing.T) {
	db, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Closed at the end, not deferred: after a deadlock Close would wait
	// for it too.
	ctx := context.Background()
	now := time.Now()
	const n = 200
	ids := make([]kv.ID, n)
	for i := range ids {
		ns := kv.Namespace{ID: kv.NewID(), Org: "org", Name: fmt.Sprintf("ns%d", i), Status: kv.StatusPending, CreatedAt: now, UpdatedAt: now}
		if err := db.CreateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		if err := db.CompleteProvision(ctx, ns.ID, "", kv.StatusProvisionOK, now); err != nil {
			t.Fatal(err)
		}
		if _, err := db.MarkDeleting(ctx, "org", ns.ID, now); err != nil {
			t.Fatal(err)
		}
		ids[i] = ns.ID
	}
	stop := make(chan struct{})
	claims := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				claims <- nil
				return
			default:
			}
			// A lease of zero: every deleting namespace stays claimable.
			if _, _, err := db.ClaimLifecycleJob(ctx, "claimer", time.Now(), 0); err != nil {
				claims <- err
				return
			}
		}
	}()
	purged := make(chan error, 1)
	go func() {
		for _, id := range ids {
			if err := db.PurgeNamespace(ctx, id, "purger"); err != nil {
				purged <- err
				return
			}
		}
		purged <- nil
	}()
	select {
	case err := <-purged:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("purging namespaces while jobs are claimed has not ended in 30 s: the two wait for each other")
	}
	close(stop)
	select {
	case err := <-claims:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("claiming jobs has not ended in 30 s")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

package service

import (
	"context"
	"testing"
	"time"
)

// TestWatchDeliverySlots: watchers that took their events and did not
// come back for more (their writes blocked) hold every delivery slot, yet
// only briefly: another watcher still gets its events. Every slot is
// given back once the watchers close, whether its hold ran out first or
// not.
func TestWatchDeliverySlots(t *testing.T) {
	ctx := context.Background()
	svc, id, _ := newWatched(t)
	p := FullPrincipal("org")
	open := func() *Watcher {
		t.Helper()
		w, err := svc.Watch(ctx, p, id, WatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	next := func(w *Watcher, key string) {
		t.Helper()
		// A watcher waiting for a slot that never comes waits until
		// its context ends.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for wctx.Err() == nil {
			evs, err := w.Next(wctx, 100*time.Millisecond, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) > 0 {
				if len(evs) != 1 || evs[0].Change.Key != key {
					t.Fatalf("events %+v, want a put of %q", evs, key)
				}
				return
			}
		}
		t.Fatalf("no event for %q", key)
	}

	slots := cap(svc.watches.deliver)
	stuck := make([]*Watcher, slots)
	for i := range stuck {
		stuck[i] = open()
	}
	late, prompt := open(), open()
	if _, err := svc.PutKey(ctx, p, id, "a", Put{Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	for _, w := range stuck {
		next(w, "a") // and never asks for more: it keeps its slot
	}
	next(late, "a")
	// A watcher that comes back for more gives its slot back at once.
	next(prompt, "a")
	if _, err := svc.PutKey(ctx, p, id, "b", Put{Data: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	next(prompt, "b")
	closed := make(chan struct{})
	go func() {
		for _, w := range append(stuck, late, prompt) {
			w.Close()
		}
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("closing the watchers hangs: a slot given back twice")
	}
	if n := len(svc.watches.deliver); n != 0 {
		t.Fatalf("%d delivery slots still taken after every watcher closed", n)
	}
}

// TestPublishPause: the pause after a view grows with the watchers it
// wakes, and is bounded.
func TestPublishPause(t *testing.T) {
	for users, want := range map[int64]time.Duration{0: 0, 1: wakeCost, 10: 10 * wakeCost, 10_000: maxPublishPause, 1 << 40: maxPublishPause} {
		if got := publishPause(users); got != want {
			t.Errorf("publishPause(%d) = %v, want %v", users, got, want)
		}
	}
}

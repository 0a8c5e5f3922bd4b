package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
)

// collect runs ns.Watch in the background and sends what it yields.
func collect(ctx context.Context, ns *client.Namespace, opts client.WatchOptions) (<-chan client.Event, <-chan error) {
	evs, errs := make(chan client.Event, 10000), make(chan error, 1)
	go func() {
		for ev, err := range ns.Watch(ctx, opts) {
			if err != nil {
				errs <- err
				return
			}
			evs <- ev
		}
		errs <- nil
	}()
	return evs, errs
}

func nextEvent(t *testing.T, evs <-chan client.Event, errs <-chan error) client.Event {
	t.Helper()
	select {
	case ev := <-evs:
		return ev
	case err := <-errs:
		t.Fatalf("Watch ended: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("no event from Watch within 15 s")
	}
	return client.Event{}
}

// TestWatch: a snapshot with values, then the changes after it; across a
// restart of kvd the watch resumes by itself with no change missed or
// repeated; cancelling ctx ends it.
func TestWatch(t *testing.T) {
	c, srv := newClient(t)
	ns := readyNamespace(t, c, "watched")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 3 {
		if _, err := ns.Put(ctx, fmt.Sprintf("f/%d", i), []byte(fmt.Sprintf("v%d", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ns.Put(ctx, "elsewhere", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	evs, errs := collect(ctx, ns, client.WatchOptions{Prefix: "f/", Snapshot: true, Values: true})
	copyOf := map[string]string{}
	for {
		ev := nextEvent(t, evs, errs)
		if ev.Kind == client.EventReady {
			break
		}
		if ev.Kind != client.EventPut || !ev.HasValue || ev.ETag == "" {
			t.Fatalf("snapshot event %+v", ev)
		}
		copyOf[ev.Key] = string(ev.Value)
	}
	if len(copyOf) != 3 || copyOf["f/1"] != "v1" {
		t.Fatalf("snapshot: %v", copyOf)
	}

	var revs []uint64
	write := func(key, value string) {
		t.Helper()
		r, err := ns.PutWithResult(ctx, key, []byte(value), &client.PutOptions{ContentType: "text/plain"})
		if err != nil {
			t.Fatal(err)
		}
		ev := nextEvent(t, evs, errs)
		if ev.Kind != client.EventPut || ev.Key != key || string(ev.Value) != value || ev.ETag != r.ETag || ev.ContentType != "text/plain" || ev.Size != int64(len(value)) {
			t.Fatalf("after PUT %s=%q (ETag %s): event %+v", key, value, r.ETag, ev)
		}
		revs = append(revs, ev.Revision)
	}
	write("f/new", "n")
	if err := ns.Delete(ctx, "f/0"); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, evs, errs); ev.Kind != client.EventDelete || ev.Key != "f/0" {
		t.Fatalf("after DELETE f/0: %+v", ev)
	}
	big := strings.Repeat("b", 64<<10+1)
	if _, err := ns.Put(ctx, "f/big", []byte(big), nil); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, evs, errs); ev.Kind != client.EventPut || ev.HasValue || ev.Size != int64(len(big)) {
		t.Fatalf("a put over 64 KiB: %+v (HasValue %v)", ev.Kind, ev.HasValue)
	}

	// kvd restarts: writes made while the stream is down arrive once
	// it is back, in order, exactly once.
	srv.Restart(t)
	for i := range 5 {
		if _, err := ns.Put(ctx, fmt.Sprintf("f/after-%d", i), []byte("a"), nil); err != nil {
			t.Fatal(err)
		}
	}
	var last uint64
	for i := range 5 {
		ev := nextEvent(t, evs, errs)
		if ev.Key != fmt.Sprintf("f/after-%d", i) || ev.Revision <= last || ev.Revision <= revs[0] {
			t.Fatalf("after the restart, event %d: %+v (after revision %d)", i, ev, last)
		}
		last = ev.Revision
	}
	select {
	case ev := <-evs:
		t.Fatalf("an event more than the writes: %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-errs:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not end after its context was cancelled")
	}
}

// TestWatchHistoryGone: resuming from a revision no longer kept ends the
// watch with an error matching ErrHistoryGone that names the oldest
// revision to resume from.
func TestWatchHistoryGone(t *testing.T) {
	clk := kvdtest.NewClock(time.Date(2026, 6, 18, 14, 0, 0, 0, time.UTC))
	srv := kvdtest.Start(t, kvdtest.WithClock(clk.Now), kvdtest.WithConfig(func(c *server.Config) {
		c.Lifecycle.WatchRetention = time.Hour
		c.Lifecycle.CompactEvery = 20 * time.Millisecond
	}))
	c := client.New(client.WithBaseURL(srv.URL), client.WithAPIKey(srv.Token))
	ns := readyNamespace(t, c, "history")
	ctx := context.Background()
	first, err := ns.PutWithResult(ctx, "a", []byte("1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := ns.PutWithResult(ctx, "b", []byte("2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if _, err := ns.Put(ctx, "c", []byte("3"), nil); err != nil {
		t.Fatal(err)
	}
	var firstRev uint64
	fmt.Sscanf(strings.Trim(first.ETag, `"`), "%x", &firstRev)
	deadline := time.Now().Add(10 * time.Second)
	for {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var got error
		for _, err := range ns.Watch(wctx, client.WatchOptions{Since: firstRev - 1}) {
			got = err
			break
		}
		cancel()
		var apiErr *client.APIError
		if errors.Is(got, client.ErrHistoryGone) && errors.As(got, &apiErr) && apiErr.StatusCode == http.StatusGone {
			var secondRev uint64
			fmt.Sscanf(strings.Trim(second.ETag, `"`), "%x", &secondRev)
			if apiErr.OldestRevision != secondRev {
				t.Fatalf("OldestRevision %d, want %d (the last compacted change)", apiErr.OldestRevision, secondRev)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Watch from before the compacted history: %v; want ErrHistoryGone", got)
		}
	}
}

// TestWatchDefends: a server that sends an event over the bound, or
// garbage, does not make the watch grow without bound: it drops the
// connection and tries again, with backoff, until ctx ends.
func TestWatchDefends(t *testing.T) {
	var conns atomic.Int64
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := conns.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		if n%2 == 1 {
			w.Write([]byte("event: put\ndata: "))
			w.Write(bytes.Repeat([]byte("x"), 2<<20))
			return
		}
		w.Write([]byte("event: put\ndata: not json\n\n"))
	}))
	defer hostile.Close()
	c := client.New(client.WithBaseURL(hostile.URL), client.WithAPIKey("k"), client.WithBackoff(time.Millisecond, 10*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	for ev, err := range c.Namespace("00000000-0000-0000-0000-000000000001").Watch(ctx, client.WatchOptions{}) {
		if err == nil {
			t.Fatalf("an event from a hostile server: %+v", ev)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Watch ended with %v; want it to keep trying until ctx ends", err)
		}
	}
	if conns.Load() < 3 {
		t.Fatalf("%d connections: the watch gave up instead of trying again", conns.Load())
	}
}

package ratelimit

import (
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBucket(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(Config{Limit: 60, Window: time.Minute, Burst: 3, Now: c.now})
	for i := range 3 {
		d := l.Allow("a")
		if !d.Allowed || d.Remaining != 2-i || d.Limit != 60 {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d := l.Allow("a")
	if d.Allowed || d.RetryAfter != time.Second || d.Remaining != 0 {
		t.Fatalf("over the burst: %+v", d)
	}
	if d.Reset != 3*time.Second {
		t.Fatalf("reset = %v, want 3s", d.Reset)
	}
	// Another key has its own bucket.
	if !l.Allow("b").Allowed {
		t.Fatal("key b limited by key a")
	}
	c.add(time.Second)
	if !l.Allow("a").Allowed {
		t.Fatal("not refilled after 1s at 1/s")
	}
	if l.Allow("a").Allowed {
		t.Fatal("refilled more than one token in 1s")
	}
	// Refill never exceeds the burst.
	c.add(time.Hour)
	n := 0
	for l.Allow("a").Allowed {
		n++
	}
	if n != 3 {
		t.Fatalf("after an hour %d requests passed, want the burst of 3", n)
	}
}

func TestDisabled(t *testing.T) {
	var l *Limiter = New(Config{Limit: 0})
	if l != nil || !l.Allow("x").Allowed {
		t.Fatal("a zero limit must disable limiting")
	}
}

func TestSweepKeepsLimits(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(Config{Limit: 2, Window: time.Minute, Now: c.now})
	l.Allow("a")
	l.Allow("a")
	c.add(61 * time.Second) // full again: the sweep may drop the bucket
	l.Allow("other")        // triggers the sweep of some shard
	if d := l.Allow("a"); !d.Allowed || d.Remaining != 1 {
		t.Fatalf("after refill: %+v", d)
	}
	l.Allow("a")
	if l.Allow("a").Allowed {
		t.Fatal("limit lost after a sweep")
	}
}

func TestConcurrentExactCount(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := New(Config{Limit: 100, Burst: 100, Now: c.now})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if l.Allow("k").Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("%d of 400 concurrent requests passed, want exactly the burst of 100", allowed)
	}
}

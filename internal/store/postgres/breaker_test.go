package postgres

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeBreaker() (*breaker, *fakeClock) {
	c := &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := newBreaker()
	b.now = c.now
	return b, c
}

// Closed, the breaker lets every attempt through; a failure opens it:
// attempts are refused until the wait is over, then one probe goes, and
// only one; the probe's failure makes the next wait longer, up to the
// cap; a success closes it.
func TestBreakerPaces(t *testing.T) {
	b, clock := newFakeBreaker()
	down := errors.New("connection refused")

	var open []*connectAttempt
	for i := range 10 {
		a, err := b.admit()
		if err != nil {
			t.Fatalf("closed breaker refused attempt %d: %v", i, err)
		}
		open = append(open, a)
	}
	// The first failure opens it; the other attempts of that wave
	// change nothing.
	for _, a := range open {
		b.end(a.probe, down)
	}
	if b.failures != 1 {
		t.Fatalf("failures after the first wave = %d, want 1", b.failures)
	}
	if _, err := b.admit(); !errors.Is(err, errBreakerOpen) {
		t.Fatalf("admit right after a failure = %v, want errBreakerOpen", err)
	}
	waits := []time.Duration{}
	for n := 1; n <= 8; n++ {
		wait := b.retryAt.Sub(clock.now())
		waits = append(waits, wait)
		lo, hi := min(breakerMax, breakerMin<<(n-1))/2, min(breakerMax, breakerMin<<(n-1))
		if wait < lo || wait > hi {
			t.Fatalf("wait after %d failures = %v, want within [%v, %v]", n, wait, lo, hi)
		}
		clock.add(wait - time.Millisecond)
		if _, err := b.admit(); !errors.Is(err, errBreakerOpen) {
			t.Fatalf("admit 1ms before the wait is over = %v, want errBreakerOpen", err)
		}
		clock.add(time.Millisecond)
		probe, err := b.admit()
		if err != nil || !probe.probe {
			t.Fatalf("admit when the wait is over = %+v, %v; want a probe", probe, err)
		}
		if _, err := b.admit(); !errors.Is(err, errBreakerOpen) {
			t.Fatalf("a second attempt while the probe is under way = %v, want errBreakerOpen", err)
		}
		b.end(probe.probe, down)
	}
	t.Logf("waits after 1..8 failures: %v", waits)
	if !errors.Is(b.lastError(), down) {
		t.Fatalf("lastError = %v", b.lastError())
	}

	// The wait is over, the probe succeeds: closed again.
	clock.add(breakerMax)
	probe, err := b.admit()
	if err != nil {
		t.Fatal(err)
	}
	b.end(probe.probe, nil)
	for i := range 5 {
		if _, err := b.admit(); err != nil {
			t.Fatalf("attempt %d after a successful probe: %v", i, err)
		}
	}
	if b.lastError() != nil {
		t.Fatalf("lastError after a success = %v", b.lastError())
	}
}

// wait returns once a probe is due, or when its context ends.
func TestBreakerWait(t *testing.T) {
	b := newBreaker()
	if err := b.wait(context.Background()); err != nil {
		t.Fatalf("wait on a closed breaker: %v", err)
	}
	a, _ := b.admit()
	b.end(a.probe, errors.New("down"))
	if err := b.wait(context.Background()); err != nil {
		t.Fatalf("wait: %v", err)
	}
	if p, err := b.admit(); err != nil || !p.probe {
		t.Fatalf("admit after wait = %+v, %v; want a probe", p, err)
	}
	b.end(true, errors.New("down"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a canceled context = %v", err)
	}
}

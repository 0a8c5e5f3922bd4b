package fairshare

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var bg = context.Background()

// long is a wait that never runs out in a passing test.
const long = time.Minute

func mustAcquire(t *testing.T, p *Pool, tenant string, n int64, onPreempt func()) *Grant {
	t.Helper()
	g, err := p.Acquire(bg, tenant, n, long, onPreempt)
	if err != nil {
		t.Fatalf("Acquire(%s, %d): %v", tenant, n, err)
	}
	return g
}

// acquireAsync starts an Acquire and returns a channel of its outcome.
func acquireAsync(p *Pool, tenant string, n int64, wait time.Duration) chan error {
	ch := make(chan error, 1)
	go func() {
		g, err := p.Acquire(bg, tenant, n, wait, nil)
		if err == nil {
			defer g.Release()
		}
		ch <- err
	}()
	return ch
}

func waitWaiting(t *testing.T, p *Pool, n int64) {
	t.Helper()
	deadline := time.Now().Add(long)
	for p.Stats().Waiting != n {
		if time.Now().After(deadline) {
			t.Fatalf("waiting = %d, want %d", p.Stats().Waiting, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAloneUsesEverything(t *testing.T) {
	p := New(100)
	var gs []*Grant
	for range 10 {
		gs = append(gs, mustAcquire(t, p, "a", 10, nil))
	}
	if s := p.Stats(); s.Used != 100 {
		t.Fatalf("used = %d", s.Used)
	}
	if _, err := p.Acquire(bg, "a", 1, 10*time.Millisecond, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("over capacity: %v, want ErrBusy", err)
	}
	for _, g := range gs {
		g.Release()
		g.Release() // twice is harmless
	}
	if s := p.Stats(); s.Used != 0 || s.Waiting != 0 {
		t.Fatalf("after release: %+v", s)
	}
	if _, err := p.Acquire(bg, "a", 101, long, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("more than capacity: %v", err)
	}
}

func TestReleaseWakesWaiter(t *testing.T) {
	p := New(10)
	g := mustAcquire(t, p, "a", 10, nil)
	done := acquireAsync(p, "a", 5, long)
	waitWaiting(t, p, 1)
	g.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestUnderShareTenantPreemptsOverShare(t *testing.T) {
	p := New(100)
	var preempted []int
	var mu sync.Mutex
	var gs []*Grant
	for i := range 4 {
		gs = append(gs, mustAcquire(t, p, "a", 25, func() { mu.Lock(); preempted = append(preempted, i); mu.Unlock() }))
	}
	// b's share is 50; it asks for 30, so a's two most recent grants go.
	done := make(chan *Grant, 1)
	go func() { done <- mustAcquire(t, p, "b", 30, nil) }()
	waitWaiting(t, p, 1)
	deadline := time.Now().Add(long)
	for {
		mu.Lock()
		n := len(preempted)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("preempted %v, want 2 grants", preempted)
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	if preempted[0] != 3 || preempted[1] != 2 {
		t.Fatalf("preempted %v, want the most recent first [3 2]", preempted)
	}
	mu.Unlock()
	if !gs[3].Preempted() || gs[0].Preempted() {
		t.Fatal("Preempted() does not match the callbacks")
	}
	select {
	case <-done:
		t.Fatal("granted before the preempted grants were released")
	case <-time.After(10 * time.Millisecond):
	}
	gs[3].Release()
	gs[2].Release()
	g := <-done
	if s := p.Stats(); s.Used != 80 || s.Preempted != 2 {
		t.Fatalf("stats %+v, want used 80, 2 preempted", s)
	}
	g.Release()
	gs[0].Release()
	gs[1].Release()
}

func TestOverShareTenantWaitsItsTurn(t *testing.T) {
	p := New(100)
	a := mustAcquire(t, p, "a", 60, func() { t.Error("a preempted by b, which is over its share") })
	b := mustAcquire(t, p, "b", 40, nil)
	// b holds 40 of a share of 50 and asks for 20: over its share.
	done := acquireAsync(p, "b", 20, long)
	waitWaiting(t, p, 1)
	time.Sleep(10 * time.Millisecond)
	if a.Preempted() {
		t.Fatal("a was preempted")
	}
	a.Release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b.Release()
}

func TestLeastHoldingTenantGoesFirst(t *testing.T) {
	p := New(10)
	a := mustAcquire(t, p, "a", 5, nil)
	a2 := mustAcquire(t, p, "a", 5, nil)
	defer a2.Release()
	var order []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := func(tenant string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := mustAcquire(t, p, tenant, 5, nil)
			mu.Lock()
			order = append(order, tenant)
			mu.Unlock()
			g.Release()
		}()
	}
	start("a") // a holds all 10 when it asks
	waitWaiting(t, p, 1)
	start("c")
	waitWaiting(t, p, 2)
	a.Release() // a still holds 5; c holds nothing
	var first []string
	for len(first) == 0 {
		time.Sleep(time.Millisecond)
		mu.Lock()
		first = append([]string(nil), order...)
		mu.Unlock()
	}
	if len(first) < 1 || first[0] != "c" {
		t.Fatalf("order %v: c, which held nothing, should go first", first)
	}
	a2.Release()
	wg.Wait()
}

func TestWaitBoundedAndCanceled(t *testing.T) {
	p := New(10)
	g := mustAcquire(t, p, "a", 10, nil)
	defer g.Release()
	if err := <-acquireAsync(p, "a", 1, 20*time.Millisecond); !errors.Is(err, ErrBusy) {
		t.Fatalf("bounded wait: %v", err)
	}
	ctx, cancel := context.WithCancel(bg)
	go func() { waitWaiting(t, p, 1); cancel() }()
	if _, err := p.Acquire(ctx, "a", 1, long, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled wait: %v", err)
	}
	if s := p.Stats(); s.Waiting != 0 || s.Used != 10 {
		t.Fatalf("stats after the waits ended: %+v", s)
	}
}

// TestConcurrentNeverOverCapacity runs many tenants against one pool,
// releasing preempted grants at once, and checks that what is held never
// exceeds the capacity and that everything comes back.
func TestConcurrentNeverOverCapacity(t *testing.T) {
	const capacity = 1000
	p := New(capacity)
	var held atomic.Int64
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			tenant := string(rune('a' + w%5))
			for range 300 {
				n := int64(1 + r.IntN(300))
				g, err := p.Acquire(bg, tenant, n, 50*time.Millisecond, nil)
				if errors.Is(err, ErrBusy) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if h := held.Add(n); h > capacity {
					t.Errorf("held %d > capacity", h)
				}
				if r.IntN(4) == 0 {
					time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
				}
				held.Add(-n)
				g.Release()
			}
		}()
	}
	wg.Wait()
	if s := p.Stats(); s.Used != 0 || s.Waiting != 0 {
		t.Fatalf("after all released: %+v", s)
	}
	if len(p.tenants) != 0 {
		t.Fatalf("tenants left behind: %d", len(p.tenants))
	}
}

// Package fairshare divides a budget (bytes of memory) among the tenants
// that ask for it, fairly: a tenant alone may use the whole budget, but
// while others wait each tenant is entitled to an equal share, waiters
// under their share go first, and grants of tenants over their share are
// taken back (preempted) to make room for them. A wait is bounded.
//
// kvd reads request bodies and writes large responses within such
// budgets, one per purpose, with organizations as the tenants, so that one
// organization's slow or stalled clients can hold no more than its share
// of the memory while others need it.
package fairshare

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrBusy is returned by Acquire when the wait ran out.
var ErrBusy = errors.New("fairshare: the budget stayed in use for the whole wait")

// ErrTooLarge is returned by Acquire for more than the whole budget.
var ErrTooLarge = errors.New("fairshare: more than the whole budget asked for")

// Pool is a budget of Capacity units. It is safe for concurrent use.
type Pool struct {
	capacity int64

	mu       sync.Mutex
	used     int64 // granted and not yet released
	reclaim  int64 // of used, preempted and not yet released
	tenants  map[string]*tenant
	waiters  []*waiter // in arrival order
	preempts uint64
}

type tenant struct {
	name    string
	held    int64
	waiting int
	grants  []*Grant // oldest first
}

type waiter struct {
	t     *tenant
	n     int64
	cb    func()      // the grant's onPreempt
	ready chan *Grant // receives the grant
}

// Grant is an amount of the budget held by one tenant until Release.
type Grant struct {
	pool      *Pool
	t         *tenant
	n         int64
	onPreempt func()
	preempted bool // guarded by pool.mu
	released  bool // guarded by pool.mu
}

// New returns a pool of capacity units (> 0).
func New(capacity int64) *Pool {
	return &Pool{capacity: capacity, tenants: map[string]*tenant{}}
}

// Capacity is the pool's size.
func (p *Pool) Capacity() int64 { return p.capacity }

// Stats is a reading of the pool.
type Stats struct {
	Used, Waiting int64
	Preempted     uint64 // grants taken back so far
}

// Stats reads the pool.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Used: p.used, Waiting: int64(len(p.waiters)), Preempted: p.preempts}
}

// Acquire waits until n units are granted to tenant, for at most wait or
// until ctx ends. onPreempt (which may be nil) is called, once, from
// another goroutine, if the pool takes the grant back to make room for a
// tenant under its share: the holder must then stop using it and Release
// it promptly.
func (p *Pool) Acquire(ctx context.Context, tenant string, n int64, wait time.Duration, onPreempt func()) (*Grant, error) {
	if n > p.capacity {
		return nil, ErrTooLarge
	}
	n = max(n, 1)
	p.mu.Lock()
	t := p.tenant(tenant)
	if len(p.waiters) == 0 && p.used+n <= p.capacity {
		g := p.grantLocked(t, n, onPreempt)
		p.mu.Unlock()
		return g, nil
	}
	w := &waiter{t: t, n: n, cb: onPreempt, ready: make(chan *Grant, 1)}
	t.waiting++
	p.waiters = append(p.waiters, w)
	victims := p.dispatchLocked()
	p.mu.Unlock()
	preempt(victims)

	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case g := <-w.ready:
		return g, nil
	case <-timer.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	select {
	case g := <-w.ready: // granted meanwhile
		p.mu.Unlock()
		return g, nil
	default:
	}
	p.removeWaiterLocked(w)
	victims = p.dispatchLocked()
	p.mu.Unlock()
	preempt(victims)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, ErrBusy
}

// Release returns the grant to the pool. It is safe to call more than once.
func (g *Grant) Release() {
	if g == nil {
		return
	}
	p := g.pool
	p.mu.Lock()
	if g.released {
		p.mu.Unlock()
		return
	}
	g.released = true
	p.used -= g.n
	if g.preempted {
		p.reclaim -= g.n
	}
	t := g.t
	t.held -= g.n
	for i, o := range t.grants {
		if o == g {
			t.grants = append(t.grants[:i], t.grants[i+1:]...)
			break
		}
	}
	p.forgetLocked(t)
	victims := p.dispatchLocked()
	p.mu.Unlock()
	preempt(victims)
}

// Preempted reports whether the pool has taken the grant back.
func (g *Grant) Preempted() bool {
	g.pool.mu.Lock()
	defer g.pool.mu.Unlock()
	return g.preempted
}

func (p *Pool) tenant(name string) *tenant {
	t := p.tenants[name]
	if t == nil {
		t = &tenant{name: name}
		p.tenants[name] = t
	}
	return t
}

func (p *Pool) forgetLocked(t *tenant) {
	if t.held == 0 && t.waiting == 0 {
		delete(p.tenants, t.name)
	}
}

func (p *Pool) grantLocked(t *tenant, n int64, onPreempt func()) *Grant {
	g := &Grant{pool: p, t: t, n: n, onPreempt: onPreempt}
	p.used += n
	t.held += n
	t.grants = append(t.grants, g)
	return g
}

func (p *Pool) removeWaiterLocked(w *waiter) {
	for i, o := range p.waiters {
		if o == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			w.t.waiting--
			p.forgetLocked(w.t)
			return
		}
	}
}

// shareLocked is each tenant's entitlement while those holding or waiting
// compete.
func (p *Pool) shareLocked() int64 {
	return p.capacity / int64(max(1, len(p.tenants)))
}

// dispatchLocked grants what fits to waiters, those of the tenants holding
// least first, and when the first of them does not fit while under its
// share, marks grants of tenants over their share for preemption. It
// returns the grants to preempt, whose callbacks the caller runs after
// unlocking.
func (p *Pool) dispatchLocked() []*Grant {
	var victims []*Grant
	for len(p.waiters) > 0 {
		// The waiter of the tenant holding least; the earliest among equals.
		best := 0
		for i, w := range p.waiters {
			if w.t.held < p.waiters[best].t.held {
				best = i
			}
		}
		w := p.waiters[best]
		if p.used+w.n <= p.capacity {
			p.waiters = append(p.waiters[:best], p.waiters[best+1:]...)
			w.t.waiting--
			w.ready <- p.grantLocked(w.t, w.n, w.cb)
			continue
		}
		share := p.shareLocked()
		if w.t.held+w.n > share {
			break // over its share already: it waits its turn
		}
		// Take back grants of tenants over their share, most recent first,
		// until what is being reclaimed makes room.
		for p.capacity-p.used+p.reclaim < w.n {
			g := p.victimLocked(share)
			if g == nil {
				break
			}
			g.preempted = true
			p.reclaim += g.n
			p.preempts++
			victims = append(victims, g)
		}
		break
	}
	return victims
}

// victimLocked returns the most recent grant, not already preempted, of
// the tenant holding most beyond share, or nil when no tenant holds more
// than share.
func (p *Pool) victimLocked(share int64) *Grant {
	var worst *tenant
	var worstHeld int64
	for _, t := range p.tenants {
		held := t.held
		for _, g := range t.grants {
			if g.preempted {
				held -= g.n
			}
		}
		if held > share && held > worstHeld {
			worst, worstHeld = t, held
		}
	}
	if worst == nil {
		return nil
	}
	for i := len(worst.grants) - 1; i >= 0; i-- {
		if g := worst.grants[i]; !g.preempted {
			return g
		}
	}
	return nil
}

func preempt(gs []*Grant) {
	for _, g := range gs {
		if g.onPreempt != nil {
			g.onPreempt()
		}
	}
}

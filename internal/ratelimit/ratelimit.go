// Package ratelimit limits requests per client key (kvd uses the bearer
// token) with token buckets: a key may send Burst requests at once and then
// Limit requests per Window. The buckets live in this process; several kvd
// behind a load balancer each apply the limit to what they see.
package ratelimit

import (
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// Config configures a Limiter.
type Config struct {
	// Limit is the number of requests a key may make per Window; 0 or
	// less disables limiting.
	Limit int
	// Window is the period Limit refers to (default one minute).
	Window time.Duration
	// Burst is how many requests a key may make at once (default Limit).
	Burst int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxKeys bounds the keys tracked at once (0: no bound). A key that
	// arrives while as many are tracked, none of them idle enough to be
	// dropped, is treated as out of requests: a limiter keyed by something
	// a client chooses (its address) must not grow without bound.
	MaxKeys int
}

// Limiter decides whether a request may proceed. It is safe for concurrent
// use. A nil *Limiter allows everything.
type Limiter struct {
	rate   float64 // tokens per second
	burst  float64
	limit  int
	window time.Duration
	now    func() time.Time
	seed   maphash.Seed
	// perShard bounds each shard's buckets (0: no bound).
	perShard int
	shards   [64]shard
}

type shard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a Limiter, or nil when cfg.Limit disables limiting.
func New(cfg Config) *Limiter {
	if cfg.Limit <= 0 {
		return nil
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.Burst <= 0 {
		cfg.Burst = cfg.Limit
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{
		rate:   float64(cfg.Limit) / cfg.Window.Seconds(),
		burst:  float64(cfg.Burst),
		limit:  cfg.Limit,
		window: cfg.Window,
		now:    cfg.Now,
		seed:   maphash.MakeSeed(),
	}
	if cfg.MaxKeys > 0 {
		l.perShard = max(1, cfg.MaxKeys/len(l.shards))
	}
	for i := range l.shards {
		l.shards[i].buckets = map[string]*bucket{}
	}
	return l
}

// Decision is the outcome of Allow, with what the rate-limit headers say.
type Decision struct {
	Allowed bool
	// Limit is the configured number of requests per window.
	Limit int
	// Remaining is how many requests the key may make right now.
	Remaining int
	// Reset is how long until the bucket is full again.
	Reset time.Duration
	// RetryAfter, when not allowed, is how long until one request may pass.
	RetryAfter time.Duration
}

// Allow takes one request from key's bucket.
func (l *Limiter) Allow(key string) Decision { return l.take(key, true) }

// Check reports what Allow would decide, taking nothing: for a limit on
// failures, checked before the attempt and spent (Spend) only if it fails.
func (l *Limiter) Check(key string) Decision { return l.take(key, false) }

// Spend takes one request from key's bucket, even one that is empty (it
// then goes below empty, and refills from there).
func (l *Limiter) Spend(key string) {
	if l == nil {
		return
	}
	l.withBucket(key, func(b *bucket) {
		b.tokens = math.Max(b.tokens-1, -l.burst)
	})
}

func (l *Limiter) take(key string, consume bool) Decision {
	if l == nil {
		return Decision{Allowed: true}
	}
	d := Decision{Limit: l.limit}
	tracked := l.withBucket(key, func(b *bucket) {
		if b.tokens >= 1 {
			if consume {
				b.tokens--
			}
			d.Allowed = true
		} else {
			d.RetryAfter = seconds((1 - b.tokens) / l.rate)
		}
		d.Remaining = int(math.Max(b.tokens, 0))
		d.Reset = seconds((l.burst - b.tokens) / l.rate)
	})
	if !tracked {
		d.RetryAfter = l.window / time.Duration(max(1, l.limit))
		d.Reset = d.RetryAfter
	}
	return d
}

// withBucket runs fn on key's bucket, refilled to now, and reports whether
// there was (or could be made) one.
func (l *Limiter) withBucket(key string, fn func(*bucket)) bool {
	now := l.now()
	sh := &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.sweep(now, l)
	b, ok := sh.buckets[key]
	if !ok {
		if l.perShard > 0 && len(sh.buckets) >= l.perShard {
			sh.swept = time.Time{}
			sh.sweep(now, l) // make room, if some have refilled
			if len(sh.buckets) >= l.perShard {
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		sh.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	fn(b)
	return true
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// sweep drops, at most once per window, buckets that have refilled: they
// hold nothing a fresh bucket would not.
func (sh *shard) sweep(now time.Time, l *Limiter) {
	if now.Sub(sh.swept) < l.window {
		return
	}
	sh.swept = now
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range sh.buckets {
		if now.Sub(b.last) >= full {
			delete(sh.buckets, k)
		}
	}
}

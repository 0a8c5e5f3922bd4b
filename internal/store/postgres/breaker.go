package postgres

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The pace of connection attempts while the database cannot be reached:
// the wait before the n-th attempt after a failure doubles from
// breakerMin up to breakerMax, and each wait is drawn at random from its
// upper half, so that kvd processes that lost the database together do not
// knock on it together.
const (
	breakerMin = 100 * time.Millisecond
	breakerMax = 2 * time.Second
	// breakerLogEvery is the least time between two log lines that say
	// the database is still unreachable.
	breakerLogEvery = 10 * time.Second
)

// errBreakerOpen is what a connection the breaker refused fails with: the
// last attempt failed, and the next is not due yet or already under way.
var errBreakerOpen = errors.New("postgres: not connecting: the last attempt failed and the next is not due yet")

// breaker paces connection attempts to the database. Closed (the last
// attempt succeeded, or none was made), it lets every attempt through, so
// the pool grows as the load asks. The first attempt that fails opens it:
// from then on a new connection is refused at once, without dialing,
// except for one probe per interval (backoff); the first attempt that
// succeeds closes it. So while the database is down a request that needs a
// new connection fails at once, and however many requests wait, the
// database sees at most the attempts already under way when it went away
// (the pool's size bounds them) plus one per interval.
//
// Connections are still taken from the pool while it is open: a connection
// that outlived the failure (the server refused new ones only, being out of
// connection slots) serves as before.
//
// It is safe for concurrent use.
type breaker struct {
	now func() time.Time

	// attempts counts the connection attempts let through.
	attempts atomic.Int64

	mu       sync.Mutex
	log      *slog.Logger // nil: say nothing (while Open waits, it logs)
	failures int          // failed attempts since the last success; 0: closed
	openedAt time.Time    // when it opened
	retryAt  time.Time    // open: no probe before this
	probing  bool         // a probe is under way
	lastErr  error        // the last failed attempt's error
	loggedAt time.Time    // the last "still unreachable" line
}

func newBreaker() *breaker { return &breaker{now: time.Now} }

// backoff is the wait before the attempt that follows n failed ones.
func backoff(n int) time.Duration {
	d := breakerMax
	if n < 16 {
		d = min(breakerMax, breakerMin<<(n-1))
	}
	return d/2 + rand.N(d/2+1)
}

// admit is asked before each connection attempt. It returns the attempt,
// whose outcome must be reported with its end method (connectAttempt
// does so as the connection's tracer), or errBreakerOpen.
func (b *breaker) admit() (*connectAttempt, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := &connectAttempt{b: b}
	if b.failures > 0 {
		if b.probing || b.now().Before(b.retryAt) {
			return nil, errBreakerOpen
		}
		b.probing, a.probe = true, true
	}
	b.attempts.Add(1)
	return a, nil
}

// end records the outcome of an attempt admit let through.
func (b *breaker) end(probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if probe {
		b.probing = false
	}
	if err == nil {
		if b.failures > 0 && b.log != nil {
			b.log.Info("postgres: connected to the database again", "down_for", now.Sub(b.openedAt).Round(time.Millisecond), "failed_attempts", b.failures)
		}
		b.failures, b.lastErr = 0, nil
		return
	}
	b.lastErr = err
	switch {
	case b.failures == 0:
		b.failures, b.openedAt, b.loggedAt = 1, now, now
		if b.log != nil {
			b.log.Warn("postgres: cannot connect to the database; requests that need a new connection get 503 until an attempt succeeds, attempts are paced", "err", err)
		}
	case probe:
		b.failures++
		if b.log != nil && now.Sub(b.loggedAt) >= breakerLogEvery {
			b.loggedAt = now
			b.log.Warn("postgres: the database is still unreachable", "down_for", now.Sub(b.openedAt).Round(time.Millisecond), "failed_attempts", b.failures, "err", err)
		}
	default:
		// An attempt that began before the breaker opened: it tells
		// nothing new, and does not lengthen the wait.
		return
	}
	b.retryAt = now.Add(backoff(b.failures))
}

// wait returns once a probe is due (at once when closed), or when ctx is
// done. It does not reserve the probe.
func (b *breaker) wait(ctx context.Context) error {
	b.mu.Lock()
	d := time.Duration(0)
	if b.failures > 0 {
		d = b.retryAt.Sub(b.now())
	}
	b.mu.Unlock()
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// lastError is the error of the last failed attempt, or nil.
func (b *breaker) lastError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastErr
}

func (b *breaker) setLogger(l *slog.Logger) {
	b.mu.Lock()
	b.log = l
	b.mu.Unlock()
}

// connectAttempt is one connection attempt admitted by a breaker. It is
// set as the tracer of the attempt's connection configuration, so that
// pgx reports the attempt's outcome to it, across every host of a
// multi-host URL, before the pool hands the outcome to anyone: the next
// attempt already sees the breaker as this one left it.
type connectAttempt struct {
	b     *breaker
	probe bool
}

var (
	_ pgx.ConnectTracer = (*connectAttempt)(nil)
	_ pgx.QueryTracer   = (*connectAttempt)(nil)
)

func (a *connectAttempt) TraceConnectStart(ctx context.Context, _ pgx.TraceConnectStartData) context.Context {
	return ctx
}

func (a *connectAttempt) TraceConnectEnd(_ context.Context, data pgx.TraceConnectEndData) {
	a.b.end(a.probe, data.Err)
}

// The connection keeps its tracer for queries too; they are not traced.

func (a *connectAttempt) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (a *connectAttempt) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

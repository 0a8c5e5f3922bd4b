// Package lifecycle runs kvd's background work: it provisions namespaces
// (pending -> provision_ok), removes deleted ones with all their keys, and
// sweeps expired keys. The work is recorded in the store, so a job left
// unfinished by a crash resumes after a restart, and leases make each job
// run once even when many kvd share one database.
package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
)

// Config configures a Worker. Zero durations take the defaults.
type Config struct {
	Store  store.Lifecycle
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: slog.Default()
	// Holder names this worker in leases; "" picks a random one.
	Holder string
	// Lease is how long a claimed job is this worker's before another may
	// take it over (default 30s). Jobs finish far sooner.
	Lease time.Duration
	// Poll is how often the worker looks for jobs it was not woken for,
	// such as ones left by another process (default 1s).
	Poll time.Duration
	// Sweep is how often expired keys are reclaimed (default 500ms, so
	// that a watch sees an expiry within a second of its instant).
	Sweep time.Duration
	// SweepBatch bounds the keys reclaimed per store call (default 1000).
	SweepBatch int
	// WatchRetention is how long the change feed keeps changes (default
	// 24h), when the store keeps one (store.Changes); older ones are
	// compacted every CompactEvery (default 1m).
	WatchRetention, CompactEvery time.Duration
}

// Worker runs the lifecycle jobs. Run it once; Wake is safe to call from
// any goroutine, before or during Run.
type Worker struct {
	cfg  Config
	wake chan struct{}

	// Counters for metrics (Stats).
	jobsDone, sweeps, sweptKeys                                 atomic.Int64
	claimFailures, provisionFailures, purgeFailures, sweepFails atomic.Int64
	compacted, compactFails                                     atomic.Int64
}

// New returns a Worker with defaults applied.
func New(cfg Config) *Worker {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Holder == "" {
		var b [8]byte
		rand.Read(b[:])
		cfg.Holder = "kvd-" + hex.EncodeToString(b[:])
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = 500 * time.Millisecond
	}
	if cfg.WatchRetention <= 0 {
		cfg.WatchRetention = DefaultWatchRetention
	}
	if cfg.CompactEvery <= 0 {
		cfg.CompactEvery = time.Minute
	}
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = 1000
	}
	return &Worker{cfg: cfg, wake: make(chan struct{}, 1)}
}

// Wake asks the worker to look for jobs now.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run does the work until ctx is done, then returns once the job in hand
// (if any) has finished.
func (w *Worker) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); w.runJobs(ctx) }()
	go func() { defer wg.Done(); every(ctx, w.cfg.Sweep, w.SweepOnce) }()
	go func() { defer wg.Done(); every(ctx, w.cfg.CompactEvery, w.CompactOnce) }()
	wg.Wait()
}

// every runs fn every d until ctx is done.
func every(ctx context.Context, d time.Duration, fn func(context.Context) int) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

// inBatches calls step, which removes up to batch items, until it removes
// fewer, fails or ctx is done, counting what it removed in done and a
// failure (logged as what) in fails. It reports how many it removed.
func (w *Worker) inBatches(ctx context.Context, batch int, what string, done, fails *atomic.Int64, step func() (int, error)) int {
	total := 0
	for ctx.Err() == nil {
		n, err := step()
		total += n
		done.Add(int64(n))
		if err != nil {
			fails.Add(1)
			w.cfg.Logger.Error("lifecycle: "+what, "err", err)
			break
		}
		if n < batch {
			break
		}
	}
	return total
}

// DefaultWatchRetention is how long the change feed keeps changes by
// default: watchers may resume from up to a day back.
const DefaultWatchRetention = 24 * time.Hour

// compactBatch bounds the changes removed per store call.
const compactBatch = 5000

// CompactOnce removes the changes older than the retention, in batches,
// and reports how many it removed.
func (w *Worker) CompactOnce(ctx context.Context) int {
	feed, ok := w.cfg.Store.(store.Changes)
	if !ok {
		return 0
	}
	return w.inBatches(ctx, compactBatch, "compact the change feed", &w.compacted, &w.compactFails, func() (int, error) {
		return feed.CompactChanges(ctx, w.cfg.Now().Add(-w.cfg.WatchRetention), compactBatch)
	})
}

func (w *Worker) runJobs(ctx context.Context) {
	t := time.NewTicker(w.cfg.Poll)
	defer t.Stop()
	for {
		w.RunJobs(ctx)
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-t.C:
		}
	}
}

// RunJobs claims and finishes jobs until none is left or ctx is done. It
// reports how many jobs it finished.
func (w *Worker) RunJobs(ctx context.Context) int {
	done := 0
	for ctx.Err() == nil {
		// The job runs to completion even if ctx ends meanwhile: a finished
		// job is better than a lease to wait out.
		jobCtx := context.WithoutCancel(ctx)
		ns, ok, err := w.cfg.Store.ClaimLifecycleJob(jobCtx, w.cfg.Holder, w.cfg.Now(), w.cfg.Lease)
		if err != nil {
			w.claimFailures.Add(1)
			w.cfg.Logger.Error("lifecycle: claim job", "err", err)
			return done
		}
		if !ok {
			return done
		}
		switch ns.Status {
		case kv.StatusPending:
			err = w.cfg.Store.CompleteProvision(jobCtx, ns.ID, w.cfg.Holder, kv.StatusProvisionOK, w.cfg.Now().UTC().Truncate(time.Millisecond))
		case kv.StatusDeleting:
			err = w.cfg.Store.PurgeNamespace(jobCtx, ns.ID, w.cfg.Holder)
		}
		if err != nil {
			if ns.Status == kv.StatusPending {
				w.provisionFailures.Add(1)
			} else {
				w.purgeFailures.Add(1)
			}
			// The lease runs out and the job is tried again.
			w.cfg.Logger.Error("lifecycle: job failed", "namespace", ns.ID, "status", ns.Status, "err", err)
			return done
		}
		w.cfg.Logger.Debug("lifecycle: job done", "namespace", ns.ID, "status", ns.Status)
		w.jobsDone.Add(1)
		done++
	}
	return done
}

// SweepOnce reclaims every key expired by now, in batches, and reports how
// many it removed.
func (w *Worker) SweepOnce(ctx context.Context) int {
	w.sweeps.Add(1)
	return w.inBatches(ctx, w.cfg.SweepBatch, "sweep expired keys", &w.sweptKeys, &w.sweepFails, func() (int, error) {
		return w.cfg.Store.SweepExpired(ctx, w.cfg.Now(), w.cfg.SweepBatch)
	})
}

// Stats counts the worker's work since it was made.
type Stats struct {
	// JobsDone counts the namespaces provisioned and removed.
	JobsDone int64
	// ClaimFailures, ProvisionFailures and PurgeFailures count the jobs
	// that failed (to be claimed, or to finish; a failed job is tried
	// again once its lease runs out); SweepFailures the sweeps that
	// stopped on an error.
	ClaimFailures, ProvisionFailures, PurgeFailures, SweepFailures int64
	// Sweeps counts the sweeps of expired keys, SweptKeys the keys they
	// removed.
	Sweeps, SweptKeys int64
	// CompactedChanges counts the changes of the feed compacted,
	// CompactFailures the compactions that stopped on an error.
	CompactedChanges, CompactFailures int64
}

// Stats returns the counts so far. It is safe to call from any goroutine.
func (w *Worker) Stats() Stats {
	return Stats{
		JobsDone:          w.jobsDone.Load(),
		ClaimFailures:     w.claimFailures.Load(),
		ProvisionFailures: w.provisionFailures.Load(),
		PurgeFailures:     w.purgeFailures.Load(),
		SweepFailures:     w.sweepFails.Load(),
		Sweeps:            w.sweeps.Load(),
		SweptKeys:         w.sweptKeys.Load(),
		CompactedChanges:  w.compacted.Load(),
		CompactFailures:   w.compactFails.Load(),
	}
}

// Backlog returns the jobs waiting in the store, when the store can count
// them (store.Backlogger); ok is false when it cannot.
func (w *Worker) Backlog(ctx context.Context) (b store.JobBacklog, ok bool, err error) {
	bl, ok := w.cfg.Store.(store.Backlogger)
	if !ok {
		return store.JobBacklog{}, false, nil
	}
	b, err = bl.JobBacklog(ctx)
	return b, true, err
}

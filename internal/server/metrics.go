package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgekv/kv/internal/lifecycle"
	"github.com/edgekv/kv/internal/metrics"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/pebble"
	"github.com/edgekv/kv/internal/store/postgres"
)

// registerCollectors registers the collectors that read the engine and
// the worker when Prometheus scrapes.
func registerCollectors(reg prometheus.Registerer, st store.Store, w *lifecycle.Worker, svc *service.Service, now func() time.Time) {
	switch e := st.(type) {
	case *pebble.DB:
		reg.MustRegister(metrics.NewPebbleCollector(e.Metrics))
	case *postgres.DB:
		reg.MustRegister(metrics.NewPostgresCollector(func() metrics.PostgresStats {
			s := e.Stats()
			return metrics.PostgresStats{Pool: s.Pool, Unavailable: s.Errors.Unavailable, TimedOut: s.Errors.TimedOut,
				EngineFailures: s.Errors.EngineFailures, BreakerOpen: s.BreakerOpen,
				SharedReads: s.Reads.Calls, SharedReadRuns: s.Reads.Runs, SharedWrites: s.Writes.Calls, SharedWriteRuns: s.Writes.Runs}
		}))
	}
	reg.MustRegister(metrics.NewWatchCollector(func() metrics.WatchStats {
		s := svc.WatchStats()
		return metrics.WatchStats{Streams: s.Watchers, Namespaces: s.Namespaces, Events: s.Events, Overflows: s.Overflows, CatchUps: s.CatchUps}
	}))
	reg.MustRegister(metrics.NewWorkerCollector(func(ctx context.Context) metrics.WorkerStats {
		s := w.Stats()
		out := metrics.WorkerStats{JobsDone: s.JobsDone, ClaimFailures: s.ClaimFailures, ProvisionFailures: s.ProvisionFailures,
			PurgeFailures: s.PurgeFailures, SweepFailures: s.SweepFailures, Sweeps: s.Sweeps, SweptKeys: s.SweptKeys}
		// A store that cannot answer now (a database down) leaves the
		// backlog gauges out of this scrape rather than fail it.
		if b, ok, err := w.Backlog(ctx); ok && err == nil {
			out.Backlog, out.Pending, out.Deleting = true, b.Pending, b.Deleting
			if !b.Oldest.IsZero() {
				out.OldestAge = max(now().Sub(b.Oldest), 0)
			}
		}
		return out
	}))
}

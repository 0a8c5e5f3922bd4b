package metrics

import (
	"context"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The collectors below read their figures when Prometheus scrapes, never on
// the request path: each Collect asks its source once.
//

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// pebbleCollector exports Pebble's metrics.
type pebbleCollector struct {
	read func() *pebble.Metrics
}

var (
	pebbleFsync          = desc("kvd_pebble_wal_fsync_duration_seconds", "Time Pebble takes to sync its write-ahead log to disk; every acknowledged write waits for one (writes in flight together share it).")
	pebbleWALBytes       = desc("kvd_pebble_wal_bytes_written_total", "Bytes written to Pebble's write-ahead log.")
	pebbleFlushes        = desc("kvd_pebble_flushes_total", "Memtable flushes to L0 files.")
	pebbleFlushBytes     = desc("kvd_pebble_flushed_bytes_total", "Bytes written by memtable flushes.")
	pebbleCompactions    = desc("kvd_pebble_compactions_total", "Compactions finished.")
	pebbleCompactBytes   = desc("kvd_pebble_compacted_bytes_total", "Bytes written by compactions.")
	pebbleCompactDebt    = desc("kvd_pebble_compaction_debt_bytes", "Estimated bytes that compactions must still rewrite for the LSM to settle.")
	pebbleCompactRunning = desc("kvd_pebble_compactions_in_progress", "Compactions running now.")
	pebbleL0Files        = desc("kvd_pebble_l0_files", "Files in level 0; many of them slow reads and, past Pebble's threshold, stall writes.")
	pebbleL0Sublevels    = desc("kvd_pebble_l0_sublevels", "Sublevels of level 0 (its read amplification).")
	pebbleReadAmp        = desc("kvd_pebble_read_amplification", "Sublevels and levels a read may visit.")
	pebbleCacheHits      = desc("kvd_pebble_block_cache_hits_total", "Block cache lookups that found the block.")
	pebbleCacheMisses    = desc("kvd_pebble_block_cache_misses_total", "Block cache lookups that read the block from disk.")
	pebbleCacheBytes     = desc("kvd_pebble_block_cache_bytes", "Bytes held by the block cache (at most --cache-size).")
	pebbleMemtableBytes  = desc("kvd_pebble_memtable_bytes", "Bytes allocated by memtables.")
	pebbleDiskBytes      = desc("kvd_pebble_disk_usage_bytes", "Bytes the store's files take on disk: tables, write-ahead log, manifest.")
)

// NewPebbleCollector returns a collector of the metrics read returns (nil:
// none, as when the engine is closed).
func NewPebbleCollector(read func() *pebble.Metrics) prometheus.Collector {
	return pebbleCollector{read: read}
}

func (c pebbleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pebbleFsync, pebbleWALBytes, pebbleFlushes, pebbleFlushBytes, pebbleCompactions, pebbleCompactBytes,
		pebbleCompactDebt, pebbleCompactRunning, pebbleL0Files, pebbleL0Sublevels, pebbleReadAmp, pebbleCacheHits, pebbleCacheMisses,
		pebbleCacheBytes, pebbleMemtableBytes, pebbleDiskBytes} {
		ch <- d
	}
}

func (c pebbleCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.read()
	if m == nil {
		return
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	if h := fsyncHistogram(m.LogWriter.FsyncLatency); h != nil {
		ch <- h
	}
	var flushed, compacted uint64
	for _, l := range m.Levels {
		flushed += l.TableBytesFlushed + l.BlobBytesFlushed
		compacted += l.TableBytesCompacted + l.BlobBytesCompacted
	}
	counter(pebbleWALBytes, float64(m.WAL.BytesWritten))
	counter(pebbleFlushes, float64(m.Flush.Count))
	counter(pebbleFlushBytes, float64(flushed))
	counter(pebbleCompactions, float64(m.Compact.Count))
	counter(pebbleCompactBytes, float64(compacted))
	gauge(pebbleCompactDebt, float64(m.Compact.EstimatedDebt))
	gauge(pebbleCompactRunning, float64(m.Compact.NumInProgress))
	gauge(pebbleL0Files, float64(m.Levels[0].TablesCount))
	gauge(pebbleL0Sublevels, float64(m.Levels[0].Sublevels))
	gauge(pebbleReadAmp, float64(m.ReadAmp()))
	counter(pebbleCacheHits, float64(m.BlockCache.Hits))
	counter(pebbleCacheMisses, float64(m.BlockCache.Misses))
	gauge(pebbleCacheBytes, float64(m.BlockCache.Size))
	gauge(pebbleMemtableBytes, float64(m.MemTable.Size))
	gauge(pebbleDiskBytes, float64(m.DiskSpaceUsage()))
}

// fsyncBounds are the buckets exported of Pebble's fsync histogram, in
// seconds. Pebble keeps 100 buckets in nanoseconds; each bound here is
// replaced by the smallest of Pebble's that is at least as large, so the
// counts stay exact.
var fsyncBounds = []float64{.0001, .0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}

// fsyncHistogram converts Pebble's fsync histogram (nanoseconds) to one in
// seconds with fewer buckets; nil when there is none.
func fsyncHistogram(h prometheus.Histogram) prometheus.Metric {
	if h == nil {
		return nil
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil || m.Histogram == nil {
		return nil
	}
	src := m.Histogram.GetBucket()
	buckets := map[float64]uint64{}
	i := 0
	for _, want := range fsyncBounds {
		for i < len(src) && src[i].GetUpperBound()/1e9 < want*(1-1e-9) {
			i++
		}
		if i == len(src) {
			break
		}
		buckets[src[i].GetUpperBound()/1e9] = src[i].GetCumulativeCount()
	}
	out, err := prometheus.NewConstHistogram(pebbleFsync, m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()/1e9, buckets)
	if err != nil {
		return nil
	}
	return out
}

// PostgresStats is what the PostgreSQL engine reports.
type PostgresStats struct {
	Pool *pgxpool.Stat
	// Failed calls by kind, since the engine was opened.
	Unavailable, TimedOut, EngineFailures int64
	// BreakerOpen: the last attempt to connect failed; new connections
	// are refused until one succeeds.
	BreakerOpen bool
	// Key reads and plain writes that could share statements, and the
	// statements (transactions) that served them.
	SharedReads, SharedReadRuns, SharedWrites, SharedWriteRuns int64
}

type postgresCollector struct {
	read func() PostgresStats
}

var (
	pgMaxConns  = desc("kvd_pg_pool_max_connections", "Most connections the pool opens (--pg-max-conns).")
	pgConns     = desc("kvd_pg_pool_connections", "Connections open or being opened.")
	pgInUse     = desc("kvd_pg_pool_connections_in_use", "Connections serving a call now.")
	pgIdle      = desc("kvd_pg_pool_connections_idle", "Open connections waiting for a call.")
	pgAcquires  = desc("kvd_pg_pool_acquires_total", "Connections taken from the pool.")
	pgWaits     = desc("kvd_pg_pool_waits_total", "Calls that waited for a connection because none was idle.")
	pgWaitTime  = desc("kvd_pg_pool_wait_seconds_total", "Time calls spent waiting for a connection because none was idle.")
	pgErrors    = desc("kvd_pg_errors_total", "Failed calls to the database by kind: unavailable (not reached, connection lost, read-only server, breaker open; a 503), timed_out (statement_timeout; a 503), engine_failure (anything else; a 500).", "kind")
	pgBreaker   = desc("kvd_pg_breaker_open", "1 while the last attempt to connect to the database failed and new connections are refused; else 0.")
	pgShared    = desc("kvd_pg_shared_calls_total", "Key reads (op get) and plain writes of small values (op put) that could share statements and transactions with others.", "op")
	pgSharedRun = desc("kvd_pg_shared_runs_total", "Statements (op get) and transactions (op put) that served them; calls per run is how much they shared.", "op")
	postgresAll = []*prometheus.Desc{pgMaxConns, pgConns, pgInUse, pgIdle, pgAcquires, pgWaits, pgWaitTime, pgErrors, pgBreaker, pgShared, pgSharedRun}
)

// NewPostgresCollector returns a collector of what read returns.
func NewPostgresCollector(read func() PostgresStats) prometheus.Collector {
	return postgresCollector{read: read}
}

func (c postgresCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range postgresAll {
		ch <- d
	}
}

func (c postgresCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	if p := s.Pool; p != nil {
		gauge(pgMaxConns, float64(p.MaxConns()))
		gauge(pgConns, float64(p.TotalConns()))
		gauge(pgInUse, float64(p.AcquiredConns()))
		gauge(pgIdle, float64(p.IdleConns()))
		counter(pgAcquires, float64(p.AcquireCount()))
		counter(pgWaits, float64(p.EmptyAcquireCount()))
		counter(pgWaitTime, p.EmptyAcquireWaitTime().Seconds())
	}
	counter(pgErrors, float64(s.Unavailable), "unavailable")
	counter(pgErrors, float64(s.TimedOut), "timed_out")
	counter(pgErrors, float64(s.EngineFailures), "engine_failure")
	counter(pgShared, float64(s.SharedReads), "get")
	counter(pgShared, float64(s.SharedWrites), "put")
	counter(pgSharedRun, float64(s.SharedReadRuns), "get")
	counter(pgSharedRun, float64(s.SharedWriteRuns), "put")
	breaker := 0.0
	if s.BreakerOpen {
		breaker = 1
	}
	gauge(pgBreaker, breaker)
}

// WorkerStats is what the background worker reports.
type WorkerStats struct {
	// Backlog is set when the store counted the jobs waiting.
	Backlog           bool
	Pending, Deleting int
	OldestAge         time.Duration // of the job that has waited longest; 0 when none
	JobsDone          int64
	ClaimFailures     int64
	ProvisionFailures int64
	PurgeFailures     int64
	SweepFailures     int64
	Sweeps, SweptKeys int64
}

type workerCollector struct {
	read func(ctx context.Context) WorkerStats
}

var (
	jobsPending  = desc("kvd_lifecycle_jobs_pending", "Namespaces waiting for the background worker, by status: pending (to provision) or deleting (to remove). Counted in the store, so every kvd sharing a database reports the same.", "status")
	jobsOldest   = desc("kvd_lifecycle_oldest_job_age_seconds", "How long the namespace that has waited longest for the background worker has waited (0 when none waits).")
	jobsDone     = desc("kvd_lifecycle_jobs_done_total", "Namespaces this process provisioned or removed.")
	jobsFailures = desc("kvd_lifecycle_job_failures_total", "Background jobs that failed, by job: claim, provision, delete, sweep. A failed provision or delete is tried again once its lease runs out.", "job")
	sweeps       = desc("kvd_lifecycle_sweeps_total", "Sweeps of expired keys.")
	sweptKeys    = desc("kvd_lifecycle_swept_keys_total", "Expired keys the sweeps removed.")
	workerAll    = []*prometheus.Desc{jobsPending, jobsOldest, jobsDone, jobsFailures, sweeps, sweptKeys}
)

// backlogTimeout bounds the store query behind the backlog gauges, so a
// scrape never waits long on an unreachable database.
const backlogTimeout = 5 * time.Second

var (
	watchStreams    = desc("kvd_watch_streams", "Watch streams open in this process.")
	watchNamespaces = desc("kvd_watch_namespaces", "Namespaces the open watch streams of this process follow (one reader of the change feed each).")
	watchEvents     = desc("kvd_watch_events_total", "Put, delete and expire events this process has sent to watch streams, snapshots included.")
	watchOverflows  = desc("kvd_watch_overflows_total", "Watch streams this process closed with an overflow event: they fell too far behind.")
	watchCatchUps   = desc("kvd_watch_catchups_total", "Reads of the change feed by watch streams the shared recent changes had left behind.")
)

// WatchStats is what NewWatchCollector exports.
type WatchStats struct{ Streams, Namespaces, Events, Overflows, CatchUps int64 }

type watchCollector struct{ read func() WatchStats }

// NewWatchCollector returns a collector of the watch streams read counts.
func NewWatchCollector(read func() WatchStats) prometheus.Collector {
	return watchCollector{read: read}
}

func (c watchCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- watchStreams
	ch <- watchNamespaces
	ch <- watchEvents
	ch <- watchOverflows
	ch <- watchCatchUps
}

func (c watchCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	ch <- prometheus.MustNewConstMetric(watchStreams, prometheus.GaugeValue, float64(s.Streams))
	ch <- prometheus.MustNewConstMetric(watchNamespaces, prometheus.GaugeValue, float64(s.Namespaces))
	ch <- prometheus.MustNewConstMetric(watchEvents, prometheus.CounterValue, float64(s.Events))
	ch <- prometheus.MustNewConstMetric(watchOverflows, prometheus.CounterValue, float64(s.Overflows))
	ch <- prometheus.MustNewConstMetric(watchCatchUps, prometheus.CounterValue, float64(s.CatchUps))
}

// NewWorkerCollector returns a collector of what read returns; read is
// given a context that ends after a few seconds.
func NewWorkerCollector(read func(ctx context.Context) WorkerStats) prometheus.Collector {
	return workerCollector{read: read}
}

func (c workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range workerAll {
		ch <- d
	}
}

func (c workerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), backlogTimeout)
	defer cancel()
	s := c.read(ctx)
	counter := func(d *prometheus.Desc, v int64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	if s.Backlog {
		ch <- prometheus.MustNewConstMetric(jobsPending, prometheus.GaugeValue, float64(s.Pending), "pending")
		ch <- prometheus.MustNewConstMetric(jobsPending, prometheus.GaugeValue, float64(s.Deleting), "deleting")
		ch <- prometheus.MustNewConstMetric(jobsOldest, prometheus.GaugeValue, s.OldestAge.Seconds())
	}
	counter(jobsDone, s.JobsDone)
	counter(jobsFailures, s.ClaimFailures, "claim")
	counter(jobsFailures, s.ProvisionFailures, "provision")
	counter(jobsFailures, s.PurgeFailures, "delete")
	counter(jobsFailures, s.SweepFailures, "sweep")
	counter(sweeps, s.Sweeps)
	counter(sweptKeys, s.SweptKeys)
}

package postgres

import (
	"context"
	"time"
)

// SetPurgeBatch sets how many keys PurgeNamespace deletes per statement, so
// tests can exercise batching without writing tens of thousands of keys.
func SetPurgeBatch(db *DB, n int) { db.purgeBatch = n }

// SetSnapshotHook has Snapshot call hook between its steps: "head" once
// it has found the head it starts from, "taken" once its snapshot is
// taken.
func SetSnapshotHook(db *DB, hook func(step string)) { db.snapshotHook = hook }

// UsageShards is the number of rows usage is spread over.
const UsageShards = usageShards

// NewConns is how many connections db's pool has made.
func NewConns(db *DB) int64 { return db.pool.Stat().NewConnsCount() }

// ConnectAttempts is how many connection attempts db's breaker let
// through (refused ones are not attempts).
func ConnectAttempts(db *DB) int64 { return db.breaker.attempts.Load() }

// MaxProbes is the most probes the breaker can make in d after it opens:
// each wait is at least half its nominal length.
func MaxProbes(d time.Duration) int {
	n := 0
	for sum := time.Duration(0); ; n++ {
		sum += min(breakerMax, breakerMin<<min(n, 15)) / 2
		if sum > d {
			return n
		}
	}
}

// NotConnecting reports whether err is the breaker's refusal: no attempt to
// connect was made, the last one having failed.
func NotConnecting(err error) bool { return err == error(errNotConnecting) }

// CountedAs is how Stats counts a call that ended with err (as wrap maps
// it) while ctx is as given.
func CountedAs(ctx context.Context, op string, err error) ErrorCounts {
	var c errorCounters
	c.count(ctx, wrap(ctx, op, err, false))
	return ErrorCounts{Unavailable: c.unavailable.Load(), TimedOut: c.timedOut.Load(), EngineFailures: c.failures.Load()}
}

// Acquires is how many connections db's callers have taken from its pool.
func Acquires(db *DB) int64 { return db.pool.Stat().AcquireCount() }

// QueuedPuts is how many writes wait in db's queue for a group.
func QueuedPuts(db *DB) int {
	db.puts.mu.Lock()
	defer db.puts.mu.Unlock()
	return len(db.puts.queue)
}

// ListByScan makes db's ListKeys decode its rows through Scan.
func ListByScan(db *DB) { db.listByScan = true }

// GetByScan makes db's key reads decode their rows through Scan.
func GetByScan(db *DB) { db.getByScan = true }

package metering

import (
	"context"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/usagemath"
)

// Buffer counts reads, lists and deletes of missing keys in memory and adds
// them to the store's usage every FlushEvery (at most a second), so that a
// read costs no storage write. Counts that a flush fails to store stay in
// memory for the next one. A crash loses at most one interval of them.
type Buffer struct {
	store  store.UsageAdder
	log    *slog.Logger
	seed   maphash.Seed
	shards [16]bufShard
	every  time.Duration

	flushMu sync.Mutex // one flush at a time
	stop    chan struct{}
	done    chan struct{}
}

type bufShard struct {
	mu     sync.Mutex
	counts map[bufKey]*store.UsageCounts
}

type bufKey struct {
	org   string
	ns    kv.ID
	month uint32
	day   uint8 // of the month, 1-31
}

// NewBuffer returns a Buffer over st; every <= 0 means one second.
func NewBuffer(st store.UsageAdder, every time.Duration, log *slog.Logger) *Buffer {
	if every <= 0 || every > time.Second {
		every = time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	b := &Buffer{store: st, log: log, seed: maphash.MakeSeed(), every: every}
	for i := range b.shards {
		b.shards[i].counts = map[bufKey]*store.UsageCounts{}
	}
	return b
}

// Add counts c for org's namespace ns at time at.
func (b *Buffer) Add(org string, ns kv.ID, at time.Time, c store.UsageCounts) {
	m := usagemath.MonthOf(at)
	k := bufKey{org, ns, m.Index(), uint8(m.DayInMonth(at))}
	sh := &b.shards[maphash.Bytes(b.seed, ns[:])%uint64(len(b.shards))]
	sh.mu.Lock()
	if cur := sh.counts[k]; cur != nil {
		cur.Add(c)
	} else {
		n := c // allocated only here, not on every call
		sh.counts[k] = &n
	}
	sh.mu.Unlock()
}

// Flush stores what is buffered now.
func (b *Buffer) Flush(ctx context.Context) error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	var deltas []store.UsageDelta
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		taken := sh.counts
		sh.counts = make(map[bufKey]*store.UsageCounts, len(taken))
		sh.mu.Unlock()
		for k, c := range taken {
			m := usagemath.MonthFromIndex(k.month).Start()
			deltas = append(deltas, store.UsageDelta{Org: k.org, NamespaceID: k.ns, Month: m, Day: m.AddDate(0, 0, int(k.day)-1), UsageCounts: *c})
		}
	}
	if len(deltas) == 0 {
		return nil
	}
	if err := b.store.AddUsage(ctx, deltas); err != nil {
		for _, d := range deltas { // keep them for the next flush
			b.Add(d.Org, d.NamespaceID, d.Day, d.UsageCounts)
		}
		return err
	}
	return nil
}

// Start flushes in the background until Stop.
func (b *Buffer) Start() {
	b.stop, b.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(b.done)
		t := time.NewTicker(b.every)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				if err := b.Flush(context.Background()); err != nil {
					b.log.Error("metering: store buffered counts", "err", err)
				}
			}
		}
	}()
}

// Stop ends the background flushes and flushes what is left.
func (b *Buffer) Stop(ctx context.Context) error {
	if b.stop != nil {
		close(b.stop)
		<-b.done
		b.stop = nil
	}
	return b.Flush(ctx)
}

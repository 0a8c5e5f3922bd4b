package service

import (
	"context"
	"sync"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/usagemath"
)

// storageQuota enforces a limit on the bytes (keys plus values) each
// organization stores.
//
// Reading an organization's stored bytes is a scan of its usage, too dear
// for every write, so each organization's figure is read from the store at
// most once per refresh interval; between reads, the writes this process
// lets through are added to it as if each added its whole size (an
// overwrite or a delete frees bytes only at the next read), and so are the
// writes in flight. Within one process the limit is therefore never
// overshot; kvd processes sharing a database see each other's writes only
// at their next read, so together they may overshoot it by about one
// refresh interval's worth of writes.
type storageQuota struct {
	limit int64
	every time.Duration
	store store.UsageReader
	now   func() time.Time

	mu   sync.Mutex
	orgs map[string]*orgStorage
}

type orgStorage struct {
	mu       sync.Mutex // held while the figure is read from the store
	stored   int64      // as read from the store at readAt
	added    int64      // written by this process since readAt
	inflight int64      // admitted by this process and not yet finished
	readAt   time.Time  // zero: never read
}

// quotaRefresh is how long an organization's stored bytes, as read from
// the store, are trusted.
const quotaRefresh = time.Second

func newStorageQuota(st store.UsageReader, limit int64, now func() time.Time) *storageQuota {
	return &storageQuota{limit: limit, every: quotaRefresh, store: st, now: now, orgs: map[string]*orgStorage{}}
}

// reserve admits a write of n bytes for org, or returns an EQuota error
// when the organization's stored bytes plus n would exceed the limit. Every
// admitted write must be followed by a call of the organization's finish.
func (q *storageQuota) reserve(ctx context.Context, org string, n int64) (*orgStorage, error) {
	q.mu.Lock()
	o := q.orgs[org]
	if o == nil {
		o = &orgStorage{}
		q.orgs[org] = o
	}
	q.mu.Unlock()

	o.mu.Lock()
	defer o.mu.Unlock()
	now := q.now()
	if o.readAt.IsZero() || now.Sub(o.readAt) >= q.every || now.Before(o.readAt) {
		stored, err := q.read(ctx, org, now)
		if err != nil {
			return nil, err
		}
		o.stored, o.added, o.readAt = stored, 0, now
	}
	if used := o.stored + o.added + o.inflight; used+n > q.limit {
		return nil, kv.Errorf(kv.EQuota, "this organization stores %d bytes and its limit is %d bytes; a write of %d bytes (key and value) would exceed it. Delete keys or namespaces to make room", used, q.limit, n)
	}
	o.inflight += n
	return o, nil
}

// finish ends a write of n bytes that reserve admitted; written says
// whether it was stored.
func (o *orgStorage) finish(n int64, written bool) {
	o.mu.Lock()
	o.inflight -= n
	if written {
		o.added += n
	}
	o.mu.Unlock()
}

// read returns what org stores now, over all its namespaces.
func (q *storageQuota) read(ctx context.Context, org string, now time.Time) (int64, error) {
	list, err := q.store.Usage(ctx, org, kv.ID{}, usagemath.MonthOf(now.UTC()).Start(), now)
	if err != nil {
		return 0, fromStore(err, "")
	}
	var total int64
	for _, u := range list {
		total += u.Bytes
	}
	return total, nil
}

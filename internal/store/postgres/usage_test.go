package postgres_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/store/postgres"
	"github.com/edgekv/kv/internal/usagemath"
)

// usageOf returns the usage of namespace id in the month of now, as of
// then, failing the test unless there is exactly one entry.
func usageOf(t *testing.T, s store.Store, org string, id kv.ID, month, now time.Time) store.NamespaceUsage {
	t.Helper()
	list, err := s.Usage(ctx, org, id, month, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].NamespaceID != id {
		t.Fatalf("Usage(%s) = %+v, want one entry", id, list)
	}
	return list[0]
}

// byteNanos is size bytes stored for d.
func byteNanos(size int64, d time.Duration) *big.Int {
	return new(big.Int).Mul(big.NewInt(size), big.NewInt(int64(d)))
}

// Two handles on one database, as two kvd processes, write to the same keys
// of one namespace at once, at two instants: first values with and without
// an expiry, then, the next day, after those expiries, overwrites and
// deletes (of live, expired and missing keys) while sweepers run. The
// counts are exactly the acknowledged operations, and the stored bytes
// follow from the values each phase left, for the month and for each of
// the two days.
func TestUsageConcurrentHandles(t *testing.T) {
	url := pgtest.URL(t)
	h := []*postgres.DB{open(t, url, postgres.Config{}), open(t, url, postgres.Config{})}
	ns := readyNamespace(t, h[0], "org", "shared")
	const (
		workers = 4
		ops     = 100 // per worker and phase: 200 in all
		nkeys   = 12
	)
	t0 := base
	exp := t0.Add(10 * time.Minute) // phase 1's expiring values
	t1 := t0.Add(24 * time.Hour)    // phase 2, the next day, after them
	T := t1.Add(time.Hour)          // the report
	midnight := usagemath.DayOf(t1)
	key := func(i int) string { return fmt.Sprintf("key/%02d", i) }

	var writes, deletes, reads atomic.Int64
	touched := make([]atomic.Bool, nkeys) // changed in phase 2
	var dayCounts [2]store.UsageCounts    // the operations of each phase's day
	phase := func(now time.Time, withTTL bool) {
		before := store.UsageCounts{Reads: reads.Load(), Writes: writes.Load(), Deletes: deletes.Load()}
		defer func() {
			d := &dayCounts[0]
			if !withTTL {
				d = &dayCounts[1]
			}
			*d = store.UsageCounts{Reads: reads.Load() - before.Reads, Writes: writes.Load() - before.Writes, Deletes: deletes.Load() - before.Deletes}
		}()
		var wg sync.WaitGroup
		errs := make(chan error, workers+2)
		stop := make(chan struct{})
		var sweepers sync.WaitGroup
		if !withTTL {
			for _, s := range h {
				sweepers.Add(1)
				go func() {
					defer sweepers.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := s.SweepExpired(ctx, now, 2); err != nil {
							errs <- fmt.Errorf("SweepExpired: %w", err)
							return
						}
					}
				}()
			}
		}
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := h[w%2]
				r := rand.New(rand.NewPCG(uint64(w), uint64(now.UnixNano())))
				for range ops {
					k := r.IntN(nkeys)
					if r.IntN(3) == 0 {
						deleted, err := s.DeleteKey(ctx, "org", ns.ID, key(k), now)
						if err != nil {
							errs <- fmt.Errorf("DeleteKey: %w", err)
							return
						}
						if deleted {
							deletes.Add(1)
							if !withTTL {
								touched[k].Store(true)
							}
						}
					} else {
						v := store.PutValue{Data: bytes.Repeat([]byte{'v'}, r.IntN(40)), ContentType: "text/plain"}
						if withTTL && r.IntN(2) == 0 {
							v.ExpiresAt = exp
						}
						if _, err := s.PutKey(ctx, "org", ns.ID, key(k), v, now); err != nil {
							errs <- fmt.Errorf("PutKey: %w", err)
							return
						}
						writes.Add(1)
						if !withTTL {
							touched[k].Store(true)
						}
					}
					err := s.AddUsage(ctx, []store.UsageDelta{{Org: "org", NamespaceID: ns.ID, Month: usagemath.MonthOf(now).Start(), Day: now, UsageCounts: store.UsageCounts{Reads: 1}}})
					if err != nil {
						errs <- fmt.Errorf("AddUsage: %w", err)
						return
					}
					reads.Add(1)
				}
			}()
		}
		wg.Wait()
		close(stop)
		sweepers.Wait()
		close(errs)
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		if err := errors.Join(all...); err != nil {
			t.Fatal(err)
		}
	}
	// state reads every key as of now: its size and its value.
	type value struct {
		size    int64
		updated time.Time
		expires time.Time
	}
	state := func(now time.Time) []*value {
		out := make([]*value, nkeys)
		for i := range nkeys {
			v, err := h[0].GetKey(ctx, "org", ns.ID, key(i), now)
			if errors.Is(err, store.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			out[i] = &value{int64(len(key(i)) + len(v.Data)), v.UpdatedAt, v.ExpiresAt}
			v.Close()
		}
		return out
	}

	phase(t0, true)
	s1 := state(t0)
	for i := range touched {
		touched[i].Store(false)
	}
	phase(t1, false)
	s2 := state(t1)

	// want is the month's byte-ns; wantDay those of the phases' days, and
	// liveDay the bytes at the end of the first.
	want := new(big.Int)
	wantDay := [2]*big.Int{new(big.Int), new(big.Int)}
	var live, liveDay int64
	for i := range nkeys {
		if v := s1[i]; v != nil {
			end := T
			switch {
			case !v.expires.IsZero():
				end = v.expires
			case touched[i].Load():
				end = t1
			}
			want.Add(want, byteNanos(v.size, end.Sub(t0)))
			dayEnd := end
			if dayEnd.After(midnight) {
				dayEnd = midnight
			}
			wantDay[0].Add(wantDay[0], byteNanos(v.size, dayEnd.Sub(t0)))
			if end.After(midnight) {
				liveDay += v.size
				wantDay[1].Add(wantDay[1], byteNanos(v.size, end.Sub(midnight)))
			}
		}
		if v := s2[i]; v != nil {
			live += v.size
			if v.updated.Equal(t1) {
				want.Add(want, byteNanos(v.size, T.Sub(t1)))
				wantDay[1].Add(wantDay[1], byteNanos(v.size, T.Sub(t1)))
			}
		}
	}
	counts := store.UsageCounts{Reads: reads.Load(), Writes: writes.Load(), Deletes: deletes.Load()}
	if counts.Reads != 2*workers*ops || counts.Writes == 0 || counts.Deletes == 0 {
		t.Fatalf("acknowledged operations %+v: the test did not exercise both kinds", counts)
	}
	for i, s := range h {
		got := usageOf(t, s, "org", ns.ID, t0, T)
		if got.UsageCounts != counts {
			t.Errorf("handle %d: counts %+v, want %+v", i, got.UsageCounts, counts)
		}
		if got.Bytes != live || got.ByteNanos.Cmp(want) != 0 {
			t.Errorf("handle %d: %d bytes, %v byte-ns; want %d, %v", i, got.Bytes, got.ByteNanos, live, want)
		}
		list, err := s.UsageByDay(ctx, "org", ns.ID, t0, T)
		if err != nil || len(list) != 1 {
			t.Fatalf("handle %d: UsageByDay = %+v, %v", i, list, err)
		}
		days := list[0].Days
		if n := len(days); n != T.Day() || !days[n-2].Day.Equal(usagemath.DayOf(t0)) || !days[n-1].Day.Equal(midnight) {
			t.Fatalf("handle %d: %d days, want %d ending with %v and %v: %+v", i, n, T.Day(), usagemath.DayOf(t0), midnight, days)
		}
		for j, d := range days[len(days)-2:] {
			wantBytes := []int64{liveDay, live}[j]
			if d.UsageCounts != dayCounts[j] || d.ByteNanos.Cmp(wantDay[j]) != 0 || d.Bytes != wantBytes {
				t.Errorf("handle %d: day %v = %+v, %v byte-ns, %d bytes; want %+v, %v, %d", i, d.Day, d.UsageCounts, d.ByteNanos, d.Bytes, dayCounts[j], wantDay[j], wantBytes)
			}
		}
	}

	// The counts are spread over shards, and none is outside their range.
	var shards, bad int
	err := rawConn(t, url).QueryRow(ctx, `SELECT count(DISTINCT shard), count(*) FILTER (WHERE shard NOT BETWEEN 0 AND $1 - 1) FROM ns_usage`, postgres.UsageShards).Scan(&shards, &bad)
	if err != nil {
		t.Fatal(err)
	}
	if shards < 2 || bad != 0 {
		t.Fatalf("usage rows use %d shards, %d out of range", shards, bad)
	}
}

// MarkDeleting racing sweepers on the namespace's expired keys ends its
// storage exactly once: expiring keys at their expiry, the others at the
// deletion, whichever of them removes an expired key first. Purging keeps
// the usage.
func TestUsageMarkDeletingRacesSweep(t *testing.T) {
	url := pgtest.URL(t)
	a, b := open(t, url, postgres.Config{}), open(t, url, postgres.Config{})
	t0 := base
	expiry := t0.Add(10 * time.Second)
	t1 := t0.Add(100 * time.Second)
	T := t0.Add(time.Hour)
	const nss, nkeys = 8, 24
	var list []kv.Namespace
	want := map[kv.ID]*big.Int{}
	for n := range nss {
		ns := readyNamespace(t, a, "org", fmt.Sprintf("ns%d", n))
		list = append(list, ns)
		want[ns.ID] = new(big.Int)
		for i := range nkeys {
			k := fmt.Sprintf("k%02d", i)
			v := store.PutValue{Data: bytes.Repeat([]byte{'x'}, i), ContentType: "text/plain"}
			d := t1.Sub(t0)
			if i%2 == 0 {
				v.ExpiresAt, d = expiry, expiry.Sub(t0)
			}
			if _, err := a.PutKey(ctx, "org", ns.ID, k, v, t0); err != nil {
				t.Fatal(err)
			}
			want[ns.ID].Add(want[ns.ID], byteNanos(int64(len(k)+i), d))
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, nss+4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := b.SweepExpired(ctx, t1, 3)
				if err != nil {
					errs <- err
					return
				}
				if n == 0 {
					return
				}
			}
		}()
	}
	for _, ns := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.MarkDeleting(ctx, "org", ns.ID, t1); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		got, err := b.Usage(ctx, "org", kv.ID{}, t0, T)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != nss {
			t.Fatalf("%s: usage of %d namespaces, want %d", when, len(got), nss)
		}
		for _, u := range got {
			if u.Bytes != 0 || u.ByteNanos.Cmp(want[u.NamespaceID]) != 0 || u.Writes != nkeys {
				t.Errorf("%s: %s: %d bytes, %v byte-ns, %d writes; want 0, %v, %d", when, u.NamespaceID, u.Bytes, u.ByteNanos, u.Writes, want[u.NamespaceID], nkeys)
			}
		}
	}
	check("after deletion")
	// Sweeping what is left changes nothing.
	for {
		n, err := a.SweepExpired(ctx, t1, 100)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	check("after the sweep")
	for _, ns := range list {
		if err := a.PurgeNamespace(ctx, ns.ID, "w"); err != nil {
			t.Fatal(err)
		}
	}
	check("after purge")
}

// Migration 0002 meters keys stored before it: live keys from the
// migration on, and expired, unswept ones not at all; namespaces being
// deleted get nothing.
func TestUsageMigrationBackfill(t *testing.T) {
	url := pgtest.URL(t)
	db := open(t, url, postgres.Config{})
	ready := readyNamespace(t, db, "org", "ready")
	deleting := readyNamespace(t, db, "org", "deleting")
	past := time.Date(2020, time.May, 7, 0, 0, 0, 0, time.UTC)
	put := func(ns kv.Namespace, key string, size int, expires time.Time) {
		t.Helper()
		v := store.PutValue{Data: bytes.Repeat([]byte{'v'}, size), ContentType: "text/plain", ExpiresAt: expires}
		if _, err := db.PutKey(ctx, "org", ns.ID, key, v, past.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	put(ready, "live", 96, time.Time{})     // 100 bytes
	put(ready, "gone", 46, past)            // 50 bytes, expired in May 2020
	put(deleting, "live", 996, time.Time{}) // 1000 bytes
	if _, err := db.MarkDeleting(ctx, "org", deleting.ID, past); err != nil {
		t.Fatal(err)
	}
	// The database as it was before metering.
	c := rawConn(t, url)
	if _, err := c.Exec(ctx, `DELETE FROM ns_usage`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `DELETE FROM kv_migrations WHERE version = 2`); err != nil {
		t.Fatal(err)
	}
	db2 := open(t, url, postgres.Config{})

	// The month of the migration, by the database's clock.
	var first time.Time
	if err := c.QueryRow(ctx, `SELECT month FROM ns_usage WHERE delta_sum = 100`).Scan(&first); err != nil {
		t.Fatalf("the live key's backfill row: %v", err)
	}
	month := usagemath.MonthOf(first)
	end := month.End().Add(time.Hour) // the whole month
	got := usageOf(t, db2, "org", ready.ID, month.Start(), end)
	if got.Bytes != 100 || got.UsageCounts != (store.UsageCounts{}) {
		t.Fatalf("the migration's month: %+v, want 100 bytes, no counts", got)
	}
	// The live key counts from the migration to the month's end.
	if hi := byteNanos(100, month.Len()); got.ByteNanos.Sign() <= 0 || got.ByteNanos.Cmp(hi) > 0 {
		t.Fatalf("the migration's month: %v byte-ns, want more than 0, at most %v", got.ByteNanos, hi)
	}
	may := usageOf(t, db2, "org", ready.ID, past, end)
	if may.Bytes != 0 || may.ByteNanos.Sign() != 0 {
		t.Fatalf("May 2020 after the backfill: %+v (%v byte-ns), want nothing stored", may, may.ByteNanos)
	}
	if l, err := db2.Usage(ctx, "org", deleting.ID, month.Start(), end); err != nil || len(l) != 0 {
		t.Fatalf("namespace being deleted: %+v, %v; want no usage", l, err)
	}
	// Writing after the backfill keeps the sum right: the expired key's
	// bytes went at its expiry, the live one's go now.
	now := time.Now().UTC()
	if d, err := db2.DeleteKey(ctx, "org", ready.ID, "live", now); err != nil || !d {
		t.Fatal(d, err)
	}
	if n, err := db2.SweepExpired(ctx, now, 10); err != nil || n != 1 {
		t.Fatalf("SweepExpired = %d, %v", n, err)
	}
	if got := usageOf(t, db2, "org", ready.ID, usagemath.MonthOf(now).Start(), now); got.Bytes != 0 {
		t.Fatalf("after deleting everything: %d bytes, want 0", got.Bytes)
	}
}

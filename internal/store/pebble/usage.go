package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/usagemath"
)

// Usage metering. Each namespace has one usage record per month:
//
//	0x05 orglen(2, BE) org month(4, BE) nsid(16) -> usage record
//
// A record holds the month's operation counts and its storage changes: the
// sum of byte deltas, and the sum of each delta times its offset from the
// month's start in nanoseconds. Records are only ever merged into (Pebble's
// merge operator adds them field by field), so concurrent writers never
// read-modify-write a counter, and a change and its count commit in one
// batch. Stored bytes over a period follow from the records (see Usage).
// A key with an expiry has its size in its expiry-index entry: its bytes
// stop counting at the expiry, which reports take into account until the
// sweeper or an overwrite writes the change into the records.
//
// Beside each monthly record, in the same batch, every change is merged
// into the namespace's record of its day (UTC), in the same format, with
// offsets from the day's start:
//
//	0x07 orglen(2, BE) org month(4, BE) day(1) nsid(16) -> usage record
//
// The monthly records alone make the monthly figures; the daily ones split
// them by day (UsageByDay).
const tagUsage byte = 0x05

// usageRecord is the decoded form of a usage record.
type usageRecord struct {
	counts   store.UsageCounts
	delta    int64            // bytes added (or removed) within the month
	weighted usagemath.Int128 // Σ delta × nanoseconds since the month's start
}

const usageRecordSize = 5*8 + 16

func (r usageRecord) encode(dst []byte) []byte {
	for _, v := range []int64{r.counts.Reads, r.counts.Writes, r.counts.Deletes, r.counts.Lists, r.delta} {
		dst = binary.BigEndian.AppendUint64(dst, uint64(v))
	}
	return r.weighted.AppendBinary(dst)
}

func decodeUsage(b []byte) (usageRecord, error) {
	if len(b) != usageRecordSize {
		return usageRecord{}, errors.New("kvd/pebble: corrupt usage record")
	}
	v := func(i int) int64 { return int64(binary.BigEndian.Uint64(b[i*8:])) }
	return usageRecord{
		counts:   store.UsageCounts{Reads: v(0), Writes: v(1), Deletes: v(2), Lists: v(3)},
		delta:    v(4),
		weighted: usagemath.Int128FromBinary(b[40:]),
	}, nil
}

func (r *usageRecord) add(o usageRecord) {
	r.counts.Add(o.counts)
	r.delta += o.delta
	r.weighted = r.weighted.Add(o.weighted)
}

// usageMerger is the engine's merge operator. Only usage records are ever
// merged. Its name is stored in the data directory: changing the record
// format needs a new name and a migration.
var usageMerger = &pebble.Merger{
	Name: "kvd.usage.v1",
	Merge: func(key, value []byte) (pebble.ValueMerger, error) {
		r, err := decodeUsage(value)
		if err != nil {
			return nil, err
		}
		return &usageSum{r}, nil
	},
}

type usageSum struct{ usageRecord }

func (s *usageSum) MergeNewer(value []byte) error { return s.mergeOne(value) }
func (s *usageSum) MergeOlder(value []byte) error { return s.mergeOne(value) }

func (s *usageSum) mergeOne(value []byte) error {
	r, err := decodeUsage(value)
	if err != nil {
		return err
	}
	s.add(r)
	return nil
}

func (s *usageSum) Finish(includesBase bool) ([]byte, io.Closer, error) {
	return s.encode(make([]byte, 0, usageRecordSize)), nil, nil
}

func appendUsagePrefix(dst []byte, org string) []byte {
	dst = append(dst, tagUsage)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(org)))
	return append(dst, org...)
}

func usageKey(org string, m usagemath.Month, id [16]byte) []byte {
	k := appendUsagePrefix(make([]byte, 0, 1+2+len(org)+4+16), org)
	k = binary.BigEndian.AppendUint32(k, m.Index())
	return append(k, id[:]...)
}

func appendUsageDayPrefix(dst []byte, org string, m usagemath.Month) []byte {
	dst = append(dst, tagUsageDay)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(org)))
	dst = append(dst, org...)
	return binary.BigEndian.AppendUint32(dst, m.Index())
}

// usageDayKey is the key of namespace id's record of day (1-31) of month m.
func usageDayKey(org string, m usagemath.Month, day int, id [16]byte) []byte {
	k := appendUsageDayPrefix(make([]byte, 0, 1+2+len(org)+4+1+16), org, m)
	k = append(k, byte(day))
	return append(k, id[:]...)
}

// addUsage merges counts and a change of delta bytes at time at into the
// batch, in the records of at's month and of its day.
func addUsage(b *pebble.Batch, org string, id [16]byte, at time.Time, delta int64, counts store.UsageCounts) error {
	m := usagemath.MonthOf(at)
	r := usageRecord{counts: counts, delta: delta, weighted: usagemath.Mul64(delta, int64(at.Sub(m.Start())))}
	buf := r.encode(make([]byte, 0, 2*usageRecordSize))
	if err := b.Merge(usageKey(org, m, id), buf, nil); err != nil {
		return err
	}
	r.weighted = usagemath.Mul64(delta, int64(at.Sub(usagemath.DayOf(at))))
	return b.Merge(usageDayKey(org, m, m.DayInMonth(at), id), r.encode(buf[usageRecordSize:]), nil)
}

// keySize is what a key costs in storage: its key and value bytes.
func keySize(key string, valueLen int) int64 { return int64(len(key) + valueLen) }

// AddUsage implements store.Store.
func (d *DB) AddUsage(ctx context.Context, counts []store.UsageDelta) error {
	if err := d.begin(ctx); err != nil {
		return err
	}
	defer d.end()
	b := d.db.NewBatch()
	defer b.Close()
	for _, c := range counts {
		id := [16]byte(c.NamespaceID)
		r := usageRecord{counts: c.UsageCounts}
		m := usagemath.MonthOf(c.Month)
		if err := b.Merge(usageKey(c.Org, m, id), r.encode(nil), nil); err != nil {
			return err
		}
		if err := b.Merge(usageDayKey(c.Org, m, m.DayInMonth(c.Day), id), r.encode(nil), nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("kvd/pebble: add usage: %w", err)
	}
	return nil
}

// nsUsage gathers one namespace's records for a report.
type nsUsage struct {
	carried  int64 // bytes at the month's start
	month    usageRecord
	inMonth  bool
	weighted *big.Int
	days     map[int]*usagemath.DayRecord // by day of month, for UsageByDay
}

func (u *nsUsage) day(n int) *usagemath.DayRecord {
	r := u.days[n]
	if r == nil {
		r = &usagemath.DayRecord{Weighted: new(big.Int)}
		u.days[n] = r
	}
	return r
}

// Usage implements store.Store.
func (d *DB) Usage(ctx context.Context, org string, nsID kv.ID, month, now time.Time) ([]store.NamespaceUsage, error) {
	return d.usage(ctx, org, nsID, month, now, false)
}

// UsageByDay implements store.Store.
func (d *DB) UsageByDay(ctx context.Context, org string, nsID kv.ID, month, now time.Time) ([]store.NamespaceUsage, error) {
	return d.usage(ctx, org, nsID, month, now, true)
}

// usage reads the records from one snapshot, so that the monthly records,
// the daily ones and the expiry index agree.
func (d *DB) usage(ctx context.Context, org string, nsID kv.ID, month, now time.Time, byDay bool) ([]store.NamespaceUsage, error) {
	if err := d.begin(ctx); err != nil {
		return nil, err
	}
	defer d.end()
	m := usagemath.MonthOf(month)
	end := m.End()
	if now.Before(end) {
		end = now
	}
	if end.Before(m.Start()) {
		return nil, nil
	}
	only := [16]byte(nsID) // zero: every namespace
	snap := d.db.NewSnapshot()
	defer snap.Close()
	byNS := map[[16]byte]*nsUsage{}
	get := func(id [16]byte) *nsUsage {
		u := byNS[id]
		if u == nil {
			u = &nsUsage{weighted: new(big.Int)}
			if byDay {
				u.days = map[int]*usagemath.DayRecord{}
			}
			byNS[id] = u
		}
		return u
	}
	// The records of every month up to this one.
	lo := appendUsagePrefix(nil, org)
	hi := binary.BigEndian.AppendUint32(bytes.Clone(lo), m.Index()+1)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()[len(lo):]
		var id [16]byte
		copy(id[:], k[4:])
		if only != ([16]byte{}) && id != only {
			continue
		}
		r, err := decodeUsage(it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		u := get(id)
		if binary.BigEndian.Uint32(k) < m.Index() {
			u.carried += r.delta
		} else {
			u.month.add(r)
			u.inMonth = true
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, err
	}
	if byDay {
		if err := d.dayRecords(snap, org, m, only, get); err != nil {
			return nil, err
		}
	}
	// Keys that expired by the period's end but are not swept yet.
	if err := d.pendingExpiries(snap, org, only, end, func(id [16]byte, at time.Time, size int64) {
		u := get(id)
		if at.Before(m.Start()) {
			u.carried -= size
			return
		}
		u.month.delta -= size
		u.month.weighted = u.month.weighted.Add(usagemath.Mul64(-size, int64(at.Sub(m.Start()))))
		u.inMonth = true
		if byDay {
			r := u.day(m.DayInMonth(at))
			r.Delta -= size
			r.Weighted.Sub(r.Weighted, usagemath.Mul64(size, int64(at.Sub(usagemath.DayOf(at)))).Big())
		}
	}); err != nil {
		return nil, err
	}
	out := make([]store.NamespaceUsage, 0, len(byNS))
	for id, u := range byNS {
		if !u.inMonth && u.carried == 0 {
			continue
		}
		nu := store.NamespaceUsage{
			NamespaceID: kv.ID(id),
			UsageCounts: u.month.counts,
			ByteNanos:   usagemath.StorageIntegral(u.carried, u.month.delta, u.month.weighted.Big(), end.Sub(m.Start())),
			Bytes:       u.carried + u.month.delta,
		}
		if byDay {
			nu.Days = usagemath.Days(m, end, nu.Bytes, u.days)
		}
		out = append(out, nu)
	}
	return out, nil
}

// dayRecords adds org's daily records of month m (only's, when not zero)
// to the namespaces' usage.
func (d *DB) dayRecords(r pebble.Reader, org string, m usagemath.Month, only [16]byte, get func([16]byte) *nsUsage) error {
	lo := appendUsageDayPrefix(nil, org, m)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: store.PrefixEnd(lo)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()[len(lo):]
		if len(k) != 1+16 {
			it.Close()
			return errors.New("pebble: corrupt daily usage key")
		}
		var id [16]byte
		copy(id[:], k[1:])
		if only != ([16]byte{}) && id != only {
			continue
		}
		rec, err := decodeUsage(it.Value())
		if err != nil {
			it.Close()
			return err
		}
		get(id).day(int(k[0])).Add(usagemath.DayRecord{Counts: rec.counts, Delta: rec.delta, Weighted: rec.weighted.Big()})
	}
	return errors.Join(it.Error(), it.Close())
}

// pendingExpiries calls fn for each key of org's live namespaces (or of
// only's, when not zero) whose expiry is at or before until and which is not swept
// in r.
func (d *DB) pendingExpiries(r pebble.Reader, org string, only [16]byte, until time.Time, fn func(id [16]byte, at time.Time, size int64)) error {
	d.mu.RLock()
	entries := make([]*nsEntry, 0, len(d.byOrg[org]))
	for _, e := range d.byOrg[org] {
		if only == ([16]byte{}) || e.id == only {
			entries = append(entries, e)
		}
	}
	d.mu.RUnlock()
	for _, e := range entries {
		if err := scanExpiredIn(r, e.id, until, 0, func(x expiryEntry, size int64) { fn(e.id, decodeExpiry(x.expiry), size) }); err != nil {
			return err
		}
	}
	return nil
}

// scanExpired calls fn for up to max (0: all) expiry entries of namespace
// id due at or before until, in expiry order.
func (d *DB) scanExpired(id [16]byte, until time.Time, max int, fn func(x expiryEntry, size int64)) error {
	return scanExpiredIn(d.db, id, until, max, fn)
}

// scanExpiredIn is scanExpired reading r.
func scanExpiredIn(r pebble.Reader, id [16]byte, until time.Time, max int, fn func(x expiryEntry, size int64)) error {
	lo, _ := namespaceRange(tagExpiry, id)
	hi := appendExpiryKey(nil, id, encodeExpiry(until)+1, "")
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	n := 0
	for ok := it.First(); ok && (max == 0 || n < max); ok = it.Next() {
		k := it.Key()
		var size int64
		if v := it.Value(); len(v) == 8 {
			size = int64(binary.BigEndian.Uint64(v))
		}
		fn(expiryEntry{binary.BigEndian.Uint64(k[17:25]), string(k[25:])}, size)
		n++
	}
	return errors.Join(it.Error(), it.Close())
}

// liveBytes is what namespace e stores at now: its records' deltas, less
// its keys expired by now and not yet swept.
func (d *DB) liveBytes(e *nsEntry, now time.Time) (int64, error) {
	lo := appendUsagePrefix(nil, e.ns.Org)
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: store.PrefixEnd(lo)})
	if err != nil {
		return 0, err
	}
	var total int64
	for ok := it.First(); ok; ok = it.Next() {
		if !bytes.Equal(it.Key()[len(lo)+4:], e.id[:]) {
			continue
		}
		r, err := decodeUsage(it.Value())
		if err != nil {
			it.Close()
			return 0, err
		}
		total += r.delta
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, err
	}
	err = d.scanExpired(e.id, now, 0, func(_ expiryEntry, size int64) { total -= size })
	return total, err
}

package usagemath

import (
	"math/big"
	"time"

	"github.com/edgekv/kv/internal/store"
)

// DayOf returns the first instant of t's calendar day, UTC.
func DayOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// DayInMonth returns the day of month (1-31) of t when t falls in m, and
// else 1: engines keep counts given for a day outside their month on its
// first day.
func (m Month) DayInMonth(t time.Time) int {
	if t.IsZero() || MonthOf(t) != m {
		return 1
	}
	return t.UTC().Day()
}

// DayRecord is what an engine keeps for one day of a namespace's usage:
// the day's operation counts and its storage changes, as for a month but
// with offsets from the day's start.
type DayRecord struct {
	Counts   store.UsageCounts
	Delta    int64    // bytes added (or removed) within the day
	Weighted *big.Int // Σ delta × nanoseconds since the day's start; nil is 0
}

// Add adds o to r.
func (r *DayRecord) Add(o DayRecord) {
	r.Counts.Add(o.Counts)
	r.Delta += o.Delta
	if o.Weighted != nil {
		if r.Weighted == nil {
			r.Weighted = new(big.Int)
		}
		r.Weighted.Add(r.Weighted, o.Weighted)
	}
}

// Days returns the days of month m from its first up to the one that holds
// end (end is in the month, or its end), from the records by day of month
// (1-31) and endBytes, the bytes stored at end. Each day's stored bytes are
// worked out backwards from endBytes, so a day's figures are exact as long
// as the records of the days after it are complete (a store that began
// keeping daily records in the middle of a month has exact figures from
// that day on).
func Days(m Month, end time.Time, endBytes int64, recs map[int]*DayRecord) []store.DayUsage {
	var days []store.DayUsage
	for d := m.Start(); d.Before(m.End()) && !d.After(end); d = d.AddDate(0, 0, 1) {
		days = append(days, store.DayUsage{Day: d})
	}
	bytes := endBytes
	for i := len(days) - 1; i >= 0; i-- {
		day := &days[i]
		stop := day.Day.AddDate(0, 0, 1)
		if end.Before(stop) {
			stop = end
		}
		var rec DayRecord
		if r := recs[i+1]; r != nil {
			rec = *r
		}
		day.UsageCounts = rec.Counts
		day.Bytes = bytes
		// Bytes at the day's end over its length, less what changes within
		// it did not cover: the integral, as StorageIntegral.
		day.ByteNanos = new(big.Int).Mul(big.NewInt(bytes), big.NewInt(int64(stop.Sub(day.Day))))
		if rec.Weighted != nil {
			day.ByteNanos.Sub(day.ByteNanos, rec.Weighted)
		}
		bytes -= rec.Delta
	}
	return days
}

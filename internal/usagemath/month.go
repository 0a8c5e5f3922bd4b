// Package usagemath is the exact arithmetic of metered usage, shared by the
// storage engines (which record usage in the commits that cause it) and the
// service (which reports and prices it): calendar months and days in UTC,
// and 128-bit sums of bytes times nanoseconds.
package usagemath

import "time"

// Month is a calendar month in UTC, named by its first instant.
type Month struct{ start time.Time }

// MonthOf returns the month that contains t.
func MonthOf(t time.Time) Month {
	t = t.UTC()
	return Month{time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)}
}

// ParseMonth parses "YYYY-MM"; ok is false for anything else.
func ParseMonth(s string) (m Month, ok bool) {
	t, err := time.Parse("2006-01", s)
	if err != nil || len(s) != 7 {
		return Month{}, false
	}
	return Month{t}, true
}

// Start is the month's first instant.
func (m Month) Start() time.Time { return m.start }

// End is the first instant of the next month.
func (m Month) End() time.Time { return m.start.AddDate(0, 1, 0) }

// Len is the month's length.
func (m Month) Len() time.Duration { return m.End().Sub(m.start) }

// Next is the following month.
func (m Month) Next() Month { return Month{m.End()} }

func (m Month) String() string { return m.start.Format("2006-01") }

// Index numbers months consecutively (year*12 + month-1), for storage keys.
func (m Month) Index() uint32 { return uint32(m.start.Year()*12 + int(m.start.Month()) - 1) }

// MonthFromIndex is the inverse of Index.
func MonthFromIndex(i uint32) Month {
	return Month{time.Date(int(i/12), time.Month(i%12+1), 1, 0, 0, 0, 0, time.UTC)}
}

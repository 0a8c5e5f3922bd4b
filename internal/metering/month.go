// Package metering meters the service for billing: it buffers read and list
// counts for at most a second, names calendar months, and prices a month's
// usage from the published table.
package metering

import (
	"fmt"
	"time"

	"github.com/edgekv/kv"
)

// Month is a calendar month in UTC, named by its first instant.
type Month struct{ start time.Time }

// MonthOf returns the month that contains t.
func MonthOf(t time.Time) Month {
	t = t.UTC()
	return Month{time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)}
}

// ParseMonth parses "YYYY-MM".
func ParseMonth(s string) (Month, error) {
	t, err := time.Parse("2006-01", s)
	if err != nil || len(s) != 7 {
		return Month{}, kv.Errorf(kv.EInvalid, "month must be YYYY-MM, e.g. 2026-11; got %q", truncate(s, 32)).WithParam("month")
	}
	return Month{t}, nil
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s…", s[:n])
}

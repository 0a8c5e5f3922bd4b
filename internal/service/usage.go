package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/metering"
	"github.com/edgekv/kv/internal/store"
	"github.com/edgekv/kv/internal/usagemath"
)

// UsageReport is an organization's (or one namespace's) usage in a month,
// with its bill.
type UsageReport struct {
	Month usagemath.Month
	// PeriodEnd is when the figures stop: the month's end, or now for the
	// current month.
	PeriodEnd time.Time
	Total     NamespaceUsage
	// Namespaces has one entry per namespace with usage, by id.
	Namespaces []NamespaceUsage
	Bill       metering.Bill
	// Days splits Total by day (UTC), from the month's first day to the
	// one that holds PeriodEnd; only UsageByDay sets it.
	Days []DayUsage
}

// DayUsage is one day's share of a report's total.
type DayUsage struct {
	Day time.Time // the day's first instant, UTC
	store.UsageCounts
	ByteNanos *big.Int
	Bytes     int64 // stored at the day's end, or at PeriodEnd
}

// NamespaceUsage is one namespace's (or the total) usage in a report.
type NamespaceUsage struct {
	ID   kv.ID
	Name string // "" once the namespace is gone
	store.UsageCounts
	ByteNanos *big.Int
	GBMonths  *big.Rat
	Bytes     int64 // stored at PeriodEnd
}

// Usage reports org's usage in month ("YYYY-MM"; "" means the current
// month): per namespace, in total, and priced. A non-zero nsID limits it to
// one namespace, which must exist or have had usage that month.
func (s *Service) Usage(ctx context.Context, p Principal, nsID kv.ID, month string) (UsageReport, error) {
	return s.usage(ctx, p, nsID, month, false)
}

// UsageByDay is Usage with the total split by day as well; the month's
// figures and the days come from one read of the store, so the days add up
// to the month.
func (s *Service) UsageByDay(ctx context.Context, p Principal, nsID kv.ID, month string) (UsageReport, error) {
	return s.usage(ctx, p, nsID, month, true)
}

// A token scoped to namespaces reads only their usage, one at a time: the
// organization's report (and its bill) covers namespaces it does not see.
func (s *Service) usage(ctx context.Context, p Principal, nsID kv.ID, month string, byDay bool) (UsageReport, error) {
	if nsID.IsZero() {
		if err := p.can(kv.PermUsageRead); err != nil {
			return UsageReport{}, err
		}
		if p.Scoped() {
			return UsageReport{}, kv.Errorf(kv.EForbidden, "this API key is scoped to namespaces; read their usage one at a time, at /v2/storage/kvs/{id}/usage")
		}
	} else if err := p.namespace(nsID, kv.PermUsageRead); err != nil {
		return UsageReport{}, err
	}
	org := p.Org
	now := s.now().UTC()
	m := usagemath.MonthOf(now)
	if month != "" {
		var ok bool
		if m, ok = usagemath.ParseMonth(month); !ok {
			return UsageReport{}, kv.Errorf(kv.EInvalid, "month must be YYYY-MM, e.g. 2026-11; got %q", truncate(month, 32)).WithParam("month")
		}
	}
	// What is buffered now belongs in the report.
	if err := s.meter.Flush(ctx); err != nil {
		return UsageReport{}, err
	}
	read := s.store.Usage
	if byDay {
		read = s.store.UsageByDay
	}
	list, err := read(ctx, org, nsID, m.Start(), now)
	if err != nil {
		return UsageReport{}, fromStore(err, "")
	}
	if !nsID.IsZero() && len(list) == 0 {
		if _, err := s.store.GetNamespace(ctx, org, nsID); err != nil {
			return UsageReport{}, fromStore(err, "")
		}
	}
	r := UsageReport{Month: m, PeriodEnd: m.End(), Total: NamespaceUsage{ByteNanos: new(big.Int)}}
	if now.Before(r.PeriodEnd) {
		r.PeriodEnd = now
	}
	if r.PeriodEnd.Before(m.Start()) { // a month still to come
		r.PeriodEnd = m.Start()
	}
	if byDay {
		r.Days = []DayUsage{} // a month still to come has none
		for d := m.Start(); d.Before(m.End()) && !d.After(now); d = d.AddDate(0, 0, 1) {
			r.Days = append(r.Days, DayUsage{Day: d, ByteNanos: new(big.Int)})
		}
	}
	for _, u := range list {
		for i, d := range u.Days {
			if i >= len(r.Days) || !d.Day.Equal(r.Days[i].Day) {
				return UsageReport{}, fmt.Errorf("service: usage of %s has day %v where %d is expected", u.NamespaceID, d.Day, i+1)
			}
			r.Days[i].UsageCounts.Add(d.UsageCounts)
			r.Days[i].ByteNanos.Add(r.Days[i].ByteNanos, d.ByteNanos)
			r.Days[i].Bytes += d.Bytes
		}
		nu := NamespaceUsage{ID: u.NamespaceID, UsageCounts: u.UsageCounts, ByteNanos: u.ByteNanos, GBMonths: metering.GBMonths(u.ByteNanos, m), Bytes: u.Bytes}
		if ns, err := s.store.GetNamespace(ctx, org, u.NamespaceID); err == nil {
			nu.Name = ns.Name
		} else if !errors.Is(err, store.ErrNamespaceNotFound) {
			return UsageReport{}, fromStore(err, "")
		}
		r.Namespaces = append(r.Namespaces, nu)
		r.Total.UsageCounts.Add(u.UsageCounts)
		r.Total.ByteNanos.Add(r.Total.ByteNanos, u.ByteNanos)
		r.Total.Bytes += u.Bytes
	}
	slices.SortFunc(r.Namespaces, func(a, b NamespaceUsage) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	r.Total.GBMonths = metering.GBMonths(r.Total.ByteNanos, m)
	r.Bill = metering.NewBill(r.Total.UsageCounts, r.Total.GBMonths)
	return r, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

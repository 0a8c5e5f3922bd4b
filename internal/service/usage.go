package service

import (
	"context"
	"errors"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/metering"
	"github.com/edgekv/kv/internal/store"
)

// UsageReport is an organization's (or one namespace's) usage in a month,
// with its bill.
type UsageReport struct {
	Month metering.Month
	// PeriodEnd is when the figures stop: the month's end, or now for the
	// current month.
	PeriodEnd time.Time
	Total     NamespaceUsage
	// Namespaces has one entry per namespace with usage, by id.
	Namespaces []NamespaceUsage
	Bill       metering.Bill
}

// NamespaceUsage is one namespace's (or the total) usage in a report.
type NamespaceUsage struct {
	ID   string
	Name string // "" once the namespace is gone
	store.UsageCounts
	ByteNanos *big.Int
	GBMonths  *big.Rat
	Bytes     int64 // stored at PeriodEnd
}

// Usage reports org's usage in month ("YYYY-MM"; "" means the current
// month): per namespace, in total, and priced. nsID limits it to one
// namespace, which must exist or have had usage that month.
func (s *Service) Usage(ctx context.Context, org, nsID, month string) (UsageReport, error) {
	now := s.now().UTC()
	m := metering.MonthOf(now)
	if month != "" {
		var err error
		if m, err = metering.ParseMonth(month); err != nil {
			return UsageReport{}, err
		}
	}
	if nsID != "" {
		var err error
		if nsID, err = kv.CanonicalID(nsID); err != nil {
			return UsageReport{}, err
		}
	}
	// What is buffered now belongs in the report.
	if err := s.meter.Flush(ctx); err != nil {
		return UsageReport{}, err
	}
	list, err := s.store.Usage(ctx, org, nsID, m.Start(), now)
	if err != nil {
		return UsageReport{}, err
	}
	if nsID != "" && len(list) == 0 {
		if _, err := s.store.GetNamespace(ctx, org, nsID); err != nil {
			return UsageReport{}, err
		}
	}
	r := UsageReport{Month: m, PeriodEnd: m.End(), Total: NamespaceUsage{ByteNanos: new(big.Int)}}
	if now.Before(r.PeriodEnd) {
		r.PeriodEnd = now
	}
	if r.PeriodEnd.Before(m.Start()) { // a month still to come
		r.PeriodEnd = m.Start()
	}
	for _, u := range list {
		nu := NamespaceUsage{ID: u.NamespaceID, UsageCounts: u.UsageCounts, ByteNanos: u.ByteNanos, GBMonths: metering.GBMonths(u.ByteNanos, m), Bytes: u.Bytes}
		if ns, err := s.store.GetNamespace(ctx, org, u.NamespaceID); err == nil {
			nu.Name = ns.Name
		} else if !errors.Is(err, kv.ErrNotFound) {
			return UsageReport{}, err
		}
		r.Namespaces = append(r.Namespaces, nu)
		r.Total.UsageCounts.Add(u.UsageCounts)
		r.Total.ByteNanos.Add(r.Total.ByteNanos, u.ByteNanos)
		r.Total.Bytes += u.Bytes
	}
	slices.SortFunc(r.Namespaces, func(a, b NamespaceUsage) int { return strings.Compare(a.ID, b.ID) })
	r.Total.GBMonths = metering.GBMonths(r.Total.ByteNanos, m)
	r.Bill = metering.NewBill(r.Total.UsageCounts, r.Total.GBMonths)
	return r, nil
}

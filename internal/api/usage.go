package api

import (
	"math/big"
	"net/http"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/metering"
	"github.com/edgekv/kv/internal/service"
)

// Usage is an extension of the contract: the metered usage of an
// organization (with its bill) or of one namespace, in a calendar month.

type usageEnvelope struct {
	Data kv.UsageRecord `json:"data"`
}

// gbMonthDecimals is how many decimals GB-month figures are shown with.
const gbMonthDecimals = 12

// byteSeconds shows byte-nanoseconds as byte-seconds.
func byteSeconds(nanos *big.Int) string {
	return new(big.Rat).SetFrac(nanos, big.NewInt(1e9)).FloatString(3)
}

// parseGranularity reads the granularity parameter (an extension): "month",
// the default, or "day", which adds the days.
func parseGranularity(q query) (byDay bool, err error) {
	v, ok := q["granularity"]
	switch {
	case !ok || v == "month":
		return false, nil
	case v == "day":
		return true, nil
	}
	return false, kv.Errorf(kv.EInvalid, `granularity must be "month" or "day"; got %q`, truncate(v, 32)).WithParam("granularity")
}

func figures(u service.NamespaceUsage) kv.UsageFigures {
	return kv.UsageFigures{
		Reads: u.Reads, Writes: u.Writes, Deletes: u.Deletes, Lists: u.Lists,
		StorageByteSeconds: byteSeconds(u.ByteNanos),
		StorageGBMonths:    u.GBMonths.FloatString(gbMonthDecimals),
		StoredBytes:        u.Bytes,
	}
}

func quantity(r *big.Rat, resource string) string {
	if resource == "storage" {
		return r.FloatString(gbMonthDecimals)
	}
	return r.FloatString(0)
}

func toBill(b metering.Bill) *kv.BillRecord {
	out := &kv.BillRecord{Currency: "USD", Total: metering.Dollars(b.Cents)}
	for _, l := range b.Lines {
		out.Lines = append(out.Lines, kv.BillLineRecord{
			Resource:  l.Resource,
			Unit:      l.Unit,
			Quantity:  quantity(l.Quantity, l.Resource),
			Free:      quantity(l.Free, l.Resource),
			Billable:  quantity(l.Billable, l.Resource),
			UnitPrice: l.UnitPrice.FloatString(2),
			PerUnits:  l.PerUnits,
			Amount:    metering.Dollars(l.Cents),
		})
	}
	return out
}

func (h *Handler) usage(w *recorder, r *http.Request, who service.Principal, rt route) {
	nsID := rt.ns // zero for the organization's usage
	q, err := parseQuery(r.URL.RawQuery, "month", "granularity")
	if err != nil {
		h.fail(w, err)
		return
	}
	byDay, err := parseGranularity(q)
	if err != nil {
		h.fail(w, err)
		return
	}
	read := h.svc.Usage
	if byDay {
		read = h.svc.UsageByDay
	}
	rep, err := read(r.Context(), who, nsID, q["month"])
	if err != nil {
		h.fail(w, err)
		return
	}
	out := kv.UsageRecord{
		RecordType:   "storage_kv_usage",
		Month:        rep.Month.String(),
		PeriodStart:  rep.Month.Start().Format(kv.NamespaceTimeFormat),
		PeriodEnd:    rep.PeriodEnd.UTC().Format(kv.NamespaceTimeFormat),
		UsageFigures: figures(rep.Total),
	}
	if nsID.IsZero() {
		out.Namespaces = make([]kv.NamespaceUsageRecord, 0, len(rep.Namespaces))
		for _, u := range rep.Namespaces {
			out.Namespaces = append(out.Namespaces, kv.NamespaceUsageRecord{ID: u.ID.String(), Name: u.Name, UsageFigures: figures(u)})
		}
		out.Bill = toBill(rep.Bill)
	}
	if byDay {
		out.Days = make([]kv.UsageDayRecord, 0, len(rep.Days))
		for _, d := range rep.Days {
			out.Days = append(out.Days, kv.UsageDayRecord{
				Date:  d.Day.Format(time.DateOnly),
				Reads: d.Reads, Writes: d.Writes, Deletes: d.Deletes, Lists: d.Lists,
				StorageByteSeconds: byteSeconds(d.ByteNanos),
				StoredBytes:        d.Bytes,
			})
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, usageEnvelope{Data: out})
}

package api

import (
	"math/big"
	"net/http"

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

func figures(u service.NamespaceUsage) kv.UsageFigures {
	secs := new(big.Rat).SetFrac(u.ByteNanos, big.NewInt(1e9))
	return kv.UsageFigures{
		Reads: u.Reads, Writes: u.Writes, Deletes: u.Deletes, Lists: u.Lists,
		StorageByteSeconds: secs.FloatString(3),
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

func (h *Handler) usage(w *recorder, r *http.Request, org string, rt route) {
	nsID := ""
	if rt.kind == routeNamespaceUsage {
		nsID = rt.id
		if nsID == "" {
			h.fail(w, kv.Errorf(kv.EInvalid, "namespace id is empty"))
			return
		}
	}
	q, err := parseQuery(r.URL.RawQuery, "month")
	if err != nil {
		h.fail(w, err)
		return
	}
	rep, err := h.svc.Usage(r.Context(), org, nsID, q["month"])
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
	if nsID == "" {
		out.Namespaces = make([]kv.NamespaceUsageRecord, 0, len(rep.Namespaces))
		for _, u := range rep.Namespaces {
			out.Namespaces = append(out.Namespaces, kv.NamespaceUsageRecord{ID: u.ID, Name: u.Name, UsageFigures: figures(u)})
		}
		out.Bill = toBill(rep.Bill)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, usageEnvelope{Data: out})
}

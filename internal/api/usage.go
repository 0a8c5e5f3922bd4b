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
	Data usageJSON `json:"data"`
}

type usageJSON struct {
	RecordType  string `json:"record_type"`
	Month       string `json:"month"`
	PeriodStart string `json:"period_start"`
	PeriodEnd   string `json:"period_end"`
	usageFigures
	Namespaces []namespaceUsageJSON `json:"namespaces,omitempty"`
	Bill       *billJSON            `json:"bill,omitempty"`
}

type usageFigures struct {
	Reads              int64  `json:"reads"`
	Writes             int64  `json:"writes"`
	Deletes            int64  `json:"deletes"`
	Lists              int64  `json:"lists"`
	StorageByteSeconds string `json:"storage_byte_seconds"`
	StorageGBMonths    string `json:"storage_gb_months"`
	StoredBytes        int64  `json:"stored_bytes"`
}

type namespaceUsageJSON struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	usageFigures
}

type billJSON struct {
	Currency string         `json:"currency"`
	Lines    []billLineJSON `json:"lines"`
	Total    string         `json:"total"`
}

type billLineJSON struct {
	Resource  string `json:"resource"`
	Unit      string `json:"unit"`
	Quantity  string `json:"quantity"`
	Free      string `json:"free"`
	Billable  string `json:"billable"`
	UnitPrice string `json:"unit_price"`
	PerUnits  int64  `json:"per_units"`
	Amount    string `json:"amount"`
}

// gbMonthDecimals is how many decimals GB-month figures are shown with.
const gbMonthDecimals = 12

func figures(u service.NamespaceUsage) usageFigures {
	secs := new(big.Rat).SetFrac(u.ByteNanos, big.NewInt(1e9))
	return usageFigures{
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

func toBill(b metering.Bill) *billJSON {
	out := &billJSON{Currency: "USD", Total: metering.Dollars(b.Cents)}
	for _, l := range b.Lines {
		out.Lines = append(out.Lines, billLineJSON{
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
	rep, err := h.svc.Usage(r.Context(), org, nsID, r.URL.Query().Get("month"))
	if err != nil {
		h.fail(w, err)
		return
	}
	out := usageJSON{
		RecordType:   "storage_kv_usage",
		Month:        rep.Month.String(),
		PeriodStart:  rep.Month.Start().Format(kv.NamespaceTimeFormat),
		PeriodEnd:    rep.PeriodEnd.UTC().Format(kv.NamespaceTimeFormat),
		usageFigures: figures(rep.Total),
	}
	if nsID == "" {
		out.Namespaces = make([]namespaceUsageJSON, 0, len(rep.Namespaces))
		for _, u := range rep.Namespaces {
			out.Namespaces = append(out.Namespaces, namespaceUsageJSON{ID: u.ID, Name: u.Name, usageFigures: figures(u)})
		}
		out.Bill = toBill(rep.Bill)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, usageEnvelope{Data: out})
}

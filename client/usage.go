package client

import (
	"context"
	"net/http"
	"net/url"
)

// Usage is metered usage in one calendar month (UTC), as kvd reports it
// (an extension of the hosted API). Byte-second and GB-month figures are
// decimal strings, exact to their last digit.
type Usage struct {
	RecordType  string `json:"record_type"`
	Month       string `json:"month"`        // YYYY-MM
	PeriodStart string `json:"period_start"` // the month's start
	PeriodEnd   string `json:"period_end"`   // the month's end, or now for the current month
	UsageFigures
	// Namespaces and Bill are set for an organization's usage only.
	Namespaces []NamespaceUsage `json:"namespaces,omitempty"`
	Bill       *Bill            `json:"bill,omitempty"`
}

// UsageFigures are the metered quantities.
type UsageFigures struct {
	Reads              int64  `json:"reads"`
	Writes             int64  `json:"writes"`
	Deletes            int64  `json:"deletes"`
	Lists              int64  `json:"lists"`
	StorageByteSeconds string `json:"storage_byte_seconds"`
	StorageGBMonths    string `json:"storage_gb_months"`
	StoredBytes        int64  `json:"stored_bytes"`
}

// NamespaceUsage is one namespace's share of an organization's usage.
type NamespaceUsage struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"` // empty once the namespace is gone
	UsageFigures
}

// Bill is a month's bill, line by line; amounts are dollars ("12.34").
type Bill struct {
	Currency string     `json:"currency"`
	Lines    []BillLine `json:"lines"`
	Total    string     `json:"total"`
}

// BillLine is one resource's charge: Billable = Quantity - Free (at least
// 0), Amount = Billable × UnitPrice / PerUnits, rounded to the cent.
type BillLine struct {
	Resource  string `json:"resource"`
	Unit      string `json:"unit"`
	Quantity  string `json:"quantity"`
	Free      string `json:"free"`
	Billable  string `json:"billable"`
	UnitPrice string `json:"unit_price"`
	PerUnits  int64  `json:"per_units"`
	Amount    string `json:"amount"`
}

func (c *Client) usage(ctx context.Context, path, month string) (*Usage, error) {
	q := url.Values{}
	if month != "" {
		q.Set("month", month)
	}
	var out struct {
		Data Usage `json:"data"`
	}
	if err := c.doJSON(ctx, request{method: http.MethodGet, path: path, query: q.Encode(), retry: true}, &out); err != nil {
		return nil, err
	}
	return &out.Data, nil
}

// Usage returns the organization's usage and bill for month ("YYYY-MM";
// "" for the current month).
func (c *Client) Usage(ctx context.Context, month string) (*Usage, error) {
	return c.usage(ctx, namespacesPath+"/usage", month)
}

// Usage returns the namespace's usage for month ("YYYY-MM"; "" for the
// current month).
func (ns *Namespace) Usage(ctx context.Context, month string) (*Usage, error) {
	return ns.c.usage(ctx, namespacePath(ns.id)+"/usage", month)
}

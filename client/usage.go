package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/edgekv/kv"
)

// The usage report's shapes are the API's own.
type (
	// Usage is metered usage in one calendar month (UTC), as kvd reports
	// it (an extension of the hosted API).
	Usage = kv.UsageRecord
	// UsageFigures are the metered quantities.
	UsageFigures = kv.UsageFigures
	// NamespaceUsage is one namespace's share of an organization's usage.
	NamespaceUsage = kv.NamespaceUsageRecord
	// Bill is a month's bill, line by line.
	Bill = kv.BillRecord
	// BillLine is one resource's charge.
	BillLine = kv.BillLineRecord
)

func (c *Client) usage(ctx context.Context, path, month string) (*Usage, error) {
	q := url.Values{}
	if month != "" {
		q.Set("month", month)
	}
	var out struct {
		Data Usage `json:"data"`
	}
	if err := c.doJSON(ctx, request{method: http.MethodGet, path: path, query: q.Encode(), retry: true, limit: MaxUsageResponse}, &out); err != nil {
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

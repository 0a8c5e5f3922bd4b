package kv

import (
	"fmt"
	"net/http"
	"time"
)

// The JSON shapes of the HTTP API, shared by the server, the Go client and
// the CLI so that the three cannot drift apart.

// NamespaceRecord is a namespace on the wire.
type NamespaceRecord struct {
	RecordType string `json:"record_type"` // "storage_kv"
	ID         string `json:"id"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	CreatedAt  string `json:"created_at"` // NamespaceTimeFormat
	UpdatedAt  string `json:"updated_at"`
}

// Record returns ns as the API writes it.
func (ns Namespace) Record() NamespaceRecord {
	return NamespaceRecord{
		RecordType: "storage_kv",
		ID:         ns.ID.String(),
		Name:       ns.Name,
		Status:     string(ns.Status),
		CreatedAt:  ns.CreatedAt.UTC().Format(NamespaceTimeFormat),
		UpdatedAt:  ns.UpdatedAt.UTC().Format(NamespaceTimeFormat),
	}
}

// Namespace returns the namespace r describes, or an error when its id is
// not a UUID; timestamps that do not parse are left zero. The organization
// is not on the wire.
func (r NamespaceRecord) Namespace() (Namespace, error) {
	id, err := ParseID(r.ID)
	if err != nil {
		return Namespace{}, fmt.Errorf("kv: a namespace record's id %.80q is not a UUID", r.ID)
	}
	created, _ := time.Parse(time.RFC3339Nano, r.CreatedAt)
	updated, _ := time.Parse(time.RFC3339Nano, r.UpdatedAt)
	return Namespace{ID: id, Name: r.Name, Status: Status(r.Status), CreatedAt: created, UpdatedAt: updated}, nil
}

// NamespaceEnvelope is the answer that carries one namespace.
type NamespaceEnvelope struct {
	Data NamespaceRecord `json:"data"`
}

// NamespaceListRecord is a page of the namespace listing.
type NamespaceListRecord struct {
	Data []NamespaceRecord `json:"data"`
	Meta PageMeta          `json:"meta"`
}

// PageMeta is where a page of the namespace listing is.
type PageMeta struct {
	PageNumber   int `json:"page_number"`
	PageSize     int `json:"page_size"`
	TotalPages   int `json:"total_pages"`
	TotalResults int `json:"total_results"`
}

// UsageRecord is metered usage in one calendar month (UTC), as
// GET /v2/storage/kvs/usage and /v2/storage/kvs/{id}/usage return it (an
// extension of the hosted API). Byte-second and GB-month figures are
// decimal strings, exact to their last digit.
type UsageRecord struct {
	RecordType  string `json:"record_type"`  // "storage_kv_usage"
	Month       string `json:"month"`        // YYYY-MM
	PeriodStart string `json:"period_start"` // the month's start
	PeriodEnd   string `json:"period_end"`   // the month's end, or now for the current month
	UsageFigures
	// Namespaces and Bill are set for an organization's usage only.
	Namespaces []NamespaceUsageRecord `json:"namespaces,omitempty"`
	Bill       *BillRecord            `json:"bill,omitempty"`
	// Days is set when granularity=day is asked for: one entry for each
	// day of the month up to the period's end (today, for the current
	// month), adding up to the month's figures.
	Days []UsageDayRecord `json:"days,omitzero"`
}

// UsageDayRecord is one calendar day's (UTC) share of a month's usage.
type UsageDayRecord struct {
	Date               string `json:"date"` // YYYY-MM-DD
	Reads              int64  `json:"reads"`
	Writes             int64  `json:"writes"`
	Deletes            int64  `json:"deletes"`
	Lists              int64  `json:"lists"`
	StorageByteSeconds string `json:"storage_byte_seconds"` // stored bytes integrated over the day, up to now for today
	StoredBytes        int64  `json:"stored_bytes"`         // at the day's end, or now for today
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

// NamespaceUsageRecord is one namespace's share of an organization's usage.
type NamespaceUsageRecord struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"` // empty once the namespace is gone
	UsageFigures
}

// BillRecord is a month's bill, line by line; amounts are dollars ("12.34").
type BillRecord struct {
	Currency string           `json:"currency"`
	Lines    []BillLineRecord `json:"lines"`
	Total    string           `json:"total"`
}

// BillLineRecord is one resource's charge: Billable = Quantity - Free (at
// least 0), Amount = Billable × UnitPrice / PerUnits, rounded to the cent.
type BillLineRecord struct {
	Resource  string `json:"resource"`
	Unit      string `json:"unit"`
	Quantity  string `json:"quantity"`
	Free      string `json:"free"`
	Billable  string `json:"billable"`
	UnitPrice string `json:"unit_price"`
	PerUnits  int64  `json:"per_units"`
	Amount    string `json:"amount"`
}

// KeyListRecord is a page of a key listing on the wire.
type KeyListRecord struct {
	RecordType string      `json:"record_type"` // "storage_kv_key"
	Data       []KeyRecord `json:"data"`
	Meta       KeyListMeta `json:"meta"`
}

// KeyRecord is one key of a listing.
type KeyRecord struct {
	Key       string `json:"key"`
	SizeBytes int64  `json:"size_bytes"`
	UpdatedAt string `json:"updated_at"` // KeyTimeFormat
	ETag      string `json:"etag"`
}

// KeyListMeta says whether more keys follow, and from where.
type KeyListMeta struct {
	HasMore bool   `json:"has_more"`
	Cursor  string `json:"cursor,omitempty"` // present exactly when HasMore
}

// ErrorEnvelope is the body of every error answer:
//
//	{"errors": [{"code": "10015", "title": "Invalid key", "detail": "…", "source": {"pointer": "/key"}, "meta": {"url": "…"}}]}
type ErrorEnvelope struct {
	Errors []ErrorObject `json:"errors"`
}

// ErrorObject is one error of an envelope.
type ErrorObject struct {
	Code   string       `json:"code"`
	Title  string       `json:"title"`
	Detail string       `json:"detail"`
	Source *ErrorSource `json:"source,omitempty"`
	Meta   ErrorMeta    `json:"meta"`
}

// ErrorSource locates the fault in the request.
type ErrorSource struct {
	Pointer   string `json:"pointer,omitempty"`
	Parameter string `json:"parameter,omitempty"`
}

// ErrorMeta links to the code's documentation.
type ErrorMeta struct {
	URL string `json:"url"`
	// OldestRevision: see Error.OldestRevision.
	OldestRevision *uint64 `json:"oldest_revision,omitempty"`
}

// ErrorDocs is where each error code is explained.
const ErrorDocs = "https://developers.telnyx.com/docs/overview/errors/"

// Envelope returns e as the API sends it.
func (e *Error) Envelope() ErrorEnvelope {
	obj := ErrorObject{Code: string(e.Code), Title: e.Title, Detail: e.Detail, Meta: ErrorMeta{URL: ErrorDocs + string(e.Code)}}
	if obj.Title == "" {
		obj.Title = e.Code.Title()
	}
	if e.Pointer != "" || e.Parameter != "" {
		obj.Source = &ErrorSource{Pointer: e.Pointer, Parameter: e.Parameter}
	}
	if e.Code == EHistoryGone {
		oldest := e.OldestRevision
		obj.Meta.OldestRevision = &oldest
	}
	return ErrorEnvelope{Errors: []ErrorObject{obj}}
}

// ShouldRetry is the x-should-retry hint of an error answer with this
// status and code: true on 429 and 503, and on a 409 that says the
// namespace is not ready yet; false otherwise.
func ShouldRetry(status int, e *Error) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true
	case http.StatusConflict:
		return e != nil && e.notReady
	}
	return false
}

package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/edgekv/kv"
)

// namespacesPath is the root of every API route.
const namespacesPath = "/v2/storage/kvs"

// NamespacePage is one page of a namespace listing.
type NamespacePage struct {
	Namespaces   []kv.Namespace
	PageNumber   int
	PageSize     int
	TotalPages   int
	TotalResults int
}

// CreateNamespace creates a namespace named name (lowercase letters, digits
// and hyphens). The namespace starts "pending"; WaitReady waits until it can
// hold keys. A name already used in the organization gives kv.ErrConflict.
// Creation is not idempotent and is never retried.
func (c *Client) CreateNamespace(ctx context.Context, name string) (kv.Namespace, error) {
	body, err := json.Marshal(map[string]string{"name": name})
	if err != nil {
		return kv.Namespace{}, err
	}
	return c.namespaceCall(ctx, request{
		method: http.MethodPost,
		path:   namespacesPath,
		header: http.Header{"Content-Type": {"application/json"}},
		body:   func() (io.Reader, error) { return bytes.NewReader(body), nil },
		size:   int64(len(body)),
	})
}

// GetNamespace returns the namespace with the given id; a namespace that
// does not exist or belongs to another organization gives kv.ErrNotFound.
func (c *Client) GetNamespace(ctx context.Context, id string) (kv.Namespace, error) {
	return c.namespaceCall(ctx, request{method: http.MethodGet, path: namespacePath(id), retry: true})
}

// DeleteNamespace starts the deletion of a namespace and its keys and
// returns it with status "deleting"; once deletion completes the namespace
// answers kv.ErrNotFound. A namespace already being deleted gives
// kv.ErrConflict.
func (c *Client) DeleteNamespace(ctx context.Context, id string) (kv.Namespace, error) {
	return c.namespaceCall(ctx, request{method: http.MethodDelete, path: namespacePath(id), retry: true})
}

func (c *Client) namespaceCall(ctx context.Context, r request) (kv.Namespace, error) {
	var out kv.NamespaceEnvelope
	if err := c.doJSON(ctx, r, &out); err != nil {
		return kv.Namespace{}, err
	}
	return fromRecord(out.Data)
}

// ListNamespaces returns one page of the organization's namespaces, oldest
// first. page counts from 1; size is 1 to 250 (0 selects the server's
// default of 20).
func (c *Client) ListNamespaces(ctx context.Context, page, size int) (NamespacePage, error) {
	q := url.Values{}
	if page > 0 {
		q.Set("page[number]", strconv.Itoa(page))
	}
	if size > 0 {
		q.Set("page[size]", strconv.Itoa(size))
	}
	var out kv.NamespaceListRecord
	if err := c.doJSON(ctx, request{method: http.MethodGet, path: namespacesPath, query: q.Encode(), retry: true}, &out); err != nil {
		return NamespacePage{}, err
	}
	p := NamespacePage{
		Namespaces:   make([]kv.Namespace, len(out.Data)),
		PageNumber:   out.Meta.PageNumber,
		PageSize:     out.Meta.PageSize,
		TotalPages:   out.Meta.TotalPages,
		TotalResults: out.Meta.TotalResults,
	}
	for i, n := range out.Data {
		ns, err := fromRecord(n)
		if err != nil {
			return NamespacePage{}, err
		}
		p.Namespaces[i] = ns
	}
	return p, nil
}

// Namespaces iterates over all of the organization's namespaces, page by
// page. An error ends the iteration after being yielded once; a service
// that serves a page again gives an error matching ErrBadCursor. A namespace
// created or deleted during the walk may be missed or seen twice, as page
// boundaries shift.
func (c *Client) Namespaces(ctx context.Context) iter.Seq2[kv.Namespace, error] {
	return func(yield func(kv.Namespace, error) bool) {
		// A page is known by its first id: a service that serves the same
		// pages again and again (and claims ever more) ends the walk.
		guard := newCursorGuard("")
		guard.what = "page"
		for page := 1; ; page++ {
			p, err := c.ListNamespaces(ctx, page, kv.MaxPageSize)
			if err == nil && len(p.Namespaces) > 0 {
				err = guard.next(true, p.Namespaces[0].ID.String())
			}
			if err != nil {
				yield(kv.Namespace{}, err)
				return
			}
			for _, ns := range p.Namespaces {
				if !yield(ns, nil) {
					return
				}
			}
			if len(p.Namespaces) == 0 || page >= p.TotalPages {
				return
			}
		}
	}
}

// StatusError reports a namespace that reached a status from which it will
// not become ready (provision_failed, deleting, delete_failed).
type StatusError struct {
	Namespace kv.Namespace
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("client: namespace %s (%s) has status %s and will not become ready", e.Namespace.Name, e.Namespace.ID, e.Namespace.Status)
}

// WaitReady polls the namespace, with backoff from 25ms up to 1s, until its
// status is provision_ok and returns it. It returns a *StatusError if the
// namespace reaches provision_failed, deleting or delete_failed, the API
// error if a poll fails, and an error matching the context's when ctx ends
// first (with the last status seen).
//
// WaitReady waits as long as ctx allows: a service that keeps answering
// "pending" keeps it polling. Give ctx a deadline to bound the wait.
func (c *Client) WaitReady(ctx context.Context, id string) (kv.Namespace, error) {
	return c.WaitReadyFunc(ctx, id, nil)
}

// WaitReadyFunc is WaitReady calling seen, if not nil, with the namespace
// after each poll, so a caller can show the wait's progress.
func (c *Client) WaitReadyFunc(ctx context.Context, id string, seen func(kv.Namespace)) (kv.Namespace, error) {
	delay := 25 * time.Millisecond
	var last kv.Namespace
	for {
		ns, err := c.GetNamespace(ctx, id)
		if err != nil {
			if ctx.Err() != nil && !last.ID.IsZero() {
				return last, &WaitError{Namespace: last, Err: err}
			}
			return last, err
		}
		last = ns
		if seen != nil {
			seen(ns)
		}
		switch ns.Status {
		case kv.StatusProvisionOK:
			return ns, nil
		case kv.StatusProvisionFailed, kv.StatusDeleting, kv.StatusDeleteFailed:
			return ns, &StatusError{Namespace: ns}
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return ns, &WaitError{Namespace: ns, Err: err}
		}
		delay = min(delay*2, time.Second)
	}
}

// WaitError is the error of a WaitReady whose context ended while the
// namespace was not yet ready. It matches the context's error.
type WaitError struct {
	Namespace kv.Namespace // as last seen
	Err       error
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("client: namespace %s is still %s: %v", e.Namespace.ID, e.Namespace.Status, e.Err)
}

func (e *WaitError) Unwrap() error { return e.Err }

// doJSON performs r and decodes a JSON response body into out.
func (c *Client) doJSON(ctx context.Context, r request, out any) error {
	if r.header == nil {
		r.header = http.Header{}
	}
	r.header.Set("Accept", "application/json")
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer drain(resp)
	limit := int64(r.limit)
	if limit == 0 {
		limit = MaxJSONResponse
	}
	body, err := readLimited(resp, limit, fmt.Sprintf("the response to %s %s", r.method, r.path))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("client: decoding the response to %s %s: %w", r.method, r.path, err)
	}
	return nil
}

func namespacePath(id string) string {
	return namespacesPath + "/" + url.PathEscape(id)
}

// fromRecord is the namespace a record of the service describes; one whose
// id is not a UUID is refused, as anything else a hostile server sends that
// a caller might act on.
func fromRecord(r kv.NamespaceRecord) (kv.Namespace, error) {
	ns, err := r.Namespace()
	if err != nil {
		return kv.Namespace{}, fmt.Errorf("client: %w", err)
	}
	return ns, nil
}

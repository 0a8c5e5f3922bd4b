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
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/edgekv/kv"
)

// Namespace is a handle on the keys of one namespace. It holds no state but
// the id; it is safe for concurrent use. Every method needs the namespace to
// be provision_ok; otherwise the service answers kv.ErrConflict.
type Namespace struct {
	c  *Client
	id string
	// pageLimit is the page size Keys asks for; 0 means the server's
	// maximum.
	pageLimit int
}

// Namespace returns a handle on the keys of the namespace with the given id.
// It makes no request.
func (c *Client) Namespace(id string) *Namespace { return &Namespace{c: c, id: id} }

// ID returns the namespace id.
func (ns *Namespace) ID() string { return ns.id }

// Client returns the client the handle uses.
func (ns *Namespace) Client() *Client { return ns.c }

// bindingName is the form of a func.toml binding name.
var bindingName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// BindingEnv returns the environment variable that carries the namespace id
// of the func.toml binding name: "MY_CACHE" gives "KV_MY_CACHE_ID".
func BindingEnv(name string) string { return "KV_" + name + "_ID" }

// Binding returns a handle on the namespace bound as name in func.toml, whose
// id the function receives in KV_<name>_ID. name is uppercase letters,
// digits and underscores, starting with a letter.
func (c *Client) Binding(name string) (*Namespace, error) {
	if !bindingName.MatchString(name) {
		return nil, fmt.Errorf("client: binding name %q is invalid; it must match ^[A-Z][A-Z0-9_]*$ (e.g. MY_CACHE)", name)
	}
	id := os.Getenv(BindingEnv(name))
	if id == "" {
		return nil, fmt.Errorf("client: %s is not set; is the binding %s in func.toml?", BindingEnv(name), name)
	}
	return c.Namespace(id), nil
}

// Binding is FromEnv followed by Client.Binding: the handle a function uses
// for the func.toml binding name.
func Binding(name string, opts ...Option) (*Namespace, error) {
	c, err := FromEnv(opts...)
	if err != nil {
		return nil, err
	}
	return c.Binding(name)
}

func (ns *Namespace) keyPath(key string) string {
	// The whole key is one escaped segment ("/" becomes %2F); the service
	// decodes the path after /keys/ exactly once.
	return namespacePath(ns.id) + "/keys/" + url.PathEscape(key)
}

// Get returns the value of key and its content type. A missing or expired
// key gives kv.ErrNotFound. The returned slice belongs to the caller. A
// response body over kv.MaxValueSize is an error matching
// ErrResponseTooLarge, read no further.
func (ns *Namespace) Get(ctx context.Context, key string) (value []byte, contentType string, err error) {
	resp, err := ns.c.do(ctx, request{method: http.MethodGet, path: ns.keyPath(key), retry: true})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	value, err = readLimited(resp, valueLimit, valueWhat(key))
	if err != nil {
		return nil, "", err
	}
	return value, resp.Header.Get("Content-Type"), nil
}

// GetTo streams the value of key into w and returns its content type and
// the number of bytes written. A missing key gives kv.ErrNotFound and writes
// nothing. Retries happen only before the first byte is written; a failure
// while streaming is returned as is. A value over kv.MaxValueSize is an
// error matching ErrResponseTooLarge: nothing is written when the response
// says its length up front, and at most kv.MaxValueSize bytes otherwise.
func (ns *Namespace) GetTo(ctx context.Context, key string, w io.Writer) (contentType string, n int64, err error) {
	resp, err := ns.c.do(ctx, request{method: http.MethodGet, path: ns.keyPath(key), retry: true})
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	n, err = copyLimited(w, resp, valueLimit, valueWhat(key))
	if err != nil {
		return "", n, err
	}
	return resp.Header.Get("Content-Type"), n, nil
}

// KeyInfo describes a key, as a listing (List, Pages, Keys) or Info reports
// it.
type KeyInfo struct {
	Key  string
	Size int64 // the value's size in bytes
	// ContentType is the stored Content-Type; Info only.
	ContentType string
	// UpdatedAt is the time of the last write; zero when the service did
	// not say.
	UpdatedAt time.Time
	// ExpiryKnown reports that the service said whether the key expires:
	// ExpiresAt is then its expiry, or zero for a key that never expires.
	// A service that does not report expiry leaves both zero.
	ExpiryKnown bool
	ExpiresAt   time.Time
	// ETag is the key's entity tag, when the service sends one.
	ETag string
}

// Headers of a key's metadata on GET and HEAD (an extension of the hosted
// API): RFC 3339 UTC times with nanoseconds. Absent means unknown, or for
// the expiry, never.
const (
	HeaderUpdatedAt = "Kv-Updated-At"
	HeaderExpiresAt = "Kv-Expires-At"
)

// Info returns what the service says of key without its value, from a HEAD
// request: its size, content type, update and expiry times and ETag, as far
// as the service sends them (see KeyInfo). A missing or expired key gives
// kv.ErrNotFound; since a HEAD answer has no body, the error does not say
// whether the key or the namespace is missing.
func (ns *Namespace) Info(ctx context.Context, key string) (KeyInfo, error) {
	resp, err := ns.c.do(ctx, request{method: http.MethodHead, path: ns.keyPath(key), retry: true})
	if err != nil {
		return KeyInfo{}, err
	}
	drain(resp)
	h := resp.Header
	info := KeyInfo{Key: key, Size: resp.ContentLength, ContentType: h.Get("Content-Type"), ETag: h.Get("ETag")}
	if info.Size < 0 {
		info.Size, _ = strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(HeaderUpdatedAt)); err == nil {
		info.UpdatedAt = t
	}
	if v := h.Get(HeaderExpiresAt); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return KeyInfo{}, fmt.Errorf("client: the service sent %s %.64q, which is not an RFC 3339 time", HeaderExpiresAt, v)
		}
		info.ExpiryKnown, info.ExpiresAt = true, t
	} else if !info.UpdatedAt.IsZero() {
		// A service that reports update times reports expiry too: none
		// means the key never expires.
		info.ExpiryKnown = true
	}
	return info, nil
}

// PutOptions are the optional parts of a write. The zero value writes a
// permanent key with no Content-Type (stored as application/octet-stream).
type PutOptions struct {
	// TTL makes the key expire TTL after the write: whole seconds, at least
	// one second; 0 means never (and makes an expiring key permanent again).
	TTL time.Duration
	// ContentType is stored with the value and returned by Get.
	ContentType string
	// IfMatch makes the write conditional (If-Match): it happens only if
	// the key exists and its current ETag is this one (as Get, Info or a
	// write returned it; a list "e1", "e2" names several), or, for "*", if
	// the key exists at all. Otherwise nothing is written and the error
	// matches ErrPreconditionFailed, its *APIError carrying the current
	// ETag. A service without conditional requests (the hosted service)
	// ignores it: see PutResult.ETag.
	IfMatch string
	// IfAbsent makes the write happen only if the key does not exist
	// (If-None-Match: *); otherwise the error matches
	// ErrPreconditionFailed. It cannot be combined with IfMatch.
	IfAbsent bool
}

// ttlSeconds validates a TTL and returns its whole seconds (0 for none).
func ttlSeconds(ttl time.Duration) (int64, error) {
	switch {
	case ttl == 0:
		return 0, nil
	case ttl < time.Second:
		return 0, kv.Errorf(kv.EUnprocessable, "ttl is %v; it must be at least 1s", ttl).WithParam("ttl_secs")
	case ttl%time.Second != 0:
		return 0, kv.Errorf(kv.EUnprocessable, "ttl is %v; it must be whole seconds", ttl).WithParam("ttl_secs")
	}
	return int64(ttl / time.Second), nil
}

func (ns *Namespace) putRequest(key string, opts *PutOptions) (request, error) {
	r := request{method: http.MethodPut, path: ns.keyPath(key), header: http.Header{}}
	if opts == nil {
		return r, nil
	}
	secs, err := ttlSeconds(opts.TTL)
	if err != nil {
		return r, err
	}
	if secs > 0 {
		r.query = "ttl_secs=" + strconv.FormatInt(secs, 10)
	}
	if opts.ContentType != "" {
		r.header.Set("Content-Type", opts.ContentType)
	}
	if err := conditionHeaders(r.header, opts.IfMatch, opts.IfAbsent); err != nil {
		return r, err
	}
	// A conditional write sent twice fails the second time (the key's
	// ETag has changed): it must not be replayed blindly.
	r.unsafe = opts.IfMatch != "" || opts.IfAbsent
	return r, nil
}

// Put stores value under key, verbatim, and reports whether the key was
// created (true) or replaced (false). opts may be nil. A value over 1 MiB
// gives kv.ErrTooLarge; an invalid key kv.ErrInvalid. Put is idempotent
// and retried; after a retry "created" describes the last attempt, so a
// write whose first attempt landed unseen reports false. A conditional
// write (opts.IfMatch, opts.IfAbsent) that fails its precondition gives
// ErrPreconditionFailed, and is retried only when it cannot have been
// applied (see ErrMaybeApplied). PutWithResult also returns the new ETag.
func (ns *Namespace) Put(ctx context.Context, key string, value []byte, opts *PutOptions) (created bool, err error) {
	r, err := ns.putRequest(key, opts)
	if err != nil {
		return false, err
	}
	r.body = func() (io.Reader, error) { return bytes.NewReader(value), nil }
	r.size = int64(len(value))
	r.retry = true
	res, err := ns.finishPut(ctx, r)
	return res.Created, err
}

// PutFrom stores the bytes of body under key, streaming them, and reports
// whether the key was created. size is the body's length, or -1 if unknown
// (the body is then sent chunked). opts may be nil.
//
// Retries: if body is an io.Seeker whose Seek works (a regular *os.File, a
// *bytes.Reader, ...), each retry seeks back to the position body had when
// PutFrom was called and sends again. Any other reader is sent once and not
// retried, since its bytes cannot be replayed; buffer it and call Put to get
// retries.
func (ns *Namespace) PutFrom(ctx context.Context, key string, body io.Reader, size int64, opts *PutOptions) (created bool, err error) {
	res, err := ns.PutFromWithResult(ctx, key, body, size, opts)
	return res.Created, err
}

// PutFromWithResult is PutFrom, returning what the service answered:
// whether the key was created and its new ETag.
func (ns *Namespace) PutFromWithResult(ctx context.Context, key string, body io.Reader, size int64, opts *PutOptions) (PutResult, error) {
	r, err := ns.putRequest(key, opts)
	if err != nil {
		return PutResult{}, err
	}
	if size < 0 {
		size = -1
	}
	r.size = size
	if s, ok := body.(io.Seeker); ok {
		if start, err := s.Seek(0, io.SeekCurrent); err == nil {
			r.retry = true
			r.body = func() (io.Reader, error) {
				if _, err := s.Seek(start, io.SeekStart); err != nil {
					return nil, fmt.Errorf("client: rewinding the value for a retry: %w", err)
				}
				return onlyReader{body}, nil
			}
			return ns.finishPut(ctx, r)
		}
	}
	used := false
	r.body = func() (io.Reader, error) {
		if used {
			return nil, errBodyNotReplayable
		}
		used = true
		return onlyReader{body}, nil
	}
	return ns.finishPut(ctx, r)
}

// onlyReader hides every method but Read, so net/http neither closes the
// caller's reader nor guesses its length.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func (ns *Namespace) finishPut(ctx context.Context, r request) (PutResult, error) {
	resp, err := ns.c.do(ctx, r)
	if err != nil {
		return PutResult{}, err
	}
	drain(resp)
	return PutResult{Written: true, Created: resp.StatusCode == http.StatusCreated, ETag: resp.Header.Get("ETag")}, nil
}

// Delete removes key. Deleting a missing key succeeds.
func (ns *Namespace) Delete(ctx context.Context, key string) error {
	return ns.DeleteWithOptions(ctx, key, nil)
}

// KeyPage is one page of a key listing.
type KeyPage struct {
	Keys []KeyInfo
	// HasMore reports that more keys follow; Cursor fetches them.
	HasMore bool
	Cursor  string
}

// keyRecord is one key of a listing, with the fields a newer service adds.
type keyRecord struct {
	Key       string          `json:"key"`
	SizeBytes int64           `json:"size_bytes"`
	UpdatedAt string          `json:"updated_at"`
	ExpiresAt json.RawMessage `json:"expires_at"` // absent, null or a time
	ETag      string          `json:"etag"`
}

// List returns one page of the keys starting with prefix, in byte order,
// after cursor ("" for the first page). limit is 1 to 1000; 0 selects the
// server's default of 1000.
func (ns *Namespace) List(ctx context.Context, prefix, cursor string, limit int) (KeyPage, error) {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Data []keyRecord    `json:"data"`
		Meta kv.KeyListMeta `json:"meta"`
	}
	r := request{method: http.MethodGet, path: namespacePath(ns.id) + "/keys", query: q.Encode(), retry: true}
	if err := ns.c.doJSON(ctx, r, &out); err != nil {
		return KeyPage{}, err
	}
	p := KeyPage{Keys: make([]KeyInfo, len(out.Data)), HasMore: out.Meta.HasMore, Cursor: out.Meta.Cursor}
	for i, k := range out.Data {
		t, _ := time.Parse(time.RFC3339Nano, k.UpdatedAt)
		info := KeyInfo{Key: k.Key, Size: k.SizeBytes, UpdatedAt: t, ETag: k.ETag}
		if len(k.ExpiresAt) > 0 {
			var at *string
			if err := json.Unmarshal(k.ExpiresAt, &at); err != nil {
				return KeyPage{}, fmt.Errorf("client: key %.64q of the listing has expires_at %.64s, which is not a time or null", k.Key, k.ExpiresAt)
			}
			info.ExpiryKnown = true
			if at != nil {
				var err error
				if info.ExpiresAt, err = time.Parse(time.RFC3339Nano, *at); err != nil {
					return KeyPage{}, fmt.Errorf("client: key %.64q of the listing has expires_at %.64q, which is not an RFC 3339 time", k.Key, *at)
				}
			}
		}
		p.Keys[i] = info
	}
	return p, nil
}

// Pages iterates over the pages of the keys starting with prefix, from
// cursor ("" for the first) on, following cursors; limit is as for List.
// An error ends the iteration after being yielded once; a page that says
// more keys follow without a new cursor gives an error matching
// ErrBadCursor, so the walk always ends.
func (ns *Namespace) Pages(ctx context.Context, prefix, cursor string, limit int) iter.Seq2[KeyPage, error] {
	return func(yield func(KeyPage, error) bool) {
		guard := newCursorGuard(cursor)
		for {
			p, err := ns.List(ctx, prefix, cursor, limit)
			if err == nil {
				err = guard.next(p.HasMore, p.Cursor)
			}
			if err != nil {
				yield(KeyPage{}, err)
				return
			}
			if !yield(p, nil) || !p.HasMore {
				return
			}
			cursor = p.Cursor
		}
	}
}

// Keys iterates over every key starting with prefix, in byte order,
// following cursors. A key that exists throughout the walk is seen exactly
// once. An error ends the iteration after being yielded once; a service
// that repeats a cursor gives an error matching ErrBadCursor.
func (ns *Namespace) Keys(ctx context.Context, prefix string) iter.Seq2[KeyInfo, error] {
	return func(yield func(KeyInfo, error) bool) {
		for p, err := range ns.Pages(ctx, prefix, "", ns.pageLimit) {
			if err != nil {
				yield(KeyInfo{}, err)
				return
			}
			for _, k := range p.Keys {
				if !yield(k, nil) {
					return
				}
			}
		}
	}
}

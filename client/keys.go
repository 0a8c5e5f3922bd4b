package client

import (
	"bytes"
	"context"
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
// key gives kv.ErrNotFound. The returned slice belongs to the caller.
func (ns *Namespace) Get(ctx context.Context, key string) (value []byte, contentType string, err error) {
	resp, err := ns.c.do(ctx, request{method: http.MethodGet, path: ns.keyPath(key), retry: true})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	value, err = io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("client: reading the value of %q: %w", key, err)
	}
	return value, resp.Header.Get("Content-Type"), nil
}

// GetTo streams the value of key into w and returns its content type and
// the number of bytes written. A missing key gives kv.ErrNotFound and writes
// nothing. Retries happen only before the first byte is written; a failure
// while streaming is returned as is.
func (ns *Namespace) GetTo(ctx context.Context, key string, w io.Writer) (contentType string, n int64, err error) {
	resp, err := ns.c.do(ctx, request{method: http.MethodGet, path: ns.keyPath(key), retry: true})
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	n, err = io.Copy(w, resp.Body)
	if err != nil {
		return "", n, fmt.Errorf("client: streaming the value of %q: %w", key, err)
	}
	return resp.Header.Get("Content-Type"), n, nil
}

// PutOptions are the optional parts of a write. The zero value writes a
// permanent key with no Content-Type (stored as application/octet-stream).
type PutOptions struct {
	// TTL makes the key expire TTL after the write: whole seconds, at least
	// one second; 0 means never (and makes an expiring key permanent again).
	TTL time.Duration
	// ContentType is stored with the value and returned by Get.
	ContentType string
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
	return r, nil
}

// Put stores value under key, verbatim, and reports whether the key was
// created (true) or replaced (false). opts may be nil. A value over 1 MiB
// gives kv.ErrTooLarge; an invalid key kv.ErrInvalid. Put is idempotent
// and retried; after a retry "created" describes the last attempt, so a
// write whose first attempt landed unseen reports false.
func (ns *Namespace) Put(ctx context.Context, key string, value []byte, opts *PutOptions) (created bool, err error) {
	r, err := ns.putRequest(key, opts)
	if err != nil {
		return false, err
	}
	r.body = func() (io.Reader, error) { return bytes.NewReader(value), nil }
	r.size = int64(len(value))
	r.retry = true
	return ns.finishPut(ctx, r)
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
	r, err := ns.putRequest(key, opts)
	if err != nil {
		return false, err
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

func (ns *Namespace) finishPut(ctx context.Context, r request) (bool, error) {
	resp, err := ns.c.do(ctx, r)
	if err != nil {
		return false, err
	}
	drain(resp)
	return resp.StatusCode == http.StatusCreated, nil
}

// Delete removes key. Deleting a missing key succeeds.
func (ns *Namespace) Delete(ctx context.Context, key string) error {
	resp, err := ns.c.do(ctx, request{method: http.MethodDelete, path: ns.keyPath(key), retry: true})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// KeyPage is one page of a key listing.
type KeyPage struct {
	Keys []kv.KeyInfo
	// HasMore reports that more keys follow; Cursor fetches them.
	HasMore bool
	Cursor  string
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
	var out kv.KeyListRecord
	r := request{method: http.MethodGet, path: namespacePath(ns.id) + "/keys", query: q.Encode(), retry: true}
	if err := ns.c.doJSON(ctx, r, &out); err != nil {
		return KeyPage{}, err
	}
	p := KeyPage{Keys: make([]kv.KeyInfo, len(out.Data)), HasMore: out.Meta.HasMore, Cursor: out.Meta.Cursor}
	for i, k := range out.Data {
		t, _ := time.Parse(time.RFC3339Nano, k.UpdatedAt)
		p.Keys[i] = kv.KeyInfo{Key: k.Key, Size: k.SizeBytes, UpdatedAt: t}
	}
	return p, nil
}

// Keys iterates over every key starting with prefix, in byte order,
// following cursors. A key that exists throughout the walk is seen exactly
// once. An error ends the iteration after being yielded once.
func (ns *Namespace) Keys(ctx context.Context, prefix string) iter.Seq2[kv.KeyInfo, error] {
	return func(yield func(kv.KeyInfo, error) bool) {
		cursor := ""
		for {
			p, err := ns.List(ctx, prefix, cursor, ns.pageLimit)
			if err != nil {
				yield(kv.KeyInfo{}, err)
				return
			}
			for _, k := range p.Keys {
				if !yield(k, nil) {
					return
				}
			}
			if !p.HasMore || p.Cursor == "" {
				return
			}
			cursor = p.Cursor
		}
	}
}

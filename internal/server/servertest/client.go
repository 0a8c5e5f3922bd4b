// Package servertest is the black-box test suite of the whole server: it
// drives a real kvd over real HTTP and raw TCP, and runs against every
// storage engine.
package servertest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
)

// StartFunc starts a kvd for a test on a fresh, empty store of the engine
// under test.
type StartFunc func(t *testing.T, opts ...kvdtest.Option) *kvdtest.Server

// client sends raw requests; paths are sent exactly as given (escaped form).
type client struct {
	t     testing.TB
	base  string
	token string
	http  *http.Client
}

func newClient(t testing.TB, s *kvdtest.Server, token string) *client {
	return &client{t: t, base: s.URL, token: token, http: &http.Client{
		Timeout: 30 * time.Second,
		// A redirect would be a bug: show it instead of following it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends method to the escaped path with body and extra headers.
func (c *client) do(method, path string, body []byte, hdr ...string) response {
	c.t.Helper()
	u, err := url.Parse(c.base + path)
	if err != nil {
		c.t.Fatalf("bad test path %q: %v", path, err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u.String(), rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.URL = u
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// errorOf decodes an error envelope, failing the test if it is not one.
func errorOf(t testing.TB, r response) (code, detail string) {
	t.Helper()
	var env struct {
		Errors []struct {
			Code   string `json:"code"`
			Title  string `json:"title"`
			Detail string `json:"detail"`
			Meta   struct {
				URL string `json:"url"`
			} `json:"meta"`
		} `json:"errors"`
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error response Content-Type = %q, want application/json; body %s", ct, r.body)
	}
	if err := json.Unmarshal(r.body, &env); err != nil || len(env.Errors) != 1 {
		t.Fatalf("not an error envelope (status %d): %s", r.status, r.body)
	}
	e := env.Errors[0]
	if e.Code == "" || e.Title == "" || e.Detail == "" || !strings.HasSuffix(e.Meta.URL, e.Code) {
		t.Fatalf("incomplete error object: %s", r.body)
	}
	return e.Code, e.Detail
}

// wantError checks status, code and (if non-empty) a detail substring.
func wantError(t testing.TB, r response, status int, code kv.ErrorCode, detail string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	c, d := errorOf(t, r)
	if c != string(code) {
		t.Fatalf("code = %s, want %s; body %s", c, code, r.body)
	}
	if detail != "" && !strings.Contains(d, detail) {
		t.Fatalf("detail = %q, want it to contain %q", d, detail)
	}
}

func wantStatus(t testing.TB, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
}

type nsJSON struct {
	RecordType string `json:"record_type"`
	ID         string `json:"id"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	CreatedAt  string `json:"created_at"`
	UpdatedAt  string `json:"updated_at"`
}

func decodeNS(t testing.TB, r response) nsJSON {
	t.Helper()
	var env struct {
		Data nsJSON `json:"data"`
	}
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("decode namespace: %v: %s", err, r.body)
	}
	return env.Data
}

func (c *client) createNS(name string) nsJSON {
	c.t.Helper()
	r := c.do("POST", "/v2/storage/kvs", []byte(`{"name":"`+name+`"}`), "Content-Type", "application/json")
	wantStatus(c.t, r, http.StatusCreated)
	return decodeNS(c.t, r)
}

// waitStatus polls a namespace until it has status, for up to 10 seconds.
func (c *client) waitStatus(id, status string) nsJSON {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := c.do("GET", "/v2/storage/kvs/"+id, nil)
		if r.status == http.StatusOK {
			if ns := decodeNS(c.t, r); ns.Status == status {
				return ns
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("namespace %s did not reach %s; last: %d %s", id, status, r.status, r.body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitGone polls until the namespace answers 404.
func (c *client) waitGone(id string) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := c.do("GET", "/v2/storage/kvs/"+id, nil)
		if r.status == http.StatusNotFound {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("namespace %s was not removed; last: %d %s", id, r.status, r.body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readyNS creates a namespace and waits for provision_ok.
func (c *client) readyNS(name string) string {
	c.t.Helper()
	ns := c.createNS(name)
	c.waitStatus(ns.ID, "provision_ok")
	return ns.ID
}

type keyListJSON struct {
	RecordType string `json:"record_type"`
	Data       []struct {
		Key       string `json:"key"`
		SizeBytes int64  `json:"size_bytes"`
		UpdatedAt string `json:"updated_at"`
	} `json:"data"`
	Meta struct {
		HasMore bool    `json:"has_more"`
		Cursor  *string `json:"cursor"`
	} `json:"meta"`
}

func decodeKeys(t testing.TB, r response) keyListJSON {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	var l keyListJSON
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("decode key list: %v: %s", err, r.body)
	}
	if l.RecordType != "storage_kv_key" {
		t.Fatalf("record_type = %q", l.RecordType)
	}
	if l.Meta.HasMore != (l.Meta.Cursor != nil) {
		t.Fatalf("cursor must be present exactly when has_more: %s", r.body)
	}
	return l
}

// walk lists every key with prefix following cursors, limit per page.
func (c *client) walk(id, prefix string, limit int) []string {
	c.t.Helper()
	var keys []string
	cursor := ""
	for pages := 0; ; pages++ {
		q := url.Values{"prefix": {prefix}, "limit": {itoa(limit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		l := decodeKeys(c.t, c.do("GET", "/v2/storage/kvs/"+id+"/keys?"+q.Encode(), nil))
		if len(l.Data) > limit {
			c.t.Fatalf("page has %d keys, limit %d", len(l.Data), limit)
		}
		for _, k := range l.Data {
			keys = append(keys, k.Key)
		}
		if !l.Meta.HasMore {
			return keys
		}
		cursor = *l.Meta.Cursor
		if pages > 100000 {
			c.t.Fatal("listing does not end")
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
)

// newClient starts a kvd and returns a client of its default organization.
func newClient(t *testing.T, opts ...client.Option) (*client.Client, *kvdtest.Server) {
	t.Helper()
	srv := kvdtest.Start(t)
	c := client.New(append([]client.Option{client.WithBaseURL(srv.URL), client.WithAPIKey(srv.Token)}, opts...)...)
	return c, srv
}

// readyNamespace creates a namespace and waits until it holds keys.
func readyNamespace(t *testing.T, c *client.Client, name string) *client.Namespace {
	t.Helper()
	ctx := context.Background()
	ns, err := c.CreateNamespace(ctx, name)
	if err != nil {
		t.Fatalf("CreateNamespace(%q): %v", name, err)
	}
	if _, err := c.WaitReady(ctx, ns.ID.String()); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return c.Namespace(ns.ID.String())
}

func TestNamespaceLifecycle(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()

	ns, err := c.CreateNamespace(ctx, "my-cache")
	if err != nil {
		t.Fatal(err)
	}
	if ns.Name != "my-cache" || ns.Status != kv.StatusPending || ns.CreatedAt.IsZero() {
		t.Fatalf("created namespace = %+v; want name my-cache, status pending, a creation time", ns)
	}
	if ns.ID.IsZero() {
		t.Fatalf("created namespace %+v has no id", ns)
	}

	_, err = c.CreateNamespace(ctx, "my-cache")
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || !errors.Is(err, kv.ErrConflict) || apiErr.StatusCode != 409 || apiErr.Code != kv.EConflict {
		t.Fatalf("duplicate create: err = %v; want an *APIError 409 matching kv.ErrConflict", err)
	}
	if apiErr.Detail == "" || apiErr.RequestID == "" {
		t.Errorf("duplicate create: APIError %+v lacks a detail or request id", apiErr)
	}

	_, err = c.CreateNamespace(ctx, "Bad_Name")
	if !errors.Is(err, kv.ErrInvalid) || !errors.As(err, &apiErr) || apiErr.Pointer != "/name" {
		t.Fatalf("invalid name: err = %v (%+v); want kv.ErrInvalid with pointer /name", err, apiErr)
	}

	ready, err := c.WaitReady(ctx, ns.ID.String())
	if err != nil || ready.Status != kv.StatusProvisionOK {
		t.Fatalf("WaitReady = %+v, %v; want provision_ok", ready, err)
	}
	got, err := c.GetNamespace(ctx, ns.ID.String())
	if err != nil || got.ID != ns.ID || got.Name != "my-cache" {
		t.Fatalf("GetNamespace = %+v, %v", got, err)
	}

	for _, name := range []string{"second", "third"} {
		// Namespaces list oldest first by created_at (in milliseconds),
		// then by id: let the clock tick so that the order is by creation.
		time.Sleep(2 * time.Millisecond)
		if _, err := c.CreateNamespace(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.ListNamespaces(ctx, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if page.PageNumber != 2 || page.PageSize != 1 || page.TotalPages != 3 || page.TotalResults != 3 || len(page.Namespaces) != 1 || page.Namespaces[0].Name != "second" {
		t.Fatalf("ListNamespaces(2, 1) = %+v; want page 2 of 3 holding \"second\"", page)
	}
	var names []string
	for ns, err := range c.Namespaces(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, ns.Name)
	}
	if want := []string{"my-cache", "second", "third"}; !slices.Equal(names, want) {
		t.Fatalf("Namespaces = %v; want %v", names, want)
	}

	deleted, err := c.DeleteNamespace(ctx, ns.ID.String())
	if err != nil || deleted.Status != kv.StatusDeleting {
		t.Fatalf("DeleteNamespace = %+v, %v; want status deleting", deleted, err)
	}
	if _, err := c.WaitReady(ctx, ns.ID.String()); !errors.Is(err, kv.ErrNotFound) {
		var se *client.StatusError
		if !errors.As(err, &se) || se.Namespace.Status != kv.StatusDeleting {
			t.Fatalf("WaitReady on a deleted namespace: err = %v; want a StatusError (deleting) or not found", err)
		}
	}
	// Deletion completes in the background; poll until the namespace is gone.
	deadline, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := c.GetNamespace(deadline, ns.ID.String())
		if errors.Is(err, client.ErrNotFound) {
			break
		}
		if deadline.Err() != nil {
			t.Fatalf("namespace still present after deletion: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOtherOrganizationSeesNotFound(t *testing.T) {
	c, srv := newClient(t)
	ns := readyNamespace(t, c, "private")
	other := client.New(client.WithBaseURL(srv.URL), client.WithAPIKey(srv.NewToken(t, "other-org")))
	if _, err := other.GetNamespace(context.Background(), ns.ID()); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("other organization's GetNamespace: err = %v; want kv.ErrNotFound", err)
	}
	if _, _, err := other.Namespace(ns.ID()).Get(context.Background(), "k"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("other organization's Get: err = %v; want kv.ErrNotFound", err)
	}
	bad := client.New(client.WithBaseURL(srv.URL), client.WithAPIKey("wrong"))
	_, err := bad.ListNamespaces(context.Background(), 1, 1)
	var apiErr *client.APIError
	if !errors.Is(err, client.ErrUnauthorized) || !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
		t.Fatalf("unknown token: err = %v; want 401 kv.ErrUnauthorized", err)
	}
}

func TestKeys(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	ns := readyNamespace(t, c, "keys")

	created, err := ns.Put(ctx, "user/123", []byte(`{"name":"Alice 👋"}`), nil)
	if err != nil || !created {
		t.Fatalf("first Put = %v, %v; want created", created, err)
	}
	created, err = ns.Put(ctx, "user/123", []byte(`{"name":"Bob"}`), &client.PutOptions{ContentType: "application/json"})
	if err != nil || created {
		t.Fatalf("second Put = %v, %v; want replaced", created, err)
	}
	value, ct, err := ns.Get(ctx, "user/123")
	if err != nil || string(value) != `{"name":"Bob"}` || ct != "application/json" {
		t.Fatalf("Get = %q, %q, %v", value, ct, err)
	}

	// Keys that path cleaning would merge are distinct, and each survives
	// the trip through the URL.
	special := []string{"a//b", "./x", "a/../b", "trailing/", "a/b", "x=y.z", "-"}
	for i, k := range special {
		if _, err := ns.Put(ctx, k, []byte{byte(i)}, nil); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	for i, k := range special {
		v, ct, err := ns.Get(ctx, k)
		if err != nil || !bytes.Equal(v, []byte{byte(i)}) || ct != kv.DefaultContentType {
			t.Fatalf("Get(%q) = %v, %q, %v; want [%d] %s", k, v, ct, err, i, kv.DefaultContentType)
		}
	}
	var buf bytes.Buffer
	if ct, n, err := ns.GetTo(ctx, "a//b", &buf); err != nil || n != 1 || ct != kv.DefaultContentType || !bytes.Equal(buf.Bytes(), []byte{0}) {
		t.Fatalf("GetTo = %q, %d, %v, %v", ct, n, err, buf.Bytes())
	}

	var listed []string
	for info, err := range ns.Keys(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, info.Key)
	}
	want := append(slices.Clone(special), "user/123")
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("Keys = %q; want %q", listed, want)
	}
	page, err := ns.List(ctx, "a/", "", 1)
	if err != nil || len(page.Keys) != 1 || page.Keys[0].Key != "a/../b" || !page.HasMore || page.Cursor == "" {
		t.Fatalf("List(a/, limit 1) = %+v, %v; want a/../b and a cursor", page, err)
	}
	page, err = ns.List(ctx, "a/", page.Cursor, 1)
	if err != nil || len(page.Keys) != 1 || page.Keys[0].Key != "a//b" || page.Keys[0].Size != 1 || page.Keys[0].UpdatedAt.IsZero() {
		t.Fatalf("List(a/, cursor) = %+v, %v; want a//b of size 1", page, err)
	}

	if err := ns.Delete(ctx, "user/123"); err != nil {
		t.Fatal(err)
	}
	if err := ns.Delete(ctx, "user/123"); err != nil {
		t.Fatalf("deleting a missing key: %v; want success", err)
	}
	_, _, err = ns.Get(ctx, "user/123")
	var apiErr *client.APIError
	if !errors.Is(err, kv.ErrNotFound) || !errors.As(err, &apiErr) || apiErr.RawCode != "10005" || apiErr.StatusCode != 404 {
		t.Fatalf("Get of a deleted key: err = %v; want 404 code 10005", err)
	}

	_, err = ns.Put(ctx, "bad:key", []byte("x"), nil)
	if !errors.Is(err, kv.ErrInvalid) || !errors.As(err, &apiErr) || apiErr.Parameter != "key" || !strings.Contains(apiErr.Detail, "':'") {
		t.Fatalf("Put of an invalid key: err = %v; want 400 naming the key and ':'", err)
	}
	var kvErr *kv.Error
	if !errors.As(err, &kvErr) || kvErr.Code != kv.EInvalid {
		t.Fatalf("errors.As(*kv.Error) = %v; want code %s", kvErr, kv.EInvalid)
	}
	_, err = ns.Put(ctx, "big", make([]byte, kv.MaxValueSize+1), nil)
	if !errors.Is(err, kv.ErrTooLarge) {
		t.Fatalf("Put of 1 MiB + 1: err = %v; want kv.ErrTooLarge", err)
	}
	if _, err := ns.Put(ctx, "empty", nil, nil); err != nil {
		t.Fatal(err)
	}
	if v, _, err := ns.Get(ctx, "empty"); err != nil || len(v) != 0 {
		t.Fatalf("Get(empty) = %q, %v", v, err)
	}
}

// nonSeeker hides the Seek of a reader.
type nonSeeker struct{ r io.Reader }

func (n nonSeeker) Read(p []byte) (int, error) { return n.r.Read(p) }

func TestPutFrom(t *testing.T) {
	c, _ := newClient(t)
	ctx := context.Background()
	ns := readyNamespace(t, c, "stream")
	value := bytes.Repeat([]byte("0123456789\x00\xff"), 20000)

	cases := []struct {
		name string
		body io.Reader
		size int64
	}{
		{"seeker known size", bytes.NewReader(value), int64(len(value))},
		{"seeker unknown size", bytes.NewReader(value), -1},
		{"stream known size", nonSeeker{bytes.NewReader(value)}, int64(len(value))},
		{"stream unknown size", nonSeeker{bytes.NewReader(value)}, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := "stream/" + strings.ReplaceAll(tc.name, " ", "-")
			created, err := ns.PutFrom(ctx, key, tc.body, tc.size, &client.PutOptions{ContentType: "application/x-test"})
			if err != nil || !created {
				t.Fatalf("PutFrom = %v, %v; want created", created, err)
			}
			got, ct, err := ns.Get(ctx, key)
			if err != nil || !bytes.Equal(got, value) || ct != "application/x-test" {
				t.Fatalf("Get = %d bytes, %q, %v; want the %d bytes written", len(got), ct, err, len(value))
			}
		})
	}
	// A seeker is sent from where it stands, not from its start.
	r := bytes.NewReader([]byte("skipkeep"))
	r.Seek(4, io.SeekStart)
	if _, err := ns.PutFrom(ctx, "offset", r, 4, nil); err != nil {
		t.Fatal(err)
	}
	if got, _, err := ns.Get(ctx, "offset"); err != nil || string(got) != "keep" {
		t.Fatalf("Get(offset) = %q, %v; want keep", got, err)
	}
}

// clock is a settable clock shared by a kvd and a client.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestTTL(t *testing.T) {
	clk := &clock{now: time.Now()}
	srv := kvdtest.Start(t, kvdtest.WithClock(clk.Now))
	c := client.New(client.WithBaseURL(srv.URL+"/v2/"), client.WithAPIKey(srv.Token))
	ctx := context.Background()
	ns := readyNamespace(t, c, "ttl")

	for _, bad := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, -time.Second} {
		if _, err := ns.Put(ctx, "k", []byte("v"), &client.PutOptions{TTL: bad}); !errors.Is(err, kv.ErrUnprocessable) {
			t.Errorf("Put with TTL %v: err = %v; want kv.ErrUnprocessable", bad, err)
		}
	}
	if _, _, err := ns.Get(ctx, "k"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("a refused TTL wrote the key: Get err = %v", err)
	}

	if _, err := ns.Put(ctx, "short", []byte("v"), &client.PutOptions{TTL: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Put(ctx, "long", []byte("v"), &client.PutOptions{TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ns.Get(ctx, "short"); err != nil {
		t.Fatalf("Get before expiry: %v", err)
	}
	clk.Advance(3 * time.Second)
	if _, _, err := ns.Get(ctx, "short"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get after expiry: err = %v; want kv.ErrNotFound", err)
	}
	if v, _, err := ns.Get(ctx, "long"); err != nil || string(v) != "v" {
		t.Fatalf("Get(long) = %q, %v", v, err)
	}
}

func TestNormalizeBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":      "http://127.0.0.1:8080",
		"http://127.0.0.1:8080/":     "http://127.0.0.1:8080",
		"http://127.0.0.1:8080/v2":   "http://127.0.0.1:8080",
		"http://127.0.0.1:8080/v2/":  "http://127.0.0.1:8080",
		"https://api.telnyx.com/v2":  "https://api.telnyx.com",
		"https://h/prefix/v2//":      "https://h/prefix",
		" https://api.telnyx.com/ ":  "https://api.telnyx.com",
		"https://api.telnyx.com/v22": "https://api.telnyx.com/v22",
	} {
		if got := client.NormalizeBaseURL(in); got != want {
			t.Errorf("NormalizeBaseURL(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestFromEnvAndBinding(t *testing.T) {
	srv := kvdtest.Start(t)
	setup := client.New(client.WithBaseURL(srv.URL), client.WithAPIKey(srv.Token))
	ns := readyNamespace(t, setup, "bound")
	if _, err := ns.Put(context.Background(), "flag/new-ui", []byte("true"), nil); err != nil {
		t.Fatal(err)
	}

	t.Setenv("TELNYX_API_KEY", "")
	if _, err := client.FromEnv(); err == nil {
		t.Fatal("FromEnv without TELNYX_API_KEY succeeded")
	}
	t.Setenv("TELNYX_API_KEY", srv.Token)
	t.Setenv("TELNYX_BASE_URL", "")
	if c, err := client.FromEnv(); err != nil || c.BaseURL() != client.DefaultBaseURL {
		t.Fatalf("FromEnv default base = %v, %v", c, err)
	}
	t.Setenv("TELNYX_BASE_URL", srv.URL+"/v2")
	t.Setenv("KV_MY_CACHE_ID", ns.ID())
	bound, err := client.Binding("MY_CACHE")
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := bound.Get(context.Background(), "flag/new-ui"); err != nil || string(v) != "true" {
		t.Fatalf("Get through the binding = %q, %v", v, err)
	}
	if _, err := client.Binding("my_cache"); err == nil || !strings.Contains(err.Error(), "^[A-Z][A-Z0-9_]*$") {
		t.Fatalf("Binding(my_cache): err = %v; want the name rule", err)
	}
	if _, err := client.Binding("OTHER"); err == nil || !strings.Contains(err.Error(), "KV_OTHER_ID") {
		t.Fatalf("Binding(OTHER): err = %v; want it to name KV_OTHER_ID", err)
	}
}

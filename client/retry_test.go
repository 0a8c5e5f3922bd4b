package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
)

// faultProxy is a misbehaving front of a real kvd: while its fault
// function returns true for a request it has answered that request itself;
// otherwise it proxies to kvd.
type faultProxy struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string // "METHOD path" of every request received
}

func newFaultProxy(t *testing.T, kvdURL string, fault func(n int, w http.ResponseWriter, r *http.Request) bool) *faultProxy {
	t.Helper()
	target, err := url.Parse(kvdURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	fp := &faultProxy{}
	fp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fp.mu.Lock()
		fp.requests = append(fp.requests, r.Method+" "+r.URL.EscapedPath())
		n := len(fp.requests)
		fp.mu.Unlock()
		if fault != nil && fault(n, w, r) {
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(fp.Close)
	return fp
}

func (fp *faultProxy) count() int {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return len(fp.requests)
}

// failFirst answers the first n requests with status and Retry-After (if
// not empty), after reading the request body as a real server would.
func failFirst(n, status int, retryAfter string) func(int, http.ResponseWriter, *http.Request) bool {
	return func(i int, w http.ResponseWriter, r *http.Request) bool {
		if i > n {
			return false
		}
		io.Copy(io.Discard, r.Body)
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, `{"errors":[{"code":"10033","title":"Service unavailable","detail":"injected fault"}]}`)
		return true
	}
}

// recordWaits makes c record its retry delays instead of sleeping.
func recordWaits(c *Client) *[]time.Duration {
	var mu sync.Mutex
	waits := new([]time.Duration)
	c.wait = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		*waits = append(*waits, d)
		mu.Unlock()
		return ctx.Err()
	}
	return waits
}

// setup starts a kvd with a ready namespace and returns its URL, token and
// namespace id.
func setup(t *testing.T) (srv *kvdtest.Server, nsID string) {
	t.Helper()
	srv = kvdtest.Start(t)
	c := New(WithBaseURL(srv.URL), WithAPIKey(srv.Token))
	ns, err := c.CreateNamespace(context.Background(), "retry")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitReady(context.Background(), ns.ID.String()); err != nil {
		t.Fatal(err)
	}
	return srv, ns.ID.String()
}

func TestRetryHonoursRetryAfterSeconds(t *testing.T) {
	srv, id := setup(t)
	fp := newFaultProxy(t, srv.URL, failFirst(2, http.StatusServiceUnavailable, "2"))
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
	waits := recordWaits(c)

	created, err := c.Namespace(id).Put(context.Background(), "user/1", []byte("replayed body"), nil)
	if err != nil || !created {
		t.Fatalf("Put through two 503s = %v, %v; want created", created, err)
	}
	if got, want := *waits, []time.Duration{2 * time.Second, 2 * time.Second}; !slices.Equal(got, want) {
		t.Fatalf("waits = %v; want %v (Retry-After)", got, want)
	}
	if fp.count() != 3 {
		t.Fatalf("requests = %d; want 3", fp.count())
	}
	direct := New(WithBaseURL(srv.URL), WithAPIKey(srv.Token)).Namespace(id)
	if v, _, err := direct.Get(context.Background(), "user/1"); err != nil || string(v) != "replayed body" {
		t.Fatalf("stored value = %q, %v; want the body sent on the last attempt", v, err)
	}
}

func TestRetryHonoursRetryAfterDate(t *testing.T) {
	srv, id := setup(t)
	date := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	fp := newFaultProxy(t, srv.URL, failFirst(1, http.StatusTooManyRequests, date))
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
	waits := recordWaits(c)

	if _, _, err := c.Namespace(id).Get(context.Background(), "missing"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get after a 429: err = %v; want the real answer, not found", err)
	}
	if len(*waits) != 1 || (*waits)[0] <= 25*time.Second || (*waits)[0] > 30*time.Second {
		t.Fatalf("waits = %v; want one wait until the Retry-After date (~30s)", *waits)
	}
}

func TestRetryBackoffIsBoundedAndJittered(t *testing.T) {
	srv, id := setup(t)
	fp := newFaultProxy(t, srv.URL, failFirst(100, http.StatusBadGateway, ""))
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token), WithMaxAttempts(6), WithBackoff(10*time.Millisecond, 40*time.Millisecond))
	waits := recordWaits(c)

	err := c.Namespace(id).Delete(context.Background(), "k")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway {
		t.Fatalf("Delete through endless 502s: err = %v; want the last 502", err)
	}
	if fp.count() != 6 || len(*waits) != 5 {
		t.Fatalf("requests = %d, waits = %d; want 6 attempts and 5 waits", fp.count(), len(*waits))
	}
	ceilings := []time.Duration{10, 20, 40, 40, 40}
	for i, w := range *waits {
		if w < 0 || w > ceilings[i]*time.Millisecond {
			t.Errorf("wait %d = %v; want within [0, %v]", i+1, w, ceilings[i]*time.Millisecond)
		}
	}
}

func TestNotRetried(t *testing.T) {
	srv, id := setup(t)
	cases := []struct {
		name   string
		status int
		call   func(c *Client) error
	}{
		{"create is not idempotent", http.StatusServiceUnavailable, func(c *Client) error {
			_, err := c.CreateNamespace(context.Background(), "new")
			return err
		}},
		{"500 is not retryable", http.StatusInternalServerError, func(c *Client) error {
			_, _, err := c.Namespace(id).Get(context.Background(), "k")
			return err
		}},
		{"a stream cannot be replayed", http.StatusServiceUnavailable, func(c *Client) error {
			_, err := c.Namespace(id).PutFrom(context.Background(), "k", io.MultiReader(bytes.NewReader([]byte("v"))), 1, nil)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fp := newFaultProxy(t, srv.URL, failFirst(1, tc.status, "0"))
			c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
			waits := recordWaits(c)
			err := tc.call(c)
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tc.status {
				t.Fatalf("err = %v; want the injected %d", err, tc.status)
			}
			if fp.count() != 1 || len(*waits) != 0 {
				t.Fatalf("requests = %d, waits = %v; want one attempt", fp.count(), *waits)
			}
		})
	}
}

func TestSeekableStreamIsReplayed(t *testing.T) {
	srv, id := setup(t)
	fp := newFaultProxy(t, srv.URL, failFirst(2, http.StatusServiceUnavailable, "0"))
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
	recordWaits(c)
	value := bytes.Repeat([]byte("abc\x00"), 5000)
	if _, err := c.Namespace(id).PutFrom(context.Background(), "k", bytes.NewReader(value), -1, nil); err != nil {
		t.Fatal(err)
	}
	if fp.count() != 3 {
		t.Fatalf("requests = %d; want 3", fp.count())
	}
	got, _, err := New(WithBaseURL(srv.URL), WithAPIKey(srv.Token)).Namespace(id).Get(context.Background(), "k")
	if err != nil || !bytes.Equal(got, value) {
		t.Fatalf("stored %d bytes, %v; want the whole %d-byte value", len(got), err, len(value))
	}
}

func TestRetryOnConnectionReset(t *testing.T) {
	srv, id := setup(t)
	fp := newFaultProxy(t, srv.URL, func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n > 2 {
			return false
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return true
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // close with a reset
		}
		conn.Close()
		return true
	})
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
	waits := recordWaits(c)
	page, err := c.Namespace(id).List(context.Background(), "", "", 10)
	if err != nil {
		t.Fatalf("List through two dropped connections: %v", err)
	}
	if len(page.Keys) != 0 || fp.count() != 3 || len(*waits) != 2 {
		t.Fatalf("page = %+v, requests = %d, waits = %v; want an empty page after 3 attempts", page, fp.count(), *waits)
	}
}

func TestRetryOnDialFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c := New(WithBaseURL("http://"+addr), WithAPIKey("k"), WithMaxAttempts(3))
	waits := recordWaits(c)
	_, err = c.GetNamespace(context.Background(), kv.NewID().String())
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("err = %v; want a dial error", err)
	}
	if len(*waits) != 2 {
		t.Fatalf("waits = %v; want 2 (3 attempts)", *waits)
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	srv, id := setup(t)
	fp := newFaultProxy(t, srv.URL, failFirst(100, http.StatusServiceUnavailable, "3600"))
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token), WithRetryWait(2*time.Hour, 2*time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inBackoff := make(chan time.Duration, 1)
	c.wait = func(ctx context.Context, d time.Duration) error {
		inBackoff <- d
		return sleepCtx(ctx, d) // the real wait, an hour long
	}
	go func() {
		<-inBackoff
		cancel()
	}()
	_, _, err := c.Namespace(id).Get(ctx, "k")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v; want context.Canceled", err)
	}
	if fp.count() != 1 {
		t.Fatalf("requests = %d; want 1", fp.count())
	}
}

func TestDeadlineBeforeRetryAfterReturnsTheAnswer(t *testing.T) {
	srv, id := setup(t)
	fp := newFaultProxy(t, srv.URL, failFirst(100, http.StatusServiceUnavailable, "3600"))
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
	waits := recordWaits(c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _, err := c.Namespace(id).Get(ctx, "k")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || !errors.Is(err, kv.ErrUnavailable) || apiErr.RetryAfter != time.Hour || apiErr.Detail != "injected fault" {
		t.Fatalf("err = %#v; want the 503 with Retry-After 1h", err)
	}
	if len(*waits) != 0 {
		t.Fatalf("waits = %v; want none: the deadline comes first", *waits)
	}
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		status   int
		body     string
		wantCode kv.ErrorCode
		wantText string
	}{
		{404, `{"errors":[{"code":"10005","title":"Resource not found","detail":"Key not found","source":{"parameter":"key"}}]}`, kv.ENotFound, "Key not found"},
		{418, `{"errors":[{"code":"99999","title":"Teapot","detail":"short and stout"}]}`, kv.EInvalid, "short and stout"},
		{409, `{"errors":[{"code":"10030","detail":"Namespace is not ready (status: pending)"}]}`, kv.EConflict, "Namespace is not ready (status: pending)"},
		{502, `<html><body>Bad gateway</body></html>`, kv.EInternal, "Bad Gateway"},
		{503, "upstream down\nmore", kv.EUnavailable, "upstream down"},
	}
	for _, tc := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			io.WriteString(w, tc.body)
		}))
		c := New(WithBaseURL(srv.URL), WithMaxAttempts(1))
		_, _, err := c.Namespace(kv.NewID().String()).Get(context.Background(), "k")
		srv.Close()
		var apiErr *APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("status %d: err = %v; want *APIError", tc.status, err)
		}
		if apiErr.StatusCode != tc.status || apiErr.Code != tc.wantCode || !errors.Is(err, &kv.Error{Code: tc.wantCode}) {
			t.Errorf("status %d: got status %d code %s; want code %s", tc.status, apiErr.StatusCode, apiErr.Code, tc.wantCode)
		}
		text := apiErr.Detail
		if text == "" {
			text = apiErr.Title
		}
		if text != tc.wantText {
			t.Errorf("status %d: text %q; want %q", tc.status, text, tc.wantText)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"7", 7 * time.Second, true},
		{" 7 ", 7 * time.Second, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{strconv.Itoa(1 << 40), 24 * time.Hour, true},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestKeysFollowsCursors(t *testing.T) {
	srv, id := setup(t)
	fp := newFaultProxy(t, srv.URL, nil)
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
	ns := c.Namespace(id)
	want := []string{"p/1", "p/2", "p/3", "p/4", "p/5"}
	for _, k := range append(want, "q/1") {
		if _, err := ns.Put(context.Background(), k, []byte(k), nil); err != nil {
			t.Fatal(err)
		}
	}
	before := fp.count()
	ns.pageLimit = 2
	var got []string
	for info, err := range ns.Keys(context.Background(), "p/") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.Key)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Keys = %v; want %v", got, want)
	}
	if lists := fp.count() - before; lists != 3 {
		t.Fatalf("list requests = %d; want 3 pages of at most 2", lists)
	}
	// Stopping early stops fetching.
	before = fp.count()
	for range ns.Keys(context.Background(), "p/") {
		break
	}
	if fp.count()-before != 1 {
		t.Fatalf("an abandoned walk made %d requests; want 1", fp.count()-before)
	}
}

package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
)

// countingClient returns an http.Client whose connections count the bytes
// read from the network.
func countingClient(read *atomic.Int64) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, read: read}, nil
	}
	return &http.Client{Transport: tr}
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// endless writes chunk after chunk until the client goes away.
func endless(w http.ResponseWriter, chunk []byte) {
	for {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

// A hostile server's endless or oversized bodies end in an error after the
// client has read no more than the bound (and a little transport
// buffering), and allocated no more than a few times the bound.
func TestResponseBodiesAreBounded(t *testing.T) {
	junk := bytes.Repeat([]byte("x"), 64<<10)
	jsonJunk := []byte(strings.Repeat(`{"key":"a","size_bytes":1,"updated_at":"x"},`, 1000))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/keys/endless"):
			endless(w, junk)
		case strings.HasSuffix(r.URL.Path, "/keys/announced"):
			w.Header().Set("Content-Length", "7400000000")
			w.WriteHeader(http.StatusOK)
			endless(w, junk)
		case strings.HasSuffix(r.URL.Path, "/keys/exact"):
			w.Write(bytes.Repeat([]byte("v"), kv.MaxValueSize))
		case strings.HasSuffix(r.URL.Path, "/keys/one-over"):
			w.Write(bytes.Repeat([]byte("v"), kv.MaxValueSize+1))
		case strings.HasSuffix(r.URL.Path, "/keys"):
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"data":[`)
			endless(w, jsonJunk)
		case strings.HasSuffix(r.URL.Path, "/usage"):
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"data":{"namespaces":[`)
			endless(w, jsonJunk)
		default: // an error answer that never ends
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"errors":[{"code":"10015","detail":"`)
			endless(w, junk)
		}
	}))
	defer srv.Close()
	var read atomic.Int64
	c := New(WithBaseURL(srv.URL), WithAPIKey("k"), WithHTTPClient(countingClient(&read)), WithMaxAttempts(1))
	ns := c.Namespace(kv.NewID().String())
	ctx := context.Background()

	cases := []struct {
		name    string
		bound   int64
		call    func() error
		tooBig  bool // the error must match ErrResponseTooLarge
		written *bytes.Buffer
	}{
		{"Get of an endless value", kv.MaxValueSize, func() error { _, _, err := ns.Get(ctx, "endless"); return err }, true, nil},
		{"Get of a value announced as 7.4 GB", 0, func() error { _, _, err := ns.Get(ctx, "announced"); return err }, true, nil},
		{"Get of a value one byte over", kv.MaxValueSize, func() error { _, _, err := ns.Get(ctx, "one-over"); return err }, true, nil},
		{"GetTo of an endless value", kv.MaxValueSize, func() error { _, _, err := ns.GetTo(ctx, "endless", &bytes.Buffer{}); return err }, true, nil},
		{"GetTo of a value announced as 7.4 GB", 0, func() error { _, _, err := ns.GetTo(ctx, "announced", &bytes.Buffer{}); return err }, true, nil},
		{"List of an endless page", MaxJSONResponse, func() error { _, err := ns.List(ctx, "", "", 0); return err }, true, nil},
		{"Usage of an endless report", MaxUsageResponse, func() error { _, err := c.Usage(ctx, ""); return err }, true, nil},
		{"an endless error", 64 << 10, func() error { _, err := c.GetNamespace(ctx, kv.NewID().String()); return err }, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			read.Store(0)
			var before, after runtimeMem
			before.read()
			err := tc.call()
			after.read()
			if err == nil {
				t.Fatal("no error")
			}
			if tc.tooBig && !errors.Is(err, ErrResponseTooLarge) {
				t.Fatalf("err = %v; want ErrResponseTooLarge", err)
			}
			// The transport reads ahead in buffers of a few KiB; a
			// connection closed at the bound stops well within 1 MiB more.
			if got, most := read.Load(), tc.bound+1<<20; got > most {
				t.Fatalf("read %d bytes from the network; want at most %d", got, most)
			}
			if got, most := after.alloc-before.alloc, 3*tc.bound+8<<20; /* twice the bound while reading, and the decoded result */ got > uint64(most) {
				t.Fatalf("allocated %d bytes; want at most %d", got, most)
			}
		})
	}

	// A value of exactly the limit is fine, through both calls.
	v, _, err := ns.Get(ctx, "exact")
	if err != nil || len(v) != kv.MaxValueSize {
		t.Fatalf("Get of a 1 MiB value: %d bytes, %v", len(v), err)
	}
	var buf bytes.Buffer
	if _, n, err := ns.GetTo(ctx, "exact", &buf); err != nil || n != kv.MaxValueSize || buf.Len() != kv.MaxValueSize {
		t.Fatalf("GetTo of a 1 MiB value: %d bytes (%d written), %v", n, buf.Len(), err)
	}
	// GetTo of an oversized stream writes no more than the limit.
	buf.Reset()
	if _, n, err := ns.GetTo(ctx, "one-over", &buf); !errors.Is(err, ErrResponseTooLarge) || n > kv.MaxValueSize || buf.Len() > kv.MaxValueSize {
		t.Fatalf("GetTo of a value one byte over: %d bytes (%d written), %v", n, buf.Len(), err)
	}
}

// runtimeMem samples the bytes allocated so far by the process.
type runtimeMem struct{ alloc uint64 }

// A redirect to another origin (here: another port of the same host) is
// refused before anything is sent there; the API key never leaves the
// origin it was given for.
func TestRedirectToAnotherOriginIsRefused(t *testing.T) {
	var mu sync.Mutex
	var otherSaw []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		otherSaw = append(otherSaw, r.Method+" "+r.URL.Path+" auth="+r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, "stolen")
	}))
	defer other.Close()
	var sameHops atomic.Int32
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/keys/elsewhere"):
			http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
		case strings.HasSuffix(r.URL.Path, "/keys/moved"):
			http.Redirect(w, r, strings.Replace(r.URL.Path, "/moved", "/here", 1), http.StatusFound)
		case strings.HasSuffix(r.URL.Path, "/keys/here"):
			if r.Header.Get("Authorization") != "Bearer secret" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			io.WriteString(w, "value")
		case strings.HasSuffix(r.URL.Path, "/keys/loop"):
			sameHops.Add(1)
			http.Redirect(w, r, r.URL.Path, http.StatusFound)
		}
	}))
	defer first.Close()

	for _, hc := range []*http.Client{nil, {Timeout: time.Minute}} {
		c := New(WithBaseURL(first.URL), WithAPIKey("secret"), WithHTTPClient(hc), WithMaxAttempts(1))
		ns := c.Namespace(kv.NewID().String())
		_, _, err := ns.Get(context.Background(), "elsewhere")
		var re *RedirectError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), "another origin") {
			t.Fatalf("Get redirected to another port: err = %v; want a *RedirectError", err)
		}
		if re.From == re.To {
			t.Fatalf("RedirectError %+v: the origins should differ", re)
		}
		mu.Lock()
		if len(otherSaw) != 0 {
			t.Fatalf("the other origin received %v", otherSaw)
		}
		mu.Unlock()

		// Same-origin redirects are followed, with the key, a few times.
		if v, _, err := ns.Get(context.Background(), "moved"); err != nil || string(v) != "value" {
			t.Fatalf("Get through a same-origin redirect = %q, %v", v, err)
		}
		sameHops.Store(0)
		if _, _, err := ns.Get(context.Background(), "loop"); err == nil || !strings.Contains(err.Error(), "redirects") {
			t.Fatalf("Get of a redirect loop: err = %v; want a redirect limit", err)
		}
		if n := sameHops.Load(); n > maxRedirects+1 {
			t.Fatalf("followed %d redirects; want at most %d", n-1, maxRedirects)
		}
	}
	if hc := (&http.Client{}); hc.CheckRedirect != nil {
		t.Fatal("the caller's http.Client was changed")
	}
}

func TestOrigin(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"http://h/x", "http://H:80/y"},
		{"https://h", "https://h:443/"},
		{"http://[::1]:8080/", "http://[::1]:8080/v2"},
	} {
		if origin(mustURL(t, tc.a)) != origin(mustURL(t, tc.b)) {
			t.Errorf("%s and %s: different origins; want the same", tc.a, tc.b)
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"http://h:8080", "http://h:8081"},
		{"http://h", "https://h"},
		{"http://h", "http://h.evil"},
	} {
		if origin(mustURL(t, tc.a)) == origin(mustURL(t, tc.b)) {
			t.Errorf("%s and %s: the same origin; want different", tc.a, tc.b)
		}
	}
}

// A Retry-After past MaxRetryWait fails the call at once with the answer;
// the waits of one call never add up past MaxRetryTotal.
func TestRetryWaitIsBounded(t *testing.T) {
	srv, id := setup(t)
	fp := newFaultProxy(t, srv.URL, failFirst(100, http.StatusServiceUnavailable, "999999"))
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
	waits := recordWaits(c)
	_, _, err := c.Namespace(id).Get(context.Background(), "k")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable || apiErr.RetryAfter < 30*time.Second {
		t.Fatalf("err = %v; want the 503 with its Retry-After", err)
	}
	if len(*waits) != 0 || fp.count() != 1 {
		t.Fatalf("waits %v, requests %d; want no wait and one request", *waits, fp.count())
	}

	fp = newFaultProxy(t, srv.URL, failFirst(100, http.StatusServiceUnavailable, "20"))
	c = New(WithBaseURL(fp.URL), WithAPIKey(srv.Token), WithMaxAttempts(10), WithRetryWait(30*time.Second, 50*time.Second))
	waits = recordWaits(c)
	_, _, err = c.Namespace(id).Get(context.Background(), "k")
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("err = %v; want the last 503", err)
	}
	if got := *waits; len(got) != 2 || fp.count() != 3 {
		t.Fatalf("waits %v, requests %d; want two waits of 20s (a third would pass 50s) and three requests", got, fp.count())
	}

	// A computed backoff is cut to the per-wait bound.
	fp = newFaultProxy(t, srv.URL, failFirst(100, http.StatusBadGateway, ""))
	c = New(WithBaseURL(fp.URL), WithAPIKey(srv.Token), WithBackoff(time.Hour, time.Hour), WithRetryWait(time.Second, time.Hour))
	waits = recordWaits(c)
	c.Namespace(id).Get(context.Background(), "k")
	for _, w := range *waits {
		if w > time.Second {
			t.Fatalf("waits %v; want each at most 1s", *waits)
		}
	}
}

// cursorServer serves key listings whose cursors follow next.
func cursorServer(t *testing.T, next func(cursor string) (hasMore bool, newCursor string)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) > 1000 {
			w.WriteHeader(http.StatusTeapot) // the walk should have ended long ago
			return
		}
		more, cur := next(r.URL.Query().Get("cursor"))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"data":[{"key":"k/%d","size_bytes":1,"updated_at":"2026-01-01T00:00:00.000000000Z"}],"meta":{"has_more":%v,"cursor":%q}}`, requests.Load(), more, cur)
	}))
	t.Cleanup(srv.Close)
	return srv, &requests
}

func TestKeysStopsOnARepeatedCursor(t *testing.T) {
	cases := map[string]func(string) (bool, string){
		"the same cursor again": func(string) (bool, string) { return true, "c1" },
		"the cursor it was sent": func(c string) (bool, string) {
			if c == "" {
				return true, "c1"
			}
			return true, c
		},
		"a cycle of three": func(c string) (bool, string) {
			return true, map[string]string{"": "a", "a": "b", "b": "c", "c": "a"}[c]
		},
		"a long cycle after a while": func(c string) (bool, string) {
			n := 0
			fmt.Sscanf(c, "c%d", &n)
			if n >= 60 {
				n = 17
			}
			return true, fmt.Sprintf("c%d", n+1)
		},
		"more, without a cursor": func(string) (bool, string) { return true, "" },
	}
	for name, next := range cases {
		t.Run(name, func(t *testing.T) {
			srv, requests := cursorServer(t, next)
			ns := New(WithBaseURL(srv.URL), WithAPIKey("k")).Namespace(kv.NewID().String())
			var keys int
			var err error
			for _, e := range ns.Keys(context.Background(), "") {
				if e != nil {
					err = e
					break
				}
				keys++
			}
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("after %d keys and %d requests: err = %v; want ErrBadCursor", keys, requests.Load(), err)
			}
			if n := requests.Load(); n > 200 {
				t.Fatalf("%d requests before the loop was noticed", n)
			}
		})
	}
	// An honest walk of many pages is not mistaken for a loop.
	srv, requests := cursorServer(t, func(c string) (bool, string) {
		n := 0
		fmt.Sscanf(c, "c%d", &n)
		return n < 299, fmt.Sprintf("c%d", n+1)
	})
	ns := New(WithBaseURL(srv.URL), WithAPIKey("k")).Namespace(kv.NewID().String())
	keys := 0
	for _, err := range ns.Keys(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		keys++
	}
	if keys != 300 || requests.Load() != 300 {
		t.Fatalf("honest walk: %d keys in %d requests; want 300", keys, requests.Load())
	}
}

// WaitReady ends with the context, naming the status it last saw, when a
// namespace stays pending.
func TestWaitReadyHonoursContext(t *testing.T) {
	srv := kvdtest.Start(t, kvdtest.WithoutBackground())
	c := New(WithBaseURL(srv.URL), WithAPIKey(srv.Token))
	ns, err := c.CreateNamespace(context.Background(), "stays-pending")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	polls := 0
	got, err := c.WaitReadyFunc(ctx, ns.ID.String(), func(kv.Namespace) { polls++ })
	var we *WaitError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &we) || we.Namespace.Status != kv.StatusPending {
		t.Fatalf("WaitReady of a namespace that stays pending: err = %v; want a WaitError (pending) matching the deadline", err)
	}
	if got.ID != ns.ID || polls == 0 {
		t.Fatalf("WaitReady returned %+v after %d polls; want the pending namespace", got, polls)
	}
}

// failingReader yields n bytes, then fails.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	m := min(len(p), r.n)
	for i := range m {
		p[i] = 'x'
	}
	r.n -= m
	return m, nil
}

// A PutFrom whose reader fails part-way returns the reader's error and
// aborts the request: the server never receives a complete body.
func TestPutFromFailingReaderAborts(t *testing.T) {
	boom := errors.New("disk on fire")
	type seen struct {
		n   int64
		err error
	}
	got := make(chan seen, 4)
	recorder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		got <- seen{n, err}
	}))
	defer recorder.Close()
	srv, id := setup(t)
	for _, size := range []int64{5000, -1} {
		t.Run(fmt.Sprintf("size %d", size), func(t *testing.T) {
			ns := New(WithBaseURL(recorder.URL), WithAPIKey("k")).Namespace(id)
			_, err := ns.PutFrom(context.Background(), "k", &failingReader{n: 1000, err: boom}, size, nil)
			if !errors.Is(err, boom) {
				t.Fatalf("PutFrom with a failing reader: err = %v; want the reader's error", err)
			}
			select {
			case s := <-got:
				if s.err == nil {
					t.Fatalf("the server read a complete body of %d bytes", s.n)
				}
			case <-time.After(30 * time.Second):
				// The transport may give up before the server reads the
				// headers; nothing complete arrived either way.
			}

			// Against a real kvd: the same error, and the old value stays,
			// whichever the framing: kvd stores a value only if its body
			// arrived whole.
			real := New(WithBaseURL(srv.URL), WithAPIKey(srv.Token)).Namespace(id)
			if _, err := real.Put(context.Background(), "k", []byte("old"), nil); err != nil {
				t.Fatal(err)
			}
			_, err = real.PutFrom(context.Background(), "k", &failingReader{n: 1000, err: boom}, size, nil)
			if !errors.Is(err, boom) {
				t.Fatalf("PutFrom to kvd with a failing reader: err = %v; want the reader's error", err)
			}
			v, _, err := real.Get(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			if string(v) != "old" {
				t.Errorf("after an aborted PutFrom the value is %d bytes (%.20q); want the old value", len(v), v)
			}
		})
	}
}

// Info reads a key's metadata from a HEAD request.
func TestInfo(t *testing.T) {
	srv, id := setup(t)
	ns := New(WithBaseURL(srv.URL), WithAPIKey(srv.Token)).Namespace(id)
	ctx := context.Background()
	if _, err := ns.Put(ctx, "user/1", []byte(`{"a":1}`), &PutOptions{ContentType: "application/json", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	info, err := ns.Info(ctx, "user/1")
	if err != nil {
		t.Fatal(err)
	}
	if info.Key != "user/1" || info.Size != 7 || info.ContentType != "application/json" {
		t.Fatalf("Info = %+v; want 7 bytes of application/json", info)
	}
	if info.ExpiryKnown && (info.ExpiresAt.Before(time.Now().Add(50*time.Minute)) || info.ExpiresAt.After(time.Now().Add(61*time.Minute))) {
		t.Fatalf("Info = %+v; want an expiry in an hour", info)
	}
	if _, err := ns.Info(ctx, "user/none"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Info of a missing key: err = %v; want not found", err)
	}

	// The metadata headers, as a newer service sends them.
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			t.Errorf("Info sent %s; want HEAD", r.Method)
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "42")
		w.Header().Set("ETag", `"e1"`)
		w.Header().Set(HeaderUpdatedAt, "2026-06-18T14:48:17.475129983Z")
		if strings.HasSuffix(r.URL.Path, "/expiring") {
			w.Header().Set(HeaderExpiresAt, "2026-06-19T14:48:17.475129983Z")
		}
	}))
	defer fake.Close()
	fns := New(WithBaseURL(fake.URL), WithAPIKey("k")).Namespace(kv.NewID().String())
	info, err = fns.Info(ctx, "expiring")
	want := KeyInfo{Key: "expiring", Size: 42, ContentType: "text/plain", ETag: `"e1"`,
		UpdatedAt:   time.Date(2026, 6, 18, 14, 48, 17, 475129983, time.UTC),
		ExpiryKnown: true, ExpiresAt: time.Date(2026, 6, 19, 14, 48, 17, 475129983, time.UTC)}
	if err != nil || !info.UpdatedAt.Equal(want.UpdatedAt) || !info.ExpiresAt.Equal(want.ExpiresAt) || info.Size != 42 || info.ETag != want.ETag || !info.ExpiryKnown {
		t.Fatalf("Info = %+v, %v; want %+v", info, err, want)
	}
	info, err = fns.Info(ctx, "permanent")
	if err != nil || !info.ExpiryKnown || !info.ExpiresAt.IsZero() {
		t.Fatalf("Info of a permanent key = %+v, %v; want a known absence of expiry", info, err)
	}
}

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.alloc = s.TotalAlloc
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestParseBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":                "http://127.0.0.1:8080",
		" https://api.telnyx.com/ ":            "https://api.telnyx.com",
		"http://h:8080/v2":                     "http://h:8080",
		"http://h:8080/v2/":                    "http://h:8080",
		"http://h:8080/v2/storage/kvs":         "http://h:8080",
		"http://h:8080/v2/storage/kvs/":        "http://h:8080",
		"https://gw.example/kv/v2/storage/kvs": "https://gw.example/kv",
		"http://[::1]:8080":                    "http://[::1]:8080",
	} {
		if got, err := ParseBaseURL(in); err != nil || got != want {
			t.Errorf("ParseBaseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"localhost:8080":           "has no scheme; did you mean http://localhost:8080",
		"127.0.0.1:8080":           "has no scheme",
		"":                         "empty",
		"ftp://h":                  "must be http or https",
		"http://":                  "no host",
		"http://user:pw@h":         "user name or password",
		"http://h:8080/?x=1":       "query",
		"http://h:8080/#top":       "fragment",
		"http://h:8080/v2\x1b[31m": "not a URL",
	} {
		if got, err := ParseBaseURL(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseBaseURL(%q) = %q, %v; want an error saying %q", in, got, err, want)
		}
	}
}

// A namespace listing that serves the same page forever, claiming ever
// more pages, ends with ErrBadCursor.
func TestNamespacesStopsOnARepeatedPage(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) > 1000 {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		fmt.Fprint(w, `{"data":[{"id":"6ba7b810-9dad-41d1-80b4-00c04fd430c8","name":"same","status":"provision_ok"}],"meta":{"page_number":1,"page_size":250,"total_pages":999999999,"total_results":999999999}}`)
	}))
	defer srv.Close()
	c := New(WithBaseURL(srv.URL), WithAPIKey("k"))
	var err error
	for _, e := range c.Namespaces(context.Background()) {
		if e != nil {
			err = e
			break
		}
	}
	if !errors.Is(err, ErrBadCursor) || requests.Load() > 3 {
		t.Fatalf("after %d requests: err = %v; want ErrBadCursor", requests.Load(), err)
	}
}

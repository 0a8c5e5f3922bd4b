package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// A call that must not be applied twice is retried only when it cannot
// have been applied. These tests put a front before a real kvd that loses
// the answer after kvd has applied the request, or refuses the request
// itself, and check what kvd ends up holding.

// loseAnswer forwards request n to kvd, then closes the connection
// without an answer, as a network that fails after the request was sent.
func loseAnswer(t *testing.T, kvdURL string, n int) func(int, http.ResponseWriter, *http.Request) bool {
	return func(i int, w http.ResponseWriter, r *http.Request) bool {
		if i != n {
			return false
		}
		body, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequest(r.Method, kvdURL+r.URL.RequestURI(), bytes.NewReader(body))
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("forwarding: %v", err)
		} else {
			resp.Body.Close()
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return true
		}
		conn.Close()
		return true
	}
}

// answer answers request n itself with status, forwarding the others.
func answer(n, status int) func(int, http.ResponseWriter, *http.Request) bool {
	return func(i int, w http.ResponseWriter, r *http.Request) bool {
		if i != n {
			return false
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, `{"errors":[{"code":"10033","title":"Service unavailable","detail":"injected fault"}]}`)
		return true
	}
}

func TestIncrIsNeverAppliedTwice(t *testing.T) {
	srv, id := setup(t)
	direct := New(WithBaseURL(srv.URL), WithAPIKey(srv.Token)).Namespace(id)
	ctx := context.Background()
	counter := func(t *testing.T, key string) string {
		t.Helper()
		v, _, err := direct.Get(ctx, key)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		return string(v)
	}

	t.Run("answer lost", func(t *testing.T) {
		fp := newFaultProxy(t, srv.URL, loseAnswer(t, srv.URL, 1))
		c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
		recordWaits(c)
		_, err := c.Namespace(id).Incr(ctx, "lost", 1)
		if !errors.Is(err, ErrMaybeApplied) {
			t.Fatalf("Incr whose answer was lost: err = %v; want ErrMaybeApplied", err)
		}
		if fp.count() != 1 || counter(t, "lost") != "1" {
			t.Fatalf("requests = %d, counter = %s; want 1 request applied once", fp.count(), counter(t, "lost"))
		}
	})
	t.Run("5xx", func(t *testing.T) {
		for _, status := range []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout} {
			fp := newFaultProxy(t, srv.URL, answer(1, status))
			c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
			recordWaits(c)
			_, err := c.Namespace(id).Incr(ctx, "5xx", 1)
			var apiErr *APIError
			if !errors.Is(err, ErrMaybeApplied) || !errors.As(err, &apiErr) || apiErr.StatusCode != status {
				t.Fatalf("Incr answered %d: err = %v; want ErrMaybeApplied with the *APIError", status, err)
			}
			if fp.count() != 1 {
				t.Fatalf("Incr answered %d was sent %d times; want once", status, fp.count())
			}
		}
	})
	t.Run("429 is retried", func(t *testing.T) {
		fp := newFaultProxy(t, srv.URL, answer(1, http.StatusTooManyRequests))
		c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
		recordWaits(c)
		n, err := c.Namespace(id).Incr(ctx, "429", 1)
		if err != nil || n != 1 || fp.count() != 2 || counter(t, "429") != "1" {
			t.Fatalf("Incr after a 429 = %d, %v after %d requests; want 1 after 2", n, err, fp.count())
		}
	})
	t.Run("failed dial is retried", func(t *testing.T) {
		var dials atomic.Int32
		tr := http.DefaultTransport.(*http.Transport).Clone()
		dial := tr.DialContext
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) == 1 {
				// A port nothing listens on: connection refused.
				return dial(ctx, network, "127.0.0.1:1")
			}
			return dial(ctx, network, addr)
		}
		c := New(WithBaseURL(srv.URL), WithAPIKey(srv.Token), WithHTTPClient(&http.Client{Transport: tr}))
		recordWaits(c)
		n, err := c.Namespace(id).Incr(ctx, "dial", 1)
		if err != nil || n != 1 || dials.Load() != 2 || counter(t, "dial") != "1" {
			t.Fatalf("Incr after a refused connection = %d, %v after %d dials; want 1 after 2", n, err, dials.Load())
		}
	})
	t.Run("idempotent batch is retried", func(t *testing.T) {
		fp := newFaultProxy(t, srv.URL, loseAnswer(t, srv.URL, 1))
		c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
		recordWaits(c)
		res, err := c.Namespace(id).Bulk().Put("p1", []byte("x"), nil).Delete("p2").Run(ctx)
		if err != nil || len(res.Results) != 2 || fp.count() != 2 {
			t.Fatalf("bulk puts after a lost answer = %+v, %v after %d requests; want results after 2", res, err, fp.count())
		}
	})
}

// TestConditionalWriteIsNotReplayed: a conditional put whose answer was
// lost is not retried (a replay would fail its own precondition), and an
// Update whose write was lost reports it rather than applying fn again.
func TestConditionalWriteIsNotReplayed(t *testing.T) {
	srv, id := setup(t)
	direct := New(WithBaseURL(srv.URL), WithAPIKey(srv.Token)).Namespace(id)
	ctx := context.Background()
	if _, err := direct.Put(ctx, "n", []byte("0"), nil); err != nil {
		t.Fatal(err)
	}
	var puts atomic.Int32
	fp := newFaultProxy(t, srv.URL, func(i int, w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut {
			return false
		}
		if puts.Add(1) == 1 {
			return loseAnswer(t, srv.URL, i)(i, w, r)
		}
		return false
	})
	c := New(WithBaseURL(fp.URL), WithAPIKey(srv.Token))
	recordWaits(c)
	calls := 0
	_, err := c.Namespace(id).Update(ctx, "n", func(old []byte, found bool) ([]byte, error) {
		calls++
		return []byte(string(old) + "+1"), nil
	})
	if !errors.Is(err, ErrMaybeApplied) || calls != 1 || puts.Load() != 1 {
		t.Fatalf("Update whose write lost its answer: err = %v, fn called %d times, %d PUTs; want ErrMaybeApplied after one of each", err, calls, puts.Load())
	}
	if v, _, _ := direct.Get(ctx, "n"); string(v) != "0+1" {
		t.Fatalf("n = %q; want 0+1, applied once", v)
	}
	// A plain put is idempotent and still retried.
	puts.Store(0)
	if _, err := c.Namespace(id).Put(ctx, "plain", []byte("v"), nil); err != nil || puts.Load() != 2 {
		t.Fatalf("plain Put after a lost answer: %v after %d PUTs; want success after 2", err, puts.Load())
	}
	// A conditional one is not.
	puts.Store(0)
	_, err = c.Namespace(id).Put(ctx, "cond", []byte("v"), &PutOptions{IfAbsent: true})
	if !errors.Is(err, ErrMaybeApplied) || puts.Load() != 1 {
		t.Fatalf("IfAbsent Put after a lost answer: %v after %d PUTs; want ErrMaybeApplied after 1", err, puts.Load())
	}
	if !strings.Contains(err.Error(), "may or may not have been applied") {
		t.Fatalf("error text %q does not say the outcome is unknown", err)
	}
}

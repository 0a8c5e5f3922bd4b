package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
)

// preconditionETag returns the current ETag a 412 carried, failing t when
// err is not a 412 matching ErrPreconditionFailed.
func preconditionETag(t *testing.T, what string, err error) string {
	t.Helper()
	var apiErr *client.APIError
	if !errors.Is(err, client.ErrPreconditionFailed) || !errors.As(err, &apiErr) || apiErr.StatusCode != 412 {
		t.Fatalf("%s: err = %v; want a 412 matching ErrPreconditionFailed", what, err)
	}
	if errors.Is(err, kv.ErrInvalid) || errors.Is(err, client.ErrMaybeApplied) {
		t.Fatalf("%s: err = %v also matches ErrInvalid or ErrMaybeApplied", what, err)
	}
	return apiErr.ETag
}

func TestConditionalPutAndDelete(t *testing.T) {
	c, _ := newClient(t)
	ns := readyNamespace(t, c, "conditional")
	ctx := context.Background()

	first, err := ns.PutWithResult(ctx, "k", []byte("v1"), &client.PutOptions{IfAbsent: true, ContentType: "text/plain"})
	if err != nil || !first.Written || !first.Created || first.ETag == "" {
		t.Fatalf("first IfAbsent write = %+v, %v; want created with an ETag", first, err)
	}
	// The ETag is the one reads and listings report.
	got, err := ns.GetWithOptions(ctx, "k", nil)
	if err != nil || string(got.Value) != "v1" || got.ETag != first.ETag || got.ContentType != "text/plain" || got.Size != 2 {
		t.Fatalf("GetWithOptions = %+v, %v; want v1, text/plain, ETag %s", got, err, first.ETag)
	}
	if info, err := ns.Info(ctx, "k"); err != nil || info.ETag != first.ETag {
		t.Fatalf("Info = %+v, %v; want ETag %s", info, err, first.ETag)
	}
	page, err := ns.List(ctx, "", "", 0)
	if err != nil || len(page.Keys) != 1 || page.Keys[0].ETag != first.ETag {
		t.Fatalf("List = %+v, %v; want k with ETag %s", page, err, first.ETag)
	}

	// A second IfAbsent write fails, names the current ETag, writes nothing.
	_, err = ns.Put(ctx, "k", []byte("v2"), &client.PutOptions{IfAbsent: true})
	if cur := preconditionETag(t, "IfAbsent on an existing key", err); cur != first.ETag {
		t.Fatalf("412 ETag = %q; want the current %q", cur, first.ETag)
	}
	// If-Match with the current ETag writes, and gives a new ETag.
	second, err := ns.PutWithResult(ctx, "k", []byte("v2"), &client.PutOptions{IfMatch: first.ETag})
	if err != nil || second.Created || second.ETag == "" || second.ETag == first.ETag {
		t.Fatalf("IfMatch current = %+v, %v; want replaced with a new ETag", second, err)
	}
	// The same bytes again still change the ETag.
	third, err := ns.PutWithResult(ctx, "k", []byte("v2"), &client.PutOptions{IfMatch: second.ETag})
	if err != nil || third.ETag == second.ETag {
		t.Fatalf("rewrite of identical bytes = %+v, %v; want a new ETag", third, err)
	}
	// A stale ETag fails and names the current one.
	_, err = ns.Put(ctx, "k", []byte("lost"), &client.PutOptions{IfMatch: first.ETag})
	if cur := preconditionETag(t, "IfMatch stale", err); cur != third.ETag {
		t.Fatalf("412 ETag = %q; want %q", cur, third.ETag)
	}
	// A list of ETags matches any of them; "*" any existing key.
	if _, err := ns.Put(ctx, "k", []byte("v4"), &client.PutOptions{IfMatch: first.ETag + ", " + third.ETag}); err != nil {
		t.Fatalf("IfMatch list holding the current ETag: %v", err)
	}
	if _, err := ns.Put(ctx, "k", []byte("v5"), &client.PutOptions{IfMatch: "*"}); err != nil {
		t.Fatalf("IfMatch * on an existing key: %v", err)
	}
	if v, _, _ := ns.Get(ctx, "k"); string(v) != "v5" {
		t.Fatalf("value = %q; want v5 (nothing written by the failed writes)", v)
	}
	// A missing key fails any If-Match, with no ETag to name.
	_, err = ns.Put(ctx, "missing", []byte("x"), &client.PutOptions{IfMatch: "*"})
	if cur := preconditionETag(t, "IfMatch * on a missing key", err); cur != "" {
		t.Fatalf("412 on a missing key carries ETag %q", cur)
	}
	if _, _, err := ns.Get(ctx, "missing"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("a failed IfMatch created the key: %v", err)
	}
	// Both conditions at once are refused before anything is sent.
	if _, err := ns.Put(ctx, "k", nil, &client.PutOptions{IfMatch: "*", IfAbsent: true}); !errors.Is(err, kv.ErrInvalid) {
		t.Fatalf("IfMatch with IfAbsent: err = %v; want ErrInvalid", err)
	}
	// A malformed entity tag is the service's 400.
	if _, err := ns.Put(ctx, "k", nil, &client.PutOptions{IfMatch: "not-quoted"}); !errors.Is(err, kv.ErrInvalid) {
		t.Fatalf("IfMatch not-quoted: err = %v; want ErrInvalid (400)", err)
	}

	// Conditional reads.
	cur, _ := ns.GetWithOptions(ctx, "k", nil)
	nm, err := ns.GetWithOptions(ctx, "k", &client.GetOptions{IfNoneMatch: cur.ETag})
	if err != nil || !nm.NotModified || nm.Value != nil || nm.ETag != cur.ETag {
		t.Fatalf("IfNoneMatch current = %+v, %v; want not modified, its ETag, no value", nm, err)
	}
	fresh, err := ns.GetWithOptions(ctx, "k", &client.GetOptions{IfNoneMatch: first.ETag})
	if err != nil || fresh.NotModified || string(fresh.Value) != "v5" {
		t.Fatalf("IfNoneMatch stale = %+v, %v; want the value", fresh, err)
	}

	// Conditional deletes.
	err = ns.DeleteWithOptions(ctx, "k", &client.DeleteOptions{IfMatch: first.ETag})
	if got := preconditionETag(t, "delete IfMatch stale", err); got != cur.ETag {
		t.Fatalf("412 ETag = %q; want %q", got, cur.ETag)
	}
	if _, _, err := ns.Get(ctx, "k"); err != nil {
		t.Fatalf("a failed conditional delete removed the key: %v", err)
	}
	if err := ns.DeleteWithOptions(ctx, "k", &client.DeleteOptions{IfMatch: cur.ETag}); err != nil {
		t.Fatalf("delete IfMatch current: %v", err)
	}
	if _, _, err := ns.Get(ctx, "k"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("after the conditional delete: %v; want not found", err)
	}
	preconditionETag(t, "delete IfMatch on a missing key", ns.DeleteWithOptions(ctx, "k", &client.DeleteOptions{IfMatch: "*"}))

	// A re-created key never gets an ETag it had before.
	seen := map[string]bool{first.ETag: true, second.ETag: true, third.ETag: true, cur.ETag: true}
	again, err := ns.PutWithResult(ctx, "k", []byte("v1"), &client.PutOptions{IfAbsent: true, ContentType: "text/plain"})
	if err != nil || !again.Created || seen[again.ETag] {
		t.Fatalf("re-created key = %+v, %v; want created with an ETag never seen (%v)", again, err, seen)
	}
}

// TestUpdateCounts: concurrent Updates of one key lose nothing, fn's error
// comes back unchanged and writes nothing, a missing key is created, the
// content type is kept and UpdateOptions apply.
func TestUpdateCounts(t *testing.T) {
	c, _ := newClient(t)
	ns := readyNamespace(t, c, "update")
	ctx := context.Background()

	incr := func(old []byte, found bool) ([]byte, error) {
		n := 0
		if found {
			var err error
			if n, err = strconv.Atoi(string(old)); err != nil {
				return nil, err
			}
		}
		return []byte(strconv.Itoa(n + 1)), nil
	}
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := ns.Update(ctx, "counter", incr); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Update: %v", err)
	}
	v, _, err := ns.Get(ctx, "counter")
	if err != nil || string(v) != strconv.Itoa(workers*each) {
		t.Fatalf("counter = %q, %v; want %d", v, err, workers*each)
	}

	// fn's error is returned unchanged, and nothing is written.
	errStop := errors.New("stop")
	before, _ := ns.Info(ctx, "counter")
	if _, err := ns.Update(ctx, "counter", func([]byte, bool) ([]byte, error) { return nil, errStop }); err != errStop {
		t.Fatalf("Update with a failing fn: err = %v; want fn's error itself", err)
	}
	if after, _ := ns.Info(ctx, "counter"); after.ETag != before.ETag {
		t.Fatal("a failing fn wrote the key")
	}

	// The content type stays; the returned ETag is the key's.
	if _, err := ns.Put(ctx, "doc", []byte(`{"n":1}`), &client.PutOptions{ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
	etag, err := ns.Update(ctx, "doc", func(old []byte, found bool) ([]byte, error) {
		if !found || !bytes.Equal(old, []byte(`{"n":1}`)) {
			return nil, fmt.Errorf("fn got %q, %v", old, found)
		}
		return []byte(`{"n":2}`), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ns.GetWithOptions(ctx, "doc", nil)
	if err != nil || got.ContentType != "application/json" || got.ETag != etag || string(got.Value) != `{"n":2}` {
		t.Fatalf("after Update: %+v, %v; want {\"n\":2}, application/json, ETag %s", got, err, etag)
	}

	// A missing key: fn sees found false; options give type and TTL.
	_, err = ns.UpdateWithOptions(ctx, "new", func(old []byte, found bool) ([]byte, error) {
		if found || old != nil {
			return nil, fmt.Errorf("fn got %q, %v for a missing key", old, found)
		}
		return []byte("hello"), nil
	}, &client.UpdateOptions{ContentType: "text/plain", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	info, err := ns.Info(ctx, "new")
	if err != nil || info.ContentType != "text/plain" || info.ExpiresAt.IsZero() {
		t.Fatalf("created by Update: %+v, %v; want text/plain expiring", info, err)
	}
	if _, err := ns.UpdateWithOptions(ctx, "new", incr, &client.UpdateOptions{TTL: time.Millisecond}); !errors.Is(err, kv.ErrUnprocessable) {
		t.Fatalf("Update with a TTL under 1s: err = %v; want ErrUnprocessable", err)
	}
}

// TestUpdateGivesUp: with MaxAttempts 1 and a writer that always comes
// first, Update fails matching ErrPreconditionFailed and never overwrites.
func TestUpdateGivesUp(t *testing.T) {
	c, _ := newClient(t)
	ns := readyNamespace(t, c, "give-up")
	ctx := context.Background()
	if _, err := ns.Put(ctx, "k", []byte("0"), nil); err != nil {
		t.Fatal(err)
	}
	calls := 0
	_, err := ns.UpdateWithOptions(ctx, "k", func(old []byte, found bool) ([]byte, error) {
		calls++
		// Another writer changes the key between the read and the write.
		if _, err := ns.Put(ctx, "k", []byte("other "+strconv.Itoa(calls)), nil); err != nil {
			return nil, err
		}
		return []byte("mine"), nil
	}, &client.UpdateOptions{MaxAttempts: 3})
	if !errors.Is(err, client.ErrPreconditionFailed) || calls != 3 {
		t.Fatalf("Update against a writer that always wins: err = %v after %d calls; want ErrPreconditionFailed after 3", err, calls)
	}
	if v, _, _ := ns.Get(ctx, "k"); string(v) != "other 3" {
		t.Fatalf("value = %q; want the other writer's last value", v)
	}
}

func TestBatch(t *testing.T) {
	c, _ := newClient(t)
	ns := readyNamespace(t, c, "batch")
	ctx := context.Background()
	a, err := ns.PutWithResult(ctx, "a", []byte("A"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Put(ctx, "gone", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	binary := []byte{0, 0xff, 0xfe, 1}

	res, err := ns.Batch().
		Check("a", a.ETag).
		CheckAbsent("b").
		Get("a").
		Put("a", []byte("A2 <&>"), &client.PutOptions{ContentType: "text/plain"}).
		Put("bin", binary, nil).
		Delete("gone").
		Delete("never").
		Incr("n", 5).
		Get("missing").
		Run(ctx)
	if err != nil {
		t.Fatalf("atomic batch: %v", err)
	}
	r := res.Results
	if !res.Committed || len(r) != 9 {
		t.Fatalf("result = %+v; want committed with 9 results", res)
	}
	switch {
	case r[0].Op != "check" || !r[0].OK || r[1].Op != "check" || !r[1].OK:
		t.Errorf("checks: %+v %+v", r[0], r[1])
	case r[2].Op != "get" || r[2].Key != "a" || !r[2].Found || string(r[2].Value) != "A" || r[2].ETag != a.ETag:
		t.Errorf("get a: %+v; want A with ETag %s (the state before the batch)", r[2], a.ETag)
	case r[3].Op != "put" || r[3].Created || r[3].ETag == "" || r[3].ETag == a.ETag:
		t.Errorf("put a: %+v; want replaced with a new ETag", r[3])
	case !r[4].Created:
		t.Errorf("put bin: %+v; want created", r[4])
	case !r[5].Deleted || r[6].Deleted:
		t.Errorf("deletes: %+v %+v; want gone deleted, never not", r[5], r[6])
	case r[7].Op != "incr" || r[7].Counter != 5 || r[7].ETag == "":
		t.Errorf("incr: %+v; want 5 with an ETag", r[7])
	case r[8].Found || r[8].Value != nil:
		t.Errorf("get missing: %+v; want not found", r[8])
	}
	for _, res := range r {
		if res.Err != nil {
			t.Errorf("op %s %s: Err %v in a committed batch", res.Op, res.Key, res.Err)
		}
	}
	if v, ct, _ := ns.Get(ctx, "a"); string(v) != "A2 <&>" || ct != "text/plain" {
		t.Errorf("a = %q (%s)", v, ct)
	}
	if v, _, _ := ns.Get(ctx, "bin"); !bytes.Equal(v, binary) {
		t.Errorf("bin = %x; want %x", v, binary)
	}
	if v, ct, _ := ns.Get(ctx, "n"); string(v) != "5" || ct != "text/plain" {
		t.Errorf("n = %q (%s); want 5 as text/plain", v, ct)
	}
	got, err := ns.Batch().Get("bin").Get("a").Run(ctx)
	if err != nil || !bytes.Equal(got.Results[0].Value, binary) || string(got.Results[1].Value) != "A2 <&>" {
		t.Fatalf("batch gets = %+v, %v; want the binary and text values", got, err)
	}

	// A failed check: nothing written, the error names the op.
	_, err = ns.Batch().Put("c", []byte("C"), nil).Incr("n", 1).Check("a", a.ETag).Run(ctx)
	var opErr *client.OpError
	if !errors.As(err, &opErr) || opErr.Index != 2 || opErr.Op != "check" || opErr.Key != "a" {
		t.Fatalf("stale check: err = %v; want an *OpError for op 2 (check a)", err)
	}
	preconditionETag(t, "stale check", err)
	if _, _, err := ns.Get(ctx, "c"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("a failed batch wrote c: %v", err)
	}
	if v, _, _ := ns.Get(ctx, "n"); string(v) != "5" {
		t.Fatalf("a failed batch incremented n to %q", v)
	}
	// An invalid op fails the batch with its index, writing nothing.
	_, err = ns.Batch().Put("d", []byte("D"), nil).Put("bad:key", nil, nil).Run(ctx)
	if !errors.As(err, &opErr) || opErr.Index != 1 || !errors.Is(err, kv.ErrInvalid) {
		t.Fatalf("invalid key in a batch: err = %v; want an *OpError for op 1 matching ErrInvalid", err)
	}
	if _, _, err := ns.Get(ctx, "d"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("a refused batch wrote d: %v", err)
	}
	// incr on a value that is not an integer.
	if _, err := ns.Put(ctx, "text", []byte("abc"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Incr(ctx, "text", 1); !errors.Is(err, kv.ErrUnprocessable) {
		t.Fatalf("Incr of a non-integer: err = %v; want ErrUnprocessable", err)
	}
	// Refused before sending: empty, too many ops, conditions on a put.
	if _, err := ns.Batch().Run(ctx); !errors.Is(err, kv.ErrInvalid) {
		t.Errorf("empty batch: %v", err)
	}
	big := ns.Bulk()
	for i := range client.MaxBatchOps + 1 {
		big.Delete(fmt.Sprintf("k%d", i))
	}
	if _, err := big.Run(ctx); !errors.Is(err, kv.ErrInvalid) {
		t.Errorf("batch of %d ops: %v", big.Len(), err)
	}
	if _, err := ns.Batch().Put("a", nil, &client.PutOptions{IfMatch: "*"}).Run(ctx); !errors.As(err, &opErr) || !errors.Is(err, kv.ErrInvalid) {
		t.Errorf("batch put with IfMatch: %v", err)
	}
}

func TestBulk(t *testing.T) {
	c, _ := newClient(t)
	ns := readyNamespace(t, c, "bulk")
	ctx := context.Background()
	if _, err := ns.Put(ctx, "text", []byte("abc"), nil); err != nil {
		t.Fatal(err)
	}
	res, err := ns.Bulk().Put("x", []byte("1"), nil).Incr("text", 1).Incr("x", 2).Delete("text").Run(ctx)
	if err != nil {
		t.Fatalf("bulk: %v", err)
	}
	r := res.Results
	if r[0].Err != nil || !errors.Is(r[1].Err, kv.ErrUnprocessable) || r[2].Err != nil || r[2].Counter != 3 || !r[3].Deleted {
		t.Fatalf("bulk results = %+v; want the put, a failed incr of text, x incremented to 3, text deleted", r)
	}
	var opErr *client.OpError
	if err := res.Err(); !errors.As(err, &opErr) || opErr.Index != 1 || !errors.Is(err, kv.ErrUnprocessable) {
		t.Fatalf("res.Err() = %v; want op 1's failure", err)
	}
	if n, err := ns.Incr(ctx, "fresh", -7); err != nil || n != -7 {
		t.Fatalf("Incr of a missing key by -7 = %d, %v", n, err)
	}
}

// TestUpdateWithoutETags: against a service without conditional requests
// (the hosted one sends no ETag), Update writes nothing over an existing
// key, and says so.
func TestUpdateWithoutETags(t *testing.T) {
	var puts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			w.Header().Set("Content-Type", "application/octet-stream")
			io.WriteString(w, "41")
		case http.MethodPut:
			puts.Add(1)
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	ns := client.New(client.WithBaseURL(srv.URL), client.WithAPIKey("k")).Namespace("6ba7b810-9dad-41d1-80b4-00c04fd430c8")
	_, err := ns.Update(context.Background(), "n", func(old []byte, found bool) ([]byte, error) { return []byte("42"), nil })
	if err == nil || !strings.Contains(err.Error(), "no ETag") || puts.Load() != 0 {
		t.Fatalf("Update against a service without ETags: err = %v after %d PUTs; want an error and no PUT", err, puts.Load())
	}
}

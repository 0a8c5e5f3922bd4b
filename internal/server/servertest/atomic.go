package servertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/service"
)

var etagRe = regexp.MustCompile(`^"[0-9a-f]{16}"$`)

func wantETag(t testing.TB, what string, r response) string {
	t.Helper()
	e := r.header.Get("ETag")
	if !etagRe.MatchString(e) {
		t.Fatalf("%s: ETag %q is not a strong entity tag of kvd's (status %d, body %s)", what, e, r.status, r.body)
	}
	return e
}

// testConditionalRequests: ETags on every read and write, If-Match and
// If-None-Match on PUT, DELETE, GET and HEAD, 412 and 304, as API.md says.
func testConditionalRequests(t *testing.T, start StartFunc) {
	clock := kvdtest.NewClock(time.Date(2026, 6, 18, 14, 0, 0, 0, time.UTC))
	s := start(t, kvdtest.WithClock(clock.Now))
	c := newClient(t, s, s.Token)
	id := c.readyNS("etags")
	k := "/v2/storage/kvs/" + id + "/keys/session/1"

	r := c.do("PUT", k, []byte("v1"))
	wantStatus(t, r, http.StatusCreated)
	e1 := wantETag(t, "PUT", r)
	r = c.do("GET", k, nil)
	if string(r.body) != "v1" || wantETag(t, "GET", r) != e1 {
		t.Fatalf("GET after PUT: %s, ETag %s, want %s", r.body, r.header.Get("ETag"), e1)
	}
	if r = c.do("HEAD", k, nil); wantETag(t, "HEAD", r) != e1 {
		t.Fatalf("HEAD ETag %s, want %s", r.header.Get("ETag"), e1)
	}
	// The same bytes again: a new ETag.
	r = c.do("PUT", k, []byte("v1"))
	e2 := wantETag(t, "second PUT", r)
	if e2 == e1 {
		t.Fatalf("rewriting identical bytes kept the ETag %s", e1)
	}

	// GET/HEAD If-None-Match: 304 with the ETag and no body; weak
	// comparison; a list.
	for _, inm := range []string{e2, "W/" + e2, `"0000000000000001", ` + e2, "*"} {
		for _, m := range []string{"GET", "HEAD"} {
			r = c.do(m, k, nil, "If-None-Match", inm)
			if r.status != http.StatusNotModified || len(r.body) != 0 || r.header.Get("ETag") != e2 {
				t.Fatalf("%s If-None-Match %s: %d %q ETag %q; want 304, no body, %s", m, inm, r.status, r.body, r.header.Get("ETag"), e2)
			}
		}
	}
	if r = c.do("GET", k, nil, "If-None-Match", e1); r.status != 200 || string(r.body) != "v1" {
		t.Fatalf("GET If-None-Match of an old ETag: %d %s", r.status, r.body)
	}
	wantError(t, c.do("GET", k, nil, "If-None-Match", "not-a-tag"), 400, kv.EInvalid, "If-None-Match")

	// PUT If-Match: the current ETag (in a list too) writes; an old one is
	// 412 with the current ETag, and nothing is written.
	r = c.do("PUT", k, []byte("stale"), "If-Match", e1)
	wantError(t, r, http.StatusPreconditionFailed, kv.EPrecondition, e2)
	if r.header.Get("ETag") != e2 || r.header.Get("X-Should-Retry") != "false" {
		t.Fatalf("412 headers: ETag %q (want %s), x-should-retry %q", r.header.Get("ETag"), e2, r.header.Get("X-Should-Retry"))
	}
	r = c.do("PUT", k, []byte("v3"), "If-Match", e1+", "+e2)
	wantStatus(t, r, http.StatusOK)
	e3 := wantETag(t, "PUT If-Match", r)
	if r = c.do("GET", k, nil); string(r.body) != "v3" {
		t.Fatalf("value after conditional PUTs: %s", r.body)
	}
	wantStatus(t, c.do("PUT", k, []byte("v4"), "If-Match", "*"), http.StatusOK)
	wantError(t, c.do("PUT", k, []byte("x"), "If-Match", `W/`+e3), 412, kv.EPrecondition, "") // weak never matches
	// If-None-Match: * creates only.
	wantError(t, c.do("PUT", k, []byte("x"), "If-None-Match", "*"), 412, kv.EPrecondition, "")
	fresh := "/v2/storage/kvs/" + id + "/keys/fresh"
	wantStatus(t, c.do("PUT", fresh, []byte("f"), "If-None-Match", "*"), http.StatusCreated)
	r = c.do("PUT", "/v2/storage/kvs/"+id+"/keys/missing", []byte("x"), "If-Match", "*")
	wantError(t, r, 412, kv.EPrecondition, "does not exist")
	if r.header.Get("ETag") != "" {
		t.Fatalf("412 for a missing key carries ETag %q", r.header.Get("ETag"))
	}
	wantStatus(t, c.do("GET", "/v2/storage/kvs/"+id+"/keys/missing", nil), 404)

	// Malformed conditions: 400, nothing written.
	for _, h := range [][2]string{{"If-Match", "abc"}, {"If-Match", `"abc`}, {"If-Match", `"a", `}, {"If-Match", ""}, {"If-None-Match", e1}, {"If-None-Match", "**"}} {
		wantError(t, c.do("PUT", fresh, []byte("bad"), h[0], h[1]), 400, kv.EInvalid, h[0])
	}
	if r = c.do("GET", fresh, nil); string(r.body) != "f" {
		t.Fatalf("a refused PUT wrote %s", r.body)
	}

	// DELETE If-Match.
	cur := wantETag(t, "GET", c.do("GET", k, nil))
	wantError(t, c.do("DELETE", k, nil, "If-Match", e1), 412, kv.EPrecondition, cur)
	wantStatus(t, c.do("GET", k, nil), 200)
	wantError(t, c.do("DELETE", k, nil, "If-None-Match", "*"), 400, kv.EInvalid, "If-Match")
	wantStatus(t, c.do("DELETE", k, nil, "If-Match", cur), 200)
	wantStatus(t, c.do("GET", k, nil), 404)
	wantError(t, c.do("DELETE", k, nil, "If-Match", "*"), 412, kv.EPrecondition, "")

	// Re-created: an ETag never seen before.
	r = c.do("PUT", k, []byte("v1"))
	wantStatus(t, r, http.StatusCreated)
	if e := wantETag(t, "re-creation", r); e == e1 || e == e2 || e == e3 || e == cur {
		t.Fatalf("re-creation reused ETag %s", e)
	}

	// Listings carry the ETag GET gives.
	var l struct {
		Data []struct {
			Key  string `json:"key"`
			ETag string `json:"etag"`
		} `json:"data"`
	}
	r = c.do("GET", "/v2/storage/kvs/"+id+"/keys", nil)
	if err := json.Unmarshal(r.body, &l); err != nil || len(l.Data) != 2 {
		t.Fatalf("listing: %v %s", err, r.body)
	}
	for _, item := range l.Data {
		if g := c.do("GET", "/v2/storage/kvs/"+id+"/keys/"+item.Key, nil); g.header.Get("ETag") != item.ETag {
			t.Fatalf("listing shows %s with etag %s, GET %s", item.Key, item.ETag, g.header.Get("ETag"))
		}
	}

	// An expired key fails If-Match, and If-None-Match: * creates it.
	ttlKey := "/v2/storage/kvs/" + id + "/keys/ttl"
	r = c.do("PUT", ttlKey+"?ttl_secs=1", []byte("t"))
	et := wantETag(t, "PUT with TTL", r)
	clock.Advance(2 * time.Second)
	wantError(t, c.do("PUT", ttlKey, []byte("x"), "If-Match", et), 412, kv.EPrecondition, "does not exist")
	wantStatus(t, c.do("PUT", ttlKey, []byte("x"), "If-None-Match", "*"), http.StatusCreated)
}

type batchAnswer struct {
	Data struct {
		Committed bool `json:"committed"`
		Results   []struct {
			Op          string          `json:"op"`
			Key         string          `json:"key"`
			OK          *bool           `json:"ok"`
			Found       *bool           `json:"found"`
			Value       json.RawMessage `json:"value"`
			ValueBase64 *string         `json:"value_base64"`
			ContentType string          `json:"content_type"`
			Created     *bool           `json:"created"`
			Deleted     *bool           `json:"deleted"`
			ETag        string          `json:"etag"`
			Error       *struct {
				Code   string `json:"code"`
				Detail string `json:"detail"`
				Source struct {
					Pointer string `json:"pointer"`
				} `json:"source"`
			} `json:"error"`
		} `json:"results"`
	} `json:"data"`
}

func (c *client) batch(id string, body string) (response, batchAnswer) {
	c.t.Helper()
	r := c.do("POST", "/v2/storage/kvs/"+id+"/batch", []byte(body), "Content-Type", "application/json")
	var a batchAnswer
	if r.status == 200 {
		if err := json.Unmarshal(r.body, &a); err != nil {
			c.t.Fatalf("batch answer: %v: %s", err, r.body)
		}
	}
	return r, a
}

// wantPointer checks an error answer's source.pointer.
func wantPointer(t testing.TB, r response, status int, code kv.ErrorCode, pointer string) {
	t.Helper()
	wantError(t, r, status, code, "")
	var env kv.ErrorEnvelope
	json.Unmarshal(r.body, &env)
	if env.Errors[0].Source == nil || env.Errors[0].Source.Pointer != pointer {
		t.Fatalf("pointer of %s, want %s", r.body, pointer)
	}
}

// testBatch: an atomic batch as API.md shows it, and the bulk mode.
func testBatch(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("batch")
	keys := "/v2/storage/kvs/" + id + "/keys/"
	ea := wantETag(t, "PUT a", c.do("PUT", keys+"a", []byte("A")))
	wantStatus(t, c.do("PUT", keys+"c", []byte("C"), "Content-Type", "application/json"), 201)
	wantStatus(t, c.do("PUT", keys+"e", []byte("E")), 201)
	wantStatus(t, c.do("PUT", keys+"bin", []byte{0xff, 0x00}), 201)

	body := fmt.Sprintf(`{"atomic": true, "ops": [
		{"op": "check",  "key": "a", "etag": %q},
		{"op": "check",  "key": "b", "absent": true},
		{"op": "get",    "key": "c"},
		{"op": "get",    "key": "bin"},
		{"op": "get",    "key": "nothing"},
		{"op": "put",    "key": "a", "value": "text", "content_type": "application/json", "ttl_secs": 60},
		{"op": "put",    "key": "d", "value_base64": "AAE="},
		{"op": "delete", "key": "e"},
		{"op": "incr",   "key": "views/x", "by": 41},
		{"op": "incr",   "key": "views/x"}
	]}`, ea)
	r, a := c.batch(id, body)
	wantStatus(t, r, 200)
	res := a.Data.Results
	if !a.Data.Committed || len(res) != 10 {
		t.Fatalf("answer: %s", r.body)
	}
	if res[0].Op != "check" || res[0].Key != "a" || res[0].OK == nil || !*res[0].OK {
		t.Fatalf("check result: %s", r.body)
	}
	if g := res[2]; g.Found == nil || !*g.Found || string(g.Value) != `"C"` || g.ContentType != "application/json" || !etagRe.MatchString(g.ETag) {
		t.Fatalf("get c: %s", r.body)
	}
	if g := res[3]; g.ValueBase64 == nil || *g.ValueBase64 != "/wA=" || g.Value != nil {
		t.Fatalf("get of bytes that are not UTF-8: %s", r.body)
	}
	if g := res[4]; g.Found == nil || *g.Found {
		t.Fatalf("get of a missing key: %s", r.body)
	}
	if p := res[5]; p.Created == nil || *p.Created || !etagRe.MatchString(p.ETag) || p.ETag == ea {
		t.Fatalf("put a: %s", r.body)
	}
	if p := res[6]; p.Created == nil || !*p.Created {
		t.Fatalf("put d: %s", r.body)
	}
	if d := res[7]; d.Deleted == nil || !*d.Deleted {
		t.Fatalf("delete e: %s", r.body)
	}
	if n := res[9]; string(n.Value) != "42" || !etagRe.MatchString(n.ETag) {
		t.Fatalf("incr: %s", r.body)
	}
	g := c.do("GET", keys+"a", nil)
	if string(g.body) != "text" || g.header.Get("Content-Type") != "application/json" || g.header.Get("ETag") != res[5].ETag || g.header.Get("Kv-Expires-At") == "" {
		t.Fatalf("a after the batch: %s %v", g.body, g.header)
	}
	if g = c.do("GET", keys+"d", nil); !bytes.Equal(g.body, []byte{0, 1}) {
		t.Fatalf("d = %x", g.body)
	}
	if g = c.do("GET", keys+"views/x", nil); string(g.body) != "42" || g.header.Get("Content-Type") != "text/plain" {
		t.Fatalf("views/x = %s %s", g.body, g.header.Get("Content-Type"))
	}
	wantStatus(t, c.do("GET", keys+"e", nil), 404)

	// A failed check: 412 naming the op, nothing written.
	r, _ = c.batch(id, fmt.Sprintf(`{"ops":[{"op":"put","key":"z","value":"z"},{"op":"check","key":"a","etag":%q}]}`, ea))
	wantPointer(t, r, 412, kv.EPrecondition, "/ops/1")
	wantStatus(t, c.do("GET", keys+"z", nil), 404)
	// An incr of text: 422 naming the op, nothing written.
	r, _ = c.batch(id, `{"ops":[{"op":"delete","key":"a"},{"op":"incr","key":"c"}]}`)
	wantPointer(t, r, 422, kv.EUnprocessable, "/ops/1")
	wantStatus(t, c.do("GET", keys+"a", nil), 200)

	// Bulk: each op for itself, failures in their results.
	r, a = c.batch(id, `{"atomic": false, "ops":[
		{"op":"put","key":"bulk/1","value":"1"},
		{"op":"put","key":"bad:key","value":"x"},
		{"op":"incr","key":"c"},
		{"op":"check","key":"bulk/1","absent":true},
		{"op":"frob","key":"x"},
		{"op":"put","key":"bulk/2","value":"2"}
	]}`)
	wantStatus(t, r, 200)
	res = a.Data.Results
	if a.Data.Committed || len(res) != 6 {
		t.Fatalf("bulk answer: %s", r.body)
	}
	wantOpError := func(i int, code kv.ErrorCode, pointer string) {
		t.Helper()
		e := res[i].Error
		if e == nil || e.Code != string(code) || e.Source.Pointer != pointer || e.Detail == "" {
			t.Fatalf("bulk op %d: want error %s at %s: %s", i, code, pointer, r.body)
		}
	}
	wantOpError(1, kv.EInvalid, "/ops/1/key")
	wantOpError(2, kv.EUnprocessable, "/ops/2")
	wantOpError(3, kv.EPrecondition, "/ops/3")
	wantOpError(4, kv.EInvalid, "/ops/4/op")
	if res[0].Error != nil || res[5].Error != nil || res[0].Created == nil || !*res[0].Created {
		t.Fatalf("bulk successes: %s", r.body)
	}
	for _, k := range []string{"bulk/1", "bulk/2"} {
		wantStatus(t, c.do("GET", keys+k, nil), 200)
	}
}

// testBatchErrors: every malformed batch is a clear 4xx that writes
// nothing.
func testBatchErrors(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("batch-errors")
	keys := "/v2/storage/kvs/" + id + "/keys/"
	wantStatus(t, c.do("PUT", keys+"big", []byte("9223372036854775807")), 201)
	put := `{"op":"put","key":"written","value":"x"}`
	for _, tc := range []struct {
		body    string
		status  int
		code    kv.ErrorCode
		pointer string
	}{
		{``, 400, kv.EInvalid, ""},
		{`not json`, 400, kv.EInvalid, ""},
		{`[]`, 400, kv.EInvalid, ""},
		{`{"ops": []}`, 400, kv.EInvalid, "/ops"},
		{`{}`, 400, kv.EInvalid, "/ops"},
		{`{"ops": [` + put + `], "extra": 1}`, 400, kv.EInvalid, ""},
		{`{"ops": [` + put + `]} {}`, 400, kv.EInvalid, ""},
		{`{"atomic": "yes", "ops": [` + put + `]}`, 400, kv.EInvalid, "/atomic"},
		{`{"ops": [` + put + `, 7]}`, 400, kv.EInvalid, "/ops/1"},
		{`{"ops": [` + put + `, {"key":"k"}]}`, 400, kv.EInvalid, "/ops/1/op"},
		{`{"ops": [` + put + `, {"op":"get"}]}`, 400, kv.EInvalid, "/ops/1/key"},
		{`{"ops": [` + put + `, {"op":"get","key":"_reserved"}]}`, 400, kv.EInvalid, "/ops/1/key"},
		{`{"ops": [` + put + `, {"op":"get","key":"a:b"}]}`, 400, kv.EInvalid, "/ops/1/key"},
		{`{"ops": [` + put + `, {"op":"get","key":"k","value":"v"}]}`, 400, kv.EInvalid, "/ops/1/value"},
		{`{"ops": [` + put + `, {"op":"get","key":"k","bogus":1}]}`, 400, kv.EInvalid, "/ops/1"},
		{`{"ops": [` + put + `, {"op":"put","key":"k"}]}`, 400, kv.EInvalid, "/ops/1/value"},
		{`{"ops": [` + put + `, {"op":"put","key":"k","value":1}]}`, 400, kv.EInvalid, "/ops/1/value"},
		{`{"ops": [` + put + `, {"op":"put","key":"k","value":"a","value_base64":"YQ=="}]}`, 400, kv.EInvalid, "/ops/1/value_base64"},
		{`{"ops": [` + put + `, {"op":"put","key":"k","value_base64":"!!"}]}`, 400, kv.EInvalid, "/ops/1/value_base64"},
		{`{"ops": [` + put + `, {"op":"put","key":"k","value":"a","ttl_secs":0}]}`, 422, kv.EUnprocessable, "/ops/1/ttl_secs"},
		{`{"ops": [` + put + `, {"op":"put","key":"k","value":"a","ttl_secs":1.5}]}`, 422, kv.EUnprocessable, "/ops/1/ttl_secs"},
		{`{"ops": [` + put + `, {"op":"put","key":"k","value":"a","content_type":"a\u0001b"}]}`, 400, kv.EInvalid, "/ops/1/content_type"},
		{`{"ops": [` + put + `, {"op":"check","key":"k"}]}`, 400, kv.EInvalid, "/ops/1"},
		{`{"ops": [` + put + `, {"op":"check","key":"k","etag":"nope"}]}`, 400, kv.EInvalid, "/ops/1/etag"},
		{`{"ops": [` + put + `, {"op":"check","key":"k","etag":"*","absent":true}]}`, 400, kv.EInvalid, "/ops/1/absent"},
		{`{"ops": [` + put + `, {"op":"incr","key":"k","by":"1"}]}`, 400, kv.EInvalid, "/ops/1/by"},
		{`{"ops": [` + put + `, {"op":"incr","key":"k","by":1.5}]}`, 422, kv.EUnprocessable, "/ops/1/by"},
		{`{"ops": [` + put + `, {"op":"incr","key":"k","by":9223372036854775808}]}`, 422, kv.EUnprocessable, "/ops/1/by"},
		{`{"ops": [` + put + `, {"op":"incr","key":"big","by":1}]}`, 422, kv.EUnprocessable, "/ops/1"},
		{`{"ops": [` + put + `, {"op":"put","key":"k","value":"` + strings.Repeat("x", kv.MaxValueSize+1) + `"}]}`, 413, kv.ETooLarge, "/ops/1/value"},
	} {
		r, _ := c.batch(id, tc.body)
		if tc.pointer == "" {
			wantError(t, r, tc.status, tc.code, "")
		} else {
			wantPointer(t, r, tc.status, tc.code, tc.pointer)
		}
	}
	// 1,001 ops; a body over 16 MiB.
	ops := make([]string, 1001)
	for i := range ops {
		ops[i] = put
	}
	r, _ := c.batch(id, `{"ops":[`+strings.Join(ops, ",")+`]}`)
	wantPointer(t, r, 400, kv.EInvalid, "/ops")
	huge := `{"ops":[{"op":"put","key":"k","value":"` + strings.Repeat("x", 17<<20) + `"}]}`
	r, _ = c.batch(id, huge)
	wantError(t, r, 413, kv.ETooLarge, "")
	wantStatus(t, c.do("GET", keys+"written", nil), 404)
	wantError(t, c.do("GET", "/v2/storage/kvs/"+id+"/batch", nil), 405, kv.EInvalid, "POST")
	r, _ = c.batch(kv.NewID().String(), `{"ops":[`+put+`]}`)
	wantError(t, r, 404, kv.ENotFound, "")
	r, _ = c.batch(kv.NewID().String(), `{"atomic":false,"ops":[`+put+`]}`)
	wantError(t, r, 404, kv.ENotFound, "")
}

// testBatchScopes: a prefix-scoped token's batch with one op outside its
// prefixes writes nothing.
func testBatchScopes(t *testing.T, start StartFunc) {
	s := start(t)
	const org = "batch-scopes"
	full := newClient(t, s, s.NewToken(t, org))
	id := full.readyNS("scoped")
	scoped := newClient(t, s, s.NewScopedToken(t, service.TokenSpec{Org: org, Name: "flags", Prefixes: []string{"flags/"}}))
	r, _ := scoped.batch(id, `{"ops":[{"op":"put","key":"flags/a","value":"1"},{"op":"put","key":"other/b","value":"2"}]}`)
	wantPointer(t, r, 403, kv.EForbidden, "/ops/1/key")
	wantStatus(t, full.do("GET", "/v2/storage/kvs/"+id+"/keys/flags/a", nil), 404)
	readOnly := newClient(t, s, s.NewScopedToken(t, service.TokenSpec{Org: org, Name: "ro", Permissions: kv.ReadOnlyPermissions}))
	r, _ = readOnly.batch(id, `{"ops":[{"op":"get","key":"flags/a"},{"op":"incr","key":"n"}]}`)
	wantPointer(t, r, 403, kv.EForbidden, "/ops/1/key")
	r, a := readOnly.batch(id, `{"atomic":false,"ops":[{"op":"get","key":"flags/a"},{"op":"incr","key":"n"}]}`)
	wantStatus(t, r, 200)
	if a.Data.Results[0].Error != nil || a.Data.Results[1].Error == nil || a.Data.Results[1].Error.Code != string(kv.EForbidden) {
		t.Fatalf("bulk with a read-only token: %s", r.body)
	}
}

// testSessionCounter: the documentation's session counter, incremented
// by concurrent clients through If-Match and through incr, loses nothing.
func testSessionCounter(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("sessions")
	key := "/v2/storage/kvs/" + id + "/keys/session/abc"
	wantStatus(t, c.do("PUT", key, []byte(`{"user":"u1","views":0}`), "Content-Type", "application/json"), 201)
	const clients, each = 8, 20
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := newClient(t, s, s.Token)
			for range each {
				for attempt := 0; ; attempt++ {
					r := cc.do("GET", key, nil)
					var sess struct {
						User  string `json:"user"`
						Views int    `json:"views"`
					}
					if err := json.Unmarshal(r.body, &sess); err != nil {
						t.Errorf("session: %v %s", err, r.body)
						return
					}
					sess.Views++
					b, _ := json.Marshal(sess)
					w := cc.do("PUT", key, b, "If-Match", r.header.Get("ETag"), "Content-Type", "application/json")
					if w.status == 200 {
						break
					}
					if w.status != 412 || attempt > 1000 {
						t.Errorf("conditional PUT: %d %s", w.status, w.body)
						return
					}
				}
				if r, _ := cc.batch(id, `{"ops":[{"op":"incr","key":"views/abc"}]}`); r.status != 200 {
					t.Errorf("incr: %d %s", r.status, r.body)
					return
				}
			}
		}()
	}
	wg.Wait()
	r := c.do("GET", key, nil)
	if !strings.Contains(string(r.body), `"views":`+strconv.Itoa(clients*each)) {
		t.Fatalf("session after %d increments: %s", clients*each, r.body)
	}
	if r = c.do("GET", "/v2/storage/kvs/"+id+"/keys/views/abc", nil); string(r.body) != strconv.Itoa(clients*each) {
		t.Fatalf("counter after %d incrs: %s", clients*each, r.body)
	}
}

// testBatchUsage: conditional writes and batches are metered as API.md
// says.
func testBatchUsage(t *testing.T, start StartFunc) {
	clock := kvdtest.NewClock(time.Date(2026, 11, 15, 12, 0, 0, 0, time.UTC))
	s := start(t, kvdtest.WithClock(clock.Now))
	c := newClient(t, s, s.Token)
	id := c.readyNS("batch-metered")
	k := "/v2/storage/kvs/" + id + "/keys/k"
	stale := wantETag(t, "PUT", c.do("PUT", k, []byte("v")))              // 1 write
	wantStatus(t, c.do("PUT", k, []byte("w")), http.StatusOK)             // 1 write
	wantStatus(t, c.do("PUT", k, []byte("x"), "If-None-Match", "*"), 412) // 1 read
	wantStatus(t, c.do("PUT", k, []byte("x"), "If-Match", stale), 412)    // 1 read
	wantStatus(t, c.do("DELETE", k, nil, "If-Match", stale), 412)         // 1 read
	r, _ := c.batch(id, `{"ops":[{"op":"check","key":"k","etag":"*"},{"op":"get","key":"k"},{"op":"incr","key":"n"},{"op":"put","key":"p","value":"1"},{"op":"delete","key":"k"},{"op":"delete","key":"never"}]}`)
	wantStatus(t, r, 200) // 2 reads, 2 writes, 1 delete
	r, _ = c.batch(id, `{"ops":[{"op":"get","key":"p"},{"op":"put","key":"q","value":"1"},{"op":"check","key":"gone","etag":"*"}]}`)
	wantStatus(t, r, 412) // 2 reads, nothing else
	r, _ = c.batch(id, `{"atomic":false,"ops":[{"op":"get","key":"p"},{"op":"put","key":"b","value":"1"},{"op":"delete","key":"never"}]}`)
	wantStatus(t, r, 200) // 1 read, 1 write, 1 delete (of nothing, as alone)
	var rep struct {
		Data struct {
			Reads, Writes, Deletes int64
			StoredBytes            int64 `json:"stored_bytes"`
		}
	}
	r = c.do("GET", "/v2/storage/kvs/"+id+"/usage?month=2026-11", nil)
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatal(err)
	}
	if d := rep.Data; d.Reads != 8 || d.Writes != 5 || d.Deletes != 2 || d.StoredBytes != int64(len("n1p1b1")) {
		t.Fatalf("usage = %+v, want 8 reads, 5 writes, 2 deletes, 6 bytes: %s", d, r.body)
	}
}

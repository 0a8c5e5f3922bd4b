package servertest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
)

// The hostile-input suite: what a slow, lying, disconnecting or malicious
// client sends, over raw TCP. Each case states what kvd must do.

// rawConn is a client connection driven byte by byte.
type rawConn struct {
	t  testing.TB
	c  *net.TCPConn
	br *bufio.Reader
}

func dialRaw(t testing.TB, s *kvdtest.Server) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c.(*net.TCPConn), br: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("send: %v", err)
	}
}

// response reads one response; ok is false when the connection ended
// without one.
func (rc *rawConn) response() (resp *http.Response, body []byte, ok bool) {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return nil, nil, false
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(resp.Body)
	return resp, body, true
}

func (rc *rawConn) mustResponse() (*http.Response, []byte) {
	rc.t.Helper()
	resp, body, ok := rc.response()
	if !ok {
		rc.t.Fatal("the connection ended without a response")
	}
	return resp, body
}

// closedByServer reports whether the server has closed the connection
// (a read sees EOF or a reset within the deadline).
func (rc *rawConn) closedByServer() bool {
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := rc.br.ReadByte()
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// wantEnvelope checks that resp carries the error envelope with status
// and code, and the x-should-retry hint.
func wantEnvelope(t testing.TB, what string, resp *http.Response, body []byte, status int, code kv.ErrorCode) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("%s: status %d, want %d: %s", what, resp.StatusCode, status, body)
		return
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json: %s", what, ct, body)
	}
	var env kv.ErrorEnvelope
	if err := json.Unmarshal(body, &env); err != nil || len(env.Errors) != 1 {
		t.Errorf("%s: not an error envelope: %s", what, body)
		return
	}
	if env.Errors[0].Code != string(code) || env.Errors[0].Detail == "" {
		t.Errorf("%s: code %s detail %q, want code %s", what, env.Errors[0].Code, env.Errors[0].Detail, code)
	}
	if sr := resp.Header.Get("X-Should-Retry"); sr != "true" && sr != "false" {
		t.Errorf("%s: X-Should-Retry %q", what, sr)
	}
}

func putHead(s *kvdtest.Server, id, key string, framing string) string {
	return fmt.Sprintf("PUT /v2/storage/kvs/%s/keys/%s HTTP/1.1\r\nHost: kvd\r\nAuthorization: Bearer %s\r\nContent-Type: text/plain\r\n%s\r\n", id, key, s.Token, framing)
}

// testCutOffBodies: a value is stored only when its body arrived whole.
// A body cut off by a half-close is answered 400 (the client can still
// hear); one cut off by a reset is not answered; either way nothing is
// written: an existing value keeps its old bytes and a new key is not
// created.
func testCutOffBodies(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("cutoff")
	for _, framing := range []string{"chunked", "length"} {
		for _, ending := range []string{"half-close", "reset"} {
			name := framing + "/" + ending
			old := "old-" + framing + "-" + ending
			fresh := "new-" + framing + "-" + ending
			wantStatus(t, c.do("PUT", "/v2/storage/kvs/"+id+"/keys/"+old, []byte("the old value")), http.StatusCreated)
			for _, key := range []string{old, fresh} {
				rc := dialRaw(t, s)
				if framing == "chunked" {
					rc.send(putHead(s, id, key, "Transfer-Encoding: chunked\r\n") + "5\r\npart1\r\n")
				} else {
					rc.send(putHead(s, id, key, "Content-Length: 100\r\n") + "part1")
				}
				if ending == "reset" {
					rc.c.SetLinger(0)
					rc.c.Close()
				} else {
					rc.c.CloseWrite()
					resp, body, ok := rc.response()
					if !ok {
						t.Errorf("%s %s: no answer after a half-close", name, key)
					} else {
						wantEnvelope(t, name+" "+key, resp, body, http.StatusBadRequest, kv.EInvalid)
					}
				}
			}
			// Whatever the server made of it is done once a later request
			// on the same key is answered: key operations are serialized.
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) && s.InFlight() > 0 {
				time.Sleep(10 * time.Millisecond)
			}
			if r := c.do("GET", "/v2/storage/kvs/"+id+"/keys/"+old, nil); r.status != 200 || string(r.body) != "the old value" {
				t.Errorf("%s: the old value became %d %q", name, r.status, r.body)
			}
			if r := c.do("GET", "/v2/storage/kvs/"+id+"/keys/"+fresh, nil); r.status != http.StatusNotFound {
				t.Errorf("%s: a key was created from a cut-off body: %d %q", name, r.status, r.body)
			}
		}
	}
	// A chunked body that is complete is stored, and the connection stays
	// usable.
	rc := dialRaw(t, s)
	rc.send(putHead(s, id, "whole", "Transfer-Encoding: chunked\r\n") + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	if resp, body := rc.mustResponse(); resp.StatusCode != http.StatusCreated {
		t.Fatalf("whole chunked PUT: %d %s", resp.StatusCode, body)
	}
	rc.send(fmt.Sprintf("GET /v2/storage/kvs/%s/keys/whole HTTP/1.1\r\nHost: kvd\r\nAuthorization: Bearer %s\r\n\r\n", id, s.Token))
	if resp, body := rc.mustResponse(); resp.StatusCode != 200 || string(body) != "hello world" {
		t.Fatalf("GET after a chunked PUT on the same connection: %d %q", resp.StatusCode, body)
	}
}

// testMalformedRequests: every malformed query string, escape or framing
// gets a 400 (a malformed ttl_secs 422) in the envelope, never a silent
// reinterpretation and never net/http's plain text.
func testMalformedRequests(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("malformed")
	wantStatus(t, c.do("PUT", "/v2/storage/kvs/"+id+"/keys/k", []byte("v")), http.StatusCreated)
	keys := "/v2/storage/kvs/" + id + "/keys"
	for _, tc := range []struct {
		method, target string
		status         int
		code           kv.ErrorCode
	}{
		{"PUT", keys + "/a?ttl_secs=2;", 422, kv.EUnprocessable},
		{"PUT", keys + "/a?ttl_secs=%zz", 422, kv.EUnprocessable},
		{"PUT", keys + "/a?ttl_secs=1%", 422, kv.EUnprocessable},
		{"PUT", keys + "/a?ttl_secs=5&ttl_secs=6", 422, kv.EUnprocessable},
		{"PUT", keys + "/a?ttl_secs=", 422, kv.EUnprocessable},
		{"PUT", keys + "/a?x=%zz", 400, kv.EInvalid},
		{"PUT", keys + "/a?%zz=1", 400, kv.EInvalid},
		{"GET", keys + "?cursor=%zz", 400, kv.EInvalid},
		{"GET", keys + "?limit=%zz", 400, kv.EInvalid},
		{"GET", keys + "?limit=5&limit=5", 400, kv.EInvalid},
		{"GET", keys + "?prefix=a;b", 400, kv.EInvalid},
		{"GET", keys + "?prefix=a&prefix=b", 400, kv.EInvalid},
		{"GET", "/v2/storage/kvs?page[number]=%zz", 400, kv.EInvalid},
		{"GET", "/v2/storage/kvs?page[size]=1;", 400, kv.EInvalid},
		{"GET", "/v2/storage/kvs/" + id + "?a=%", 400, kv.EInvalid},
		{"GET", keys + "/k?a=%", 400, kv.EInvalid},
		{"DELETE", keys + "/k?a=%", 400, kv.EInvalid},
		{"GET", keys + "/a%zzb", 400, kv.EInvalid},
		{"GET", keys + "/a%", 400, kv.EInvalid},
		{"PUT", keys + "/a%", 400, kv.EInvalid},
		{"GET", "/v2/storage/kvs/usage?month=%zz", 400, kv.EInvalid},
	} {
		what := tc.method + " " + tc.target
		rc := dialRaw(t, s)
		rc.send(fmt.Sprintf("%s %s HTTP/1.1\r\nHost: kvd\r\nAuthorization: Bearer %s\r\nContent-Length: 1\r\n\r\nv", tc.method, tc.target, s.Token))
		resp, body := rc.mustResponse()
		wantEnvelope(t, what, resp, body, tc.status, tc.code)
	}
	// Nothing was written by the refused PUTs.
	if r := c.do("GET", keys+"/a", nil); r.status != http.StatusNotFound {
		t.Errorf("a refused PUT stored a: %d %q", r.status, r.body)
	}
	// Errors net/http makes by itself: framing, an oversized header, an
	// unsupported transfer coding, a bad version, a missing Host.
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"bad request line", "GET\r\n\r\n", 400},
		{"bad header line", "GET /v2/storage/kvs HTTP/1.1\r\nHost: kvd\r\nno colon here\r\n\r\n", 400},
		{"missing Host", "GET /v2/storage/kvs HTTP/1.1\r\n\r\n", 400},
		{"unsupported transfer coding", "PUT " + keys + "/a HTTP/1.1\r\nHost: kvd\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"bad version", "GET /v2/storage/kvs HTTP/2.7\r\nHost: kvd\r\n\r\n", 505},
		{"oversized header", "GET /v2/storage/kvs HTTP/1.1\r\nHost: kvd\r\nX-Big: " + strings.Repeat("x", 200<<10) + "\r\n\r\n", 431},
		{"bad Content-Length", "PUT " + keys + "/a HTTP/1.1\r\nHost: kvd\r\nContent-Length: -5\r\n\r\n", 400},
		{"two Content-Lengths", "PUT " + keys + "/a HTTP/1.1\r\nHost: kvd\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"unsupported Expect", "PUT " + keys + "/a HTTP/1.1\r\nHost: kvd\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nv", 417},
	} {
		rc := dialRaw(t, s)
		rc.send(tc.raw)
		resp, body, ok := rc.response()
		if !ok {
			t.Errorf("%s: no response", tc.name)
			continue
		}
		code := kv.EInvalid
		if tc.status == 431 {
			code = kv.ETooLarge
		}
		wantEnvelope(t, tc.name, resp, body, tc.status, code)
	}
}

// testContentLengthAndChunked: a request carrying both Content-Length and
// Transfer-Encoding is refused and its connection closed, so that bytes
// a proxy in front took for the next request are never served.
func testContentLengthAndChunked(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("smuggle")
	rc := dialRaw(t, s)
	smuggled := fmt.Sprintf("DELETE /v2/storage/kvs/%s HTTP/1.1\r\nHost: kvd\r\nAuthorization: Bearer %s\r\n\r\n", id, s.Token)
	body := "0\r\n\r\n" + smuggled
	rc.send(putHead(s, id, "k", fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(body))) + body)
	resp, rbody := rc.mustResponse()
	wantEnvelope(t, "CL+TE", resp, rbody, http.StatusBadRequest, kv.EInvalid)
	if !resp.Close {
		t.Error("CL+TE: the connection is kept open")
	}
	if !rc.closedByServer() {
		t.Error("CL+TE: the server did not close the connection")
	}
	if ns := decodeNS(t, c.do("GET", "/v2/storage/kvs/"+id, nil)); ns.Status != "provision_ok" {
		t.Fatalf("the request smuggled after the chunked body was served: namespace is %s", ns.Status)
	}
	if r := c.do("GET", "/v2/storage/kvs/"+id+"/keys/k", nil); r.status != http.StatusNotFound {
		t.Fatalf("the refused PUT stored its value: %d", r.status)
	}
}

// testFairBodies: one organization trickling large bodies at the required
// pace cannot hold the memory for bodies while another organization's
// value waits: the other's PUT is stored, and some of the first's are
// answered 503 (and their connections closed) to make room.
func testFairBodies(t *testing.T, start StartFunc) {
	const budgetValues = 4
	s := start(t, kvdtest.WithConfig(func(c *server.Config) {
		c.BodyBudget = budgetValues*(1<<20) + budgetValues
		c.SlowBody = 5 * time.Second
	}))
	c := newClient(t, s, s.Token)
	id := c.readyNS("hog")
	other := newClient(t, s, s.NewToken(t, "other-org"))
	otherID := other.readyNS("victim")

	// The hog fills the budget with 1 MiB values sent at 16 KiB/s, well
	// within the pace.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	statuses := make(chan int, 2*budgetValues)
	for i := range 2 * budgetValues {
		rc := dialRaw(t, s)
		rc.send(putHead(s, id, fmt.Sprintf("hog-%d", i), fmt.Sprintf("Content-Length: %d\r\n", 1<<20)))
		wg.Add(2)
		go func() { // the answer is read as soon as it comes
			defer wg.Done()
			rc.c.SetReadDeadline(time.Now().Add(60 * time.Second))
			if resp, err := http.ReadResponse(rc.br, nil); err == nil {
				statuses <- resp.StatusCode
				resp.Body.Close()
			}
			rc.c.Close()
		}()
		go func() {
			defer wg.Done()
			chunk := bytes.Repeat([]byte("h"), 4<<10)
			for {
				select {
				case <-stop:
					rc.c.Close()
					return
				case <-time.After(250 * time.Millisecond):
				}
				if _, err := rc.c.Write(chunk); err != nil {
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(time.Second) // the hog holds the whole budget by now

	value := bytes.Repeat([]byte("v"), 65537)
	r := other.do("PUT", "/v2/storage/kvs/"+otherID+"/keys/fair", value)
	if r.status != http.StatusCreated {
		t.Fatalf("another organization's 65,537-byte PUT while one hogs the body budget: %d %s", r.status, r.body)
	}
	if got := other.do("GET", "/v2/storage/kvs/"+otherID+"/keys/fair", nil); !bytes.Equal(got.body, value) {
		t.Fatalf("the stored value differs: %d bytes", len(got.body))
	}
	select {
	case st := <-statuses:
		if st != http.StatusServiceUnavailable {
			t.Errorf("a preempted hog PUT got %d, want 503", st)
		}
	case <-time.After(20 * time.Second):
		t.Error("no hog PUT was preempted to make room")
	}
}

// testRetryHints: every error answer carries x-should-retry, which the
// official SDKs follow: true on 429, 503 and a namespace not ready yet,
// false on every other 4xx (a duplicate name is not retried).
func testRetryHints(t *testing.T, start StartFunc) {
	s := start(t, kvdtest.WithoutBackground(), kvdtest.WithConfig(func(c *server.Config) { c.RateLimit = 20 }))
	c := newClient(t, s, s.Token)
	pending := decodeNS(t, c.do("POST", "/v2/storage/kvs", []byte(`{"name":"hints"}`)))
	for _, tc := range []struct {
		what   string
		r      response
		status int
		retry  string
	}{
		{"not ready", c.do("GET", "/v2/storage/kvs/"+pending.ID+"/keys/k", nil), 409, "true"},
		{"duplicate name", c.do("POST", "/v2/storage/kvs", []byte(`{"name":"hints"}`)), 409, "false"},
		{"missing namespace", c.do("GET", "/v2/storage/kvs/"+kv.NewID().String(), nil), 404, "false"},
		{"bad key", c.do("GET", "/v2/storage/kvs/"+pending.ID+"/keys/a:b", nil), 400, "false"},
		{"bad ttl", c.do("PUT", "/v2/storage/kvs/"+pending.ID+"/keys/k?ttl_secs=0", []byte("v")), 422, "false"},
		{"unauthorized", newClient(t, s, "nope").do("GET", "/v2/storage/kvs", nil), 401, "false"},
		{"method", c.do("PATCH", "/v2/storage/kvs", nil), 405, "false"},
	} {
		if tc.r.status != tc.status || tc.r.header.Get("X-Should-Retry") != tc.retry {
			t.Errorf("%s: %d x-should-retry %q, want %d %q", tc.what, tc.r.status, tc.r.header.Get("X-Should-Retry"), tc.status, tc.retry)
		}
	}
	limited := newClient(t, s, s.NewToken(t, "limited"))
	var last response
	for range 100 {
		if last = limited.do("GET", "/v2/storage/kvs", nil); last.status == 429 {
			break
		}
	}
	if last.status != 429 || last.header.Get("X-Should-Retry") != "true" {
		t.Errorf("rate limited: %d x-should-retry %q", last.status, last.header.Get("X-Should-Retry"))
	}
}

package servertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
	"github.com/edgekv/kv/internal/service"
)

// sse is one event of a watch stream as a client reads it.
type sse struct {
	id, event string
	data      map[string]any
}

func (e sse) rev(t testing.TB) uint64 {
	t.Helper()
	r, ok := e.data["revision"].(float64)
	if !ok {
		t.Fatalf("event %s has no revision: %v", e.event, e.data)
	}
	return uint64(r)
}

// stream is an open watch.
type stream struct {
	t      testing.TB
	resp   *http.Response
	events chan sse
	errs   chan error
	cancel context.CancelFunc
}

// openWatch opens a watch with the query q and extra headers (name,
// value, ...), and fails unless it answers 200 text/event-stream.
func (c *client) openWatch(id, q string, hdr ...string) *stream {
	c.t.Helper()
	s, r := c.tryWatch(id, q, hdr...)
	if s == nil {
		c.t.Fatalf("watch ?%s: %d %s", q, r.status, r.body)
	}
	return s
}

// tryWatch opens a watch; when it does not answer 200 it returns the
// answer instead.
func (c *client) tryWatch(id, q string, hdr ...string) (*stream, response) {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/v2/storage/kvs/"+id+"/watch?"+q, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		cancel()
		c.t.Fatalf("watch: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		var b strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&b)
		return nil, response{status: resp.StatusCode, header: resp.Header, body: []byte(b.String())}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		cancel()
		c.t.Fatalf("watch Content-Type %q", ct)
	}
	s := &stream{t: c.t, resp: resp, events: make(chan sse, 10000), errs: make(chan error, 1), cancel: cancel}
	go s.read()
	c.t.Cleanup(s.close)
	return s, response{status: 200}
}

func (s *stream) read() {
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var ev sse
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.event != "" {
				s.events <- ev
			}
			ev = sse{}
		case strings.HasPrefix(line, ":"):
			if strings.TrimSpace(line) != ": ping" {
				s.errs <- fmt.Errorf("unexpected comment %q", line)
				return
			}
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[6:]), &ev.data); err != nil {
				s.errs <- fmt.Errorf("data %q: %v", line, err)
				return
			}
		default:
			s.errs <- fmt.Errorf("unexpected line %q", line)
			return
		}
	}
	s.errs <- fmt.Errorf("stream ended: %v", sc.Err())
}

func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next returns the next event, failing after 10 s without one.
func (s *stream) next() sse {
	s.t.Helper()
	select {
	case e := <-s.events:
		return e
	case err := <-s.errs:
		s.t.Fatalf("watch: %v", err)
	case <-time.After(10 * time.Second):
		s.t.Fatalf("watch: no event within 10 s")
	}
	return sse{}
}

// ended waits for the stream to end (within d), failing if an event
// comes first.
func (s *stream) ended(d time.Duration) {
	s.t.Helper()
	select {
	case e := <-s.events:
		s.t.Fatalf("an event after the stream should have ended: %+v", e)
	case <-s.errs:
	case <-time.After(d):
		s.t.Fatalf("the stream did not end within %v", d)
	}
}

// quiet fails if an event comes within d.
func (s *stream) quiet(d time.Duration) {
	s.t.Helper()
	select {
	case e := <-s.events:
		s.t.Fatalf("unexpected event %+v", e)
	case err := <-s.errs:
		s.t.Fatalf("watch: %v", err)
	case <-time.After(d):
	}
}

// want reads the next event and checks its kind and key.
func (s *stream) want(event, key string) sse {
	s.t.Helper()
	e := s.next()
	if e.event != event || key != "" && e.data["key"] != key {
		s.t.Fatalf("event %s %v, want %s %q", e.event, e.data, event, key)
	}
	if e.event != "ready" && e.event != "overflow" && e.id != strconv.FormatUint(e.rev(s.t), 10) {
		s.t.Fatalf("event id %q, revision %v", e.id, e.data["revision"])
	}
	return e
}

// testWatch: the stream's events for puts, deletes and batches, in order
// with increasing ids and the writes' ETags; resuming with Last-Event-ID
// and since without gap or duplicate; values; the errors.
func testWatch(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("watch")
	key := func(k string) string { return "/v2/storage/kvs/" + id + "/keys/" + k }

	w := c.openWatch(id, "")
	ready := w.want("ready", "")
	r0 := ready.rev(t)

	r := c.do("PUT", key("a"), []byte(`{"n":1}`), "Content-Type", "application/json")
	wantStatus(t, r, http.StatusCreated)
	etagA := r.header.Get("ETag")
	wantStatus(t, c.do("PUT", key("b"), []byte("bee")), http.StatusCreated)
	wantStatus(t, c.do("DELETE", key("a"), nil), http.StatusOK)
	wantStatus(t, c.do("DELETE", key("never"), nil), http.StatusOK)
	wantStatus(t, c.do("POST", "/v2/storage/kvs/"+id+"/batch", []byte(`{"ops":[{"op":"put","key":"c","value":"see"},{"op":"incr","key":"n","by":2}]}`), "Content-Type", "application/json"), http.StatusOK)

	var got []sse
	for _, want := range []struct{ event, key string }{{"put", "a"}, {"put", "b"}, {"delete", "a"}, {"put", "c"}, {"put", "n"}} {
		got = append(got, w.want(want.event, want.key))
	}
	pa := got[0]
	if pa.data["etag"] != etagA || pa.data["size_bytes"] != float64(7) || pa.data["content_type"] != "application/json" || pa.data["expires_at"] != nil {
		t.Fatalf("put event of a: %v (the PUT's ETag %s)", pa.data, etagA)
	}
	if _, ok := pa.data["value"]; ok {
		t.Fatalf("a put event without values=true carries the value: %v", pa.data)
	}
	if _, err := time.Parse(time.RFC3339Nano, pa.data["updated_at"].(string)); err != nil {
		t.Fatalf("updated_at: %v", err)
	}
	if d := got[2].data; len(d) != 2 {
		t.Fatalf("a delete event carries %v; want key and revision", d)
	}
	prev := r0
	for _, e := range got {
		if e.rev(t) <= prev {
			t.Fatalf("revisions not increasing: %d after %d", e.rev(t), prev)
		}
		prev = e.rev(t)
	}
	w.quiet(200 * time.Millisecond)
	w.close()

	// Resume after the second event, with Last-Event-ID and with since:
	// the rest, exactly.
	for _, how := range [][]string{{"", "Last-Event-ID", got[1].id}, {"since=" + got[1].id}, {"since=1&snapshot=true", "Last-Event-ID", got[1].id}} {
		rw := c.openWatch(id, how[0], how[1:]...)
		for _, e := range got[2:] {
			if g := rw.next(); g.id != e.id || g.event != e.event {
				t.Fatalf("resumed %v: %s %s, want %s %s", how, g.event, g.id, e.event, e.id)
			}
		}
		rw.quiet(200 * time.Millisecond)
		rw.close()
	}

	// A watch resumed with nothing to send answers its headers at once.
	headers := make(chan *stream, 1)
	go func() {
		st, _ := c.tryWatch(id, "since="+got[len(got)-1].id)
		headers <- st
	}()
	select {
	case st := <-headers:
		if st == nil {
			t.Fatal("a watch resumed from the last revision was refused")
		}
		st.close()
	case <-time.After(5 * time.Second):
		t.Fatal("a watch resumed with nothing to send sent no headers within 5 s")
	}

	// values=true: text as value, bytes as value_base64, none over 64 KiB.
	vw := c.openWatch(id, "values=true&prefix=v/")
	vw.want("ready", "")
	wantStatus(t, c.do("PUT", key("v/text"), []byte("héllo")), http.StatusCreated)
	wantStatus(t, c.do("PUT", key("v/bin"), []byte{0xff, 0, 1}), http.StatusCreated)
	wantStatus(t, c.do("PUT", key("v/big"), []byte(strings.Repeat("x", 64<<10+1))), http.StatusCreated)
	wantStatus(t, c.do("PUT", key("other"), []byte("not under the prefix")), http.StatusCreated)
	wantStatus(t, c.do("PUT", key("v/last"), []byte("z")), http.StatusCreated)
	if e := vw.want("put", "v/text"); e.data["value"] != "héllo" {
		t.Fatalf("text value: %v", e.data)
	}
	if e := vw.want("put", "v/bin"); e.data["value_base64"] != "/wAB" {
		t.Fatalf("binary value: %v", e.data)
	}
	if e := vw.want("put", "v/big"); e.data["value"] != nil || e.data["value_base64"] != nil || e.data["size_bytes"] != float64(64<<10+1) {
		t.Fatalf("a value over 64 KiB: %v", e.data)
	}
	vw.want("put", "v/last")

	// Snapshot: every live key under the prefix, then ready, then changes.
	sw := c.openWatch(id, "snapshot=true&values=true")
	seen := map[string]string{}
	var readyRev uint64
	for readyRev == 0 {
		e := sw.next()
		switch e.event {
		case "put":
			v, _ := e.data["value"].(string)
			seen[e.data["key"].(string)] = v
		case "ready":
			readyRev = e.rev(t)
		default:
			t.Fatalf("snapshot: event %s", e.event)
		}
	}
	if len(seen) != 8 || seen["b"] != "bee" || seen["n"] != "2" || seen["c"] != "see" {
		t.Fatalf("snapshot: %v", seen)
	}
	wantStatus(t, c.do("PUT", key("after"), []byte("x")), http.StatusCreated)
	if e := sw.want("put", "after"); e.rev(t) <= readyRev {
		t.Fatalf("a change after the snapshot at %d has revision %d", readyRev, e.rev(t))
	}

	// Errors.
	base := "/v2/storage/kvs/" + id + "/watch"
	wantError(t, c.do("GET", base+"?since=abc", nil), 400, kv.EInvalid, "since")
	wantError(t, c.do("GET", base+"?since=-1", nil), 400, kv.EInvalid, "since")
	wantError(t, c.do("GET", base+"?snapshot=yes", nil), 400, kv.EInvalid, "snapshot")
	wantError(t, c.do("GET", base+"?values=1", nil), 400, kv.EInvalid, "values")
	wantError(t, c.do("GET", base, nil, "Last-Event-ID", "x"), 400, kv.EInvalid, "Last-Event-ID")
	wantError(t, c.do("GET", base+"?prefix="+strings.Repeat("p", 1025), nil), 400, kv.EInvalid, "prefix")
	if r := c.do("POST", base, nil); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("POST watch: %d", r.status)
	}
	wantError(t, c.do("GET", "/v2/storage/kvs/"+kv.NewID().String()+"/watch", nil), 404, kv.ENotFound, "")
	other := newClient(t, s, s.NewToken(t, "other-org"))
	wantError(t, other.do("GET", base, nil), 404, kv.ENotFound, "")
	if r := newClient(t, s, "kvd_wrong").do("GET", base, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("a wrong token: %d", r.status)
	}
}

// testWatchScopes: a watch needs keys:read; a prefix-scoped token watches
// only under its prefixes; a namespace-scoped one only its namespaces; a
// revoked or expired token's stream ends within a few seconds.
func testWatchScopes(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("scoped")
	other := c.readyNS("unscoped")
	nsID, err := kv.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	scoped := newClient(t, s, s.NewScopedToken(t, service.TokenSpec{Org: kv.DefaultOrg, Prefixes: []string{"team/"}}))
	wantError(t, scoped.do("GET", "/v2/storage/kvs/"+id+"/watch", nil), 403, kv.EForbidden, "prefix")
	wantError(t, scoped.do("GET", "/v2/storage/kvs/"+id+"/watch?prefix=other/", nil), 403, kv.EForbidden, "prefix")
	w := scoped.openWatch(id, "prefix=team/a")
	w.want("ready", "")
	wantStatus(t, c.do("PUT", "/v2/storage/kvs/"+id+"/keys/secret", []byte("s")), http.StatusCreated)
	wantStatus(t, c.do("PUT", "/v2/storage/kvs/"+id+"/keys/team/ab", []byte("t")), http.StatusCreated)
	w.want("put", "team/ab")

	noRead := newClient(t, s, s.NewScopedToken(t, service.TokenSpec{Org: kv.DefaultOrg, Permissions: []kv.Permission{kv.PermKeysWrite}}))
	wantError(t, noRead.do("GET", "/v2/storage/kvs/"+id+"/watch", nil), 403, kv.EForbidden, "keys:read")
	nsScoped := newClient(t, s, s.NewScopedToken(t, service.TokenSpec{Org: kv.DefaultOrg, Namespaces: []kv.ID{nsID}}))
	wantError(t, nsScoped.do("GET", "/v2/storage/kvs/"+other+"/watch", nil), 404, kv.ENotFound, "")

	// Revocation ends an open stream.
	secret, rec, err := s.Service.CreateToken(context.Background(), service.TokenSpec{Org: kv.DefaultOrg})
	if err != nil {
		t.Fatal(err)
	}
	rw := newClient(t, s, secret).openWatch(id, "")
	rw.want("ready", "")
	if _, err := s.Service.RevokeToken(context.Background(), rec.ID); err != nil {
		t.Fatal(err)
	}
	rw.ended(5 * time.Second)

	// So does the token's expiry, not before it.
	secret, _, err = s.Service.CreateToken(context.Background(), service.TokenSpec{Org: kv.DefaultOrg, ExpiresIn: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	ew := newClient(t, s, secret).openWatch(id, "")
	ew.want("ready", "")
	ew.ended(6 * time.Second)
	if took := time.Since(opened); took < 1500*time.Millisecond {
		t.Fatalf("the stream of a token expiring in 2 s ended after %v", took)
	}
}

// testWatchExpiry: a key's expiry reaches watchers as an expire event,
// within about a second of its instant.
func testWatchExpiry(t *testing.T, start StartFunc) {
	clock := kvdtest.NewClock(time.Date(2026, 6, 18, 14, 0, 0, 0, time.UTC))
	s := start(t, kvdtest.WithClock(clock.Now), kvdtest.WithConfig(func(c *server.Config) { c.Lifecycle.Sweep = 50 * time.Millisecond }))
	c := newClient(t, s, s.Token)
	id := c.readyNS("expiry")
	w := c.openWatch(id, "")
	w.want("ready", "")
	wantStatus(t, c.do("PUT", "/v2/storage/kvs/"+id+"/keys/t?ttl_secs=60", []byte("soon")), http.StatusCreated)
	put := w.want("put", "t")
	if put.data["expires_at"] == nil {
		t.Fatalf("put with a ttl: expires_at null: %v", put.data)
	}
	w.quiet(200 * time.Millisecond)
	clock.Advance(61 * time.Second)
	if e := w.want("expire", "t"); e.rev(t) <= put.rev(t) {
		t.Fatalf("the expiry's revision %d is not after the put's %d", e.rev(t), put.rev(t))
	}
}

// testWatchHistory: a watch resuming from before what the feed keeps gets
// 410 with meta.oldest_revision, and resumes from that revision.
func testWatchHistory(t *testing.T, start StartFunc) {
	clock := kvdtest.NewClock(time.Date(2026, 6, 18, 14, 0, 0, 0, time.UTC))
	s := start(t, kvdtest.WithClock(clock.Now), kvdtest.WithConfig(func(c *server.Config) {
		c.Lifecycle.WatchRetention = time.Hour
		c.Lifecycle.CompactEvery = 50 * time.Millisecond
	}))
	c := newClient(t, s, s.Token)
	id := c.readyNS("history")
	w := c.openWatch(id, "")
	r0 := w.want("ready", "").rev(t)
	wantStatus(t, c.do("PUT", "/v2/storage/kvs/"+id+"/keys/old", []byte("o")), http.StatusCreated)
	old := w.want("put", "old").rev(t)
	w.close()
	clock.Advance(2 * time.Hour)
	wantStatus(t, c.do("PUT", "/v2/storage/kvs/"+id+"/keys/new", []byte("n")), http.StatusCreated)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, r := c.tryWatch(id, fmt.Sprintf("since=%d", r0))
		if st != nil { // not compacted yet
			st.close()
			if time.Now().After(deadline) {
				t.Fatal("the history was not compacted within 10 s")
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if r.status == http.StatusGone {
			wantError(t, r, http.StatusGone, kv.EHistoryGone, "")
			var env struct {
				Errors []struct {
					Meta struct {
						OldestRevision uint64 `json:"oldest_revision"`
					} `json:"meta"`
				} `json:"errors"`
			}
			if err := json.Unmarshal(r.body, &env); err != nil || len(env.Errors) != 1 || env.Errors[0].Meta.OldestRevision != old {
				t.Fatalf("410 body %s; want meta.oldest_revision %d", r.body, old)
			}
			break
		}
		t.Fatalf("watch from before the compacted history: %d %s", r.status, r.body)
	}
	rw := c.openWatch(id, fmt.Sprintf("since=%d", old))
	rw.want("put", "new")
}

// testWatchEnds: deleting the namespace ends its streams; stopping the
// server ends them too, without holding the shutdown.
func testWatchEnds(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("doomed")
	w := c.openWatch(id, "")
	w.want("ready", "")
	wantStatus(t, c.do("DELETE", "/v2/storage/kvs/"+id, nil), http.StatusOK)
	w.ended(5 * time.Second)

	// A client that goes away ends its watch: nothing reads a stream's
	// connection, and kvd must still notice.
	live := c.readyNS("live")
	gone := c.openWatch(live, "")
	gone.want("ready", "")
	watching := func() int64 { return s.Service.WatchStats().Watchers }
	if n := watching(); n != 1 {
		t.Fatalf("%d watches open, want 1", n)
	}
	gone.close()
	for deadline := time.Now().Add(20 * time.Second); watching() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the watch of a client that closed its connection is still open after 20 s")
		}
	}

	// A client that reads nothing, with more sent to it than the socket
	// buffers hold, does not hold up a stop of the server.
	stalled, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "GET /v2/storage/kvs/%s/watch?values=true HTTP/1.1\r\nHost: kvd\r\nAuthorization: Bearer %s\r\n\r\n", live, s.Token)
	for deadline := time.Now().Add(10 * time.Second); watching() != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stalled client's watch never opened")
		}
	}
	big := []byte(strings.Repeat("v", 60<<10))
	for i := range 200 { // 12 MB
		wantStatus(t, c.do("PUT", fmt.Sprintf("/v2/storage/kvs/%s/keys/big-%03d", live, i), big), http.StatusCreated)
	}

	lw := c.openWatch(live, "")
	lw.want("ready", "")
	began := time.Now()
	if err := s.Server.Close(); err != nil {
		t.Fatal(err)
	}
	lw.ended(5 * time.Second)
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("stopping with a watch open took %v", took)
	}
}

// testWatchUsage: opening a watch counts one list; each put, delete or
// expire event delivered, snapshot puts included, counts one read.
func testWatchUsage(t *testing.T, start StartFunc) {
	clock := kvdtest.NewClock(time.Date(2026, 11, 15, 12, 0, 0, 0, time.UTC))
	s := start(t, kvdtest.WithClock(clock.Now))
	c := newClient(t, s, s.Token)
	id := c.readyNS("watch-metered")
	key := func(k string) string { return "/v2/storage/kvs/" + id + "/keys/" + k }
	wantStatus(t, c.do("PUT", key("a"), []byte("1")), http.StatusCreated) // 1 write
	wantStatus(t, c.do("PUT", key("b"), []byte("2")), http.StatusCreated) // 1 write
	w := c.openWatch(id, "snapshot=true")                                 // 1 list
	w.want("put", "a")                                                    // 1 read
	w.want("put", "b")                                                    // 1 read
	w.want("ready", "")
	wantStatus(t, c.do("PUT", key("c"), []byte("3")), http.StatusCreated) // 1 write
	wantStatus(t, c.do("DELETE", key("a"), nil), http.StatusOK)           // 1 delete
	w.want("put", "c")                                                    // 1 read
	w.want("delete", "a")                                                 // 1 read
	w.close()
	var rep struct {
		Data struct{ Reads, Writes, Deletes, Lists int64 }
	}
	r := c.do("GET", "/v2/storage/kvs/"+id+"/usage?month=2026-11", nil)
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatal(err)
	}
	if d := rep.Data; d.Lists != 1 || d.Reads != 4 || d.Writes != 3 || d.Deletes != 1 {
		t.Fatalf("usage = %+v, want 1 list, 4 reads, 3 writes, 1 delete: %s", d, r.body)
	}
}

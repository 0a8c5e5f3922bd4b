package servertest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
)

var (
	msTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	nsTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`)
	uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
)

// Run runs the black-box suite; start must give each call a fresh store.
func Run(t *testing.T, start StartFunc) {
	tests := []struct {
		name string
		fn   func(*testing.T, StartFunc)
	}{
		{"Auth", testAuth},
		{"NamespaceCreate", testNamespaceCreate},
		{"NamespaceList", testNamespaceList},
		{"NamespaceGetDelete", testNamespaceGetDelete},
		{"LifecycleResumesAfterRestart", testLifecycleResumes},
		{"KeyPutGetDelete", testKeyPutGetDelete},
		{"KeyPaths", testKeyPaths},
		{"KeyValidation", testKeyValidation},
		{"ValueLimits", testValueLimits},
		{"TTL", testTTL},
		{"ConcurrentFirstWrites", testConcurrentFirstWrites},
		{"ListKeys", testListKeys},
		{"ListWalk", testListWalk},
		{"TenantIsolation", testTenantIsolation},
		{"Persistence", testPersistence},
		{"Routes", testRoutes},
		{"GracefulShutdown", testGracefulShutdown},
		{"Usage", testUsage},
		{"StorageQuota", testStorageQuota},
		{"CutOffBodies", testCutOffBodies},
		{"MalformedRequests", testMalformedRequests},
		{"ContentLengthAndChunked", testContentLengthAndChunked},
		{"FairBodies", testFairBodies},
		{"RetryHints", testRetryHints},
		{"ScopeMatrix", testScopeMatrix},
		{"TokenLifecycle", testTokenLifecycle},
		{"AuthFailureLimit", testAuthFailureLimit},
		{"ConditionalRequests", testConditionalRequests},
		{"Batch", testBatch},
		{"BatchErrors", testBatchErrors},
		{"BatchScopes", testBatchScopes},
		{"SessionCounter", testSessionCounter},
		{"BatchUsage", testBatchUsage},
		{"Watch", testWatch},
		{"WatchScopes", testWatchScopes},
		{"WatchExpiry", testWatchExpiry},
		{"WatchHistory", testWatchHistory},
		{"WatchEnds", testWatchEnds},
		{"WatchUsage", testWatchUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, start)
		})
	}
}

func testAuth(t *testing.T, start StartFunc) {
	s := start(t)
	for _, tc := range []struct{ name, header string }{
		{"missing", ""},
		{"unknown", "Bearer not-a-token"},
		{"not bearer", "Basic " + s.Token},
		{"empty bearer", "Bearer "},
	} {
		c := newClient(t, s, "")
		var r response
		if tc.header == "" {
			r = c.do("GET", "/v2/storage/kvs", nil)
		} else {
			r = c.do("GET", "/v2/storage/kvs", nil, "Authorization", tc.header)
		}
		wantError(t, r, http.StatusUnauthorized, kv.EUnauthorized, "")
	}
	// Every route needs a token, even for a namespace that does not exist.
	c := newClient(t, s, "")
	for _, rt := range [][2]string{
		{"POST", "/v2/storage/kvs"},
		{"GET", "/v2/storage/kvs/" + kv.NewID().String()},
		{"DELETE", "/v2/storage/kvs/" + kv.NewID().String()},
		{"GET", "/v2/storage/kvs/" + kv.NewID().String() + "/keys"},
		{"GET", "/v2/storage/kvs/" + kv.NewID().String() + "/keys/k"},
		{"PUT", "/v2/storage/kvs/" + kv.NewID().String() + "/keys/k"},
		{"DELETE", "/v2/storage/kvs/" + kv.NewID().String() + "/keys/k"},
	} {
		wantError(t, c.do(rt[0], rt[1], nil), http.StatusUnauthorized, kv.EUnauthorized, "")
	}
	// The scheme is case-insensitive; a stored token works like the static one.
	c = newClient(t, s, "")
	wantStatus(t, c.do("GET", "/v2/storage/kvs", nil, "Authorization", "bearer "+s.Token), http.StatusOK)
	other := s.NewToken(t, "acme")
	if len(other) < 43 {
		t.Fatalf("token %q is shorter than 256 bits of base64", other)
	}
	wantStatus(t, newClient(t, s, other).do("GET", "/v2/storage/kvs", nil), http.StatusOK)
}

func testNamespaceCreate(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	ns := c.createNS("my-cache")
	if ns.RecordType != "storage_kv" || ns.Name != "my-cache" || ns.Status != "pending" || !uuidRe.MatchString(ns.ID) {
		t.Fatalf("created namespace = %+v", ns)
	}
	if !msTime.MatchString(ns.CreatedAt) || !msTime.MatchString(ns.UpdatedAt) {
		t.Fatalf("timestamps not RFC 3339 UTC with milliseconds: %+v", ns)
	}
	ready := c.waitStatus(ns.ID, "provision_ok")
	if ready.CreatedAt != ns.CreatedAt || ready.Name != "my-cache" {
		t.Fatalf("ready namespace = %+v, created %+v", ready, ns)
	}
	// The name is taken in this organization, free in another.
	wantError(t, c.do("POST", "/v2/storage/kvs", []byte(`{"name":"my-cache"}`)), http.StatusConflict, kv.EConflict, "already in use")
	other := newClient(t, s, s.NewToken(t, "acme"))
	other.createNS("my-cache")

	long := strings.Repeat("a", 255)
	c.createNS(long)
	for _, body := range []string{
		``, `null`, `[]`, `"my-cache"`, `{`, `{"name":"x"} trailing`, `{}`, `{"name":""}`, `{"name":5}`,
		`{"name":"My-Cache"}`, `{"name":"a_b"}`, `{"name":"a b"}`, `{"name":"a.b"}`, `{"name":"` + long + `a"}`, `{"name":"é"}`,
	} {
		r := c.do("POST", "/v2/storage/kvs", []byte(body), "Content-Type", "application/json")
		wantError(t, r, http.StatusBadRequest, kv.EInvalid, "")
	}
	wantError(t, c.do("POST", "/v2/storage/kvs", bytes.Repeat([]byte(" "), 70<<10)), http.StatusRequestEntityTooLarge, kv.ETooLarge, "")
}

func testNamespaceList(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	var ids []string
	for i := range 5 {
		ids = append(ids, c.createNS(fmt.Sprintf("ns-%d", i)).ID)
	}
	newClient(t, s, s.NewToken(t, "acme")).createNS("elsewhere")
	type page struct {
		Data []nsJSON `json:"data"`
		Meta struct {
			PageNumber   int `json:"page_number"`
			PageSize     int `json:"page_size"`
			TotalPages   int `json:"total_pages"`
			TotalResults int `json:"total_results"`
		} `json:"meta"`
	}
	get := func(q string) page {
		t.Helper()
		r := c.do("GET", "/v2/storage/kvs"+q, nil)
		wantStatus(t, r, http.StatusOK)
		var p page
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	all := get("")
	if all.Meta.PageNumber != 1 || all.Meta.PageSize != 20 || all.Meta.TotalPages != 1 || all.Meta.TotalResults != 5 || len(all.Data) != 5 {
		t.Fatalf("default page = %+v", all)
	}
	// Oldest first, ties by id.
	var got []string
	for _, n := range []int{1, 2, 3} {
		p := get(fmt.Sprintf("?page[number]=%d&page[size]=2", n))
		if p.Meta.PageNumber != n || p.Meta.PageSize != 2 || p.Meta.TotalPages != 3 || p.Meta.TotalResults != 5 {
			t.Fatalf("page %d meta = %+v", n, p.Meta)
		}
		for _, ns := range p.Data {
			got = append(got, ns.ID)
		}
	}
	sorted := slices.Clone(all.Data)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].CreatedAt != sorted[j].CreatedAt {
			return sorted[i].CreatedAt < sorted[j].CreatedAt
		}
		return sorted[i].ID < sorted[j].ID
	})
	for i := range sorted {
		if got[i] != sorted[i].ID || all.Data[i].ID != sorted[i].ID {
			t.Fatalf("order: got %v, want oldest first then by id %v", got, sorted)
		}
	}
	if !slices.Contains(got, ids[0]) || len(got) != 5 {
		t.Fatalf("pages returned %v", got)
	}
	if p := get("?page[number]=9"); len(p.Data) != 0 || p.Meta.TotalResults != 5 {
		t.Fatalf("page past the end = %+v", p)
	}
	if p := get("?page[size]=1000"); p.Meta.PageSize != 250 {
		t.Fatalf("page[size]=1000 not clamped to 250: %+v", p.Meta)
	}
	// Escaped brackets, as SDKs send them.
	if p := get("?page%5Bsize%5D=1"); p.Meta.PageSize != 1 || len(p.Data) != 1 {
		t.Fatalf("escaped page[size] ignored: %+v", p.Meta)
	}
	for _, q := range []string{"?page[number]=abc", "?page[number]=0", "?page[number]=-1", "?page[size]=0", "?page[size]=x", "?page[size]=-5", "?page[number]=1.5"} {
		wantError(t, c.do("GET", "/v2/storage/kvs"+q, nil), http.StatusBadRequest, kv.EInvalid, "page[")
	}
}

func testNamespaceGetDelete(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("doomed")
	wantStatus(t, c.do("PUT", "/v2/storage/kvs/"+id+"/keys/k", []byte("v")), http.StatusCreated)
	// Upper-case ids name the same namespace.
	wantStatus(t, c.do("GET", "/v2/storage/kvs/"+strings.ToUpper(id), nil), http.StatusOK)
	for _, bad := range []string{"not-a-uuid", "123", strings.Repeat("z", 36), id + "0"} {
		wantError(t, c.do("GET", "/v2/storage/kvs/"+bad, nil), http.StatusBadRequest, kv.EInvalid, "UUID")
		wantError(t, c.do("DELETE", "/v2/storage/kvs/"+bad, nil), http.StatusBadRequest, kv.EInvalid, "UUID")
	}
	missing := kv.NewID().String()
	wantError(t, c.do("GET", "/v2/storage/kvs/"+missing, nil), http.StatusNotFound, kv.ENotFound, "Namespace not found")
	wantError(t, c.do("DELETE", "/v2/storage/kvs/"+missing, nil), http.StatusNotFound, kv.ENotFound, "Namespace not found")

	r := c.do("DELETE", "/v2/storage/kvs/"+id, nil)
	wantStatus(t, r, http.StatusOK)
	if ns := decodeNS(t, r); ns.Status != "deleting" || ns.ID != id {
		t.Fatalf("deleted namespace = %+v", ns)
	}
	c.waitGone(id)
	wantError(t, c.do("GET", "/v2/storage/kvs/"+id+"/keys/k", nil), http.StatusNotFound, kv.ENotFound, "Namespace not found")
	// The name is free again, and the new namespace is empty.
	id2 := c.readyNS("doomed")
	if id2 == id {
		t.Fatal("a new namespace reused the id")
	}
	if l := decodeKeys(t, c.do("GET", "/v2/storage/kvs/"+id2+"/keys", nil)); len(l.Data) != 0 {
		t.Fatalf("new namespace has keys: %+v", l.Data)
	}
}

// testLifecycleResumes runs a server without its worker, so namespaces stay
// pending and deleting, then restarts one with a worker on the same store.
func testLifecycleResumes(t *testing.T, start StartFunc) {
	s := start(t, kvdtest.WithoutBackground())
	c := newClient(t, s, s.Token)
	pending := c.createNS("pending")
	doomed := c.createNS("doomed")
	for _, m := range []string{"GET", "PUT", "DELETE"} {
		wantError(t, c.do(m, "/v2/storage/kvs/"+pending.ID+"/keys/k", []byte("v")), http.StatusConflict, kv.EConflict, "Namespace is not ready (status: pending)")
	}
	wantError(t, c.do("GET", "/v2/storage/kvs/"+pending.ID+"/keys", nil), http.StatusConflict, kv.EConflict, "Namespace is not ready (status: pending)")
	r := c.do("DELETE", "/v2/storage/kvs/"+doomed.ID, nil)
	wantStatus(t, r, http.StatusOK)
	if decodeNS(t, r).Status != "deleting" {
		t.Fatalf("delete answered %s", r.body)
	}
	wantError(t, c.do("DELETE", "/v2/storage/kvs/"+doomed.ID, nil), http.StatusConflict, kv.EConflict, "already")
	wantError(t, c.do("PUT", "/v2/storage/kvs/"+doomed.ID+"/keys/k", []byte("v")), http.StatusConflict, kv.EConflict, "Namespace is not ready (status: deleting)")
	wantError(t, c.do("POST", "/v2/storage/kvs", []byte(`{"name":"doomed"}`)), http.StatusConflict, kv.EConflict, "")
	if ns := decodeNS(t, c.do("GET", "/v2/storage/kvs/"+doomed.ID, nil)); ns.Status != "deleting" {
		t.Fatalf("status = %s, want deleting", ns.Status)
	}

	// A process with a worker on the same store finishes both jobs.
	s.Close()
	s2 := start(t, kvdtest.WithStore(s.Dir), withSharedToken(s))
	c2 := newClient(t, s2, s.Token)
	c2.waitStatus(pending.ID, "provision_ok")
	c2.waitGone(doomed.ID)
	c2.createNS("doomed")
}

func withSharedToken(s *kvdtest.Server) kvdtest.Option {
	return kvdtest.WithAPIKey(s.Token)
}

func testKeyPutGetDelete(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("keys")
	base := "/v2/storage/kvs/" + id + "/keys/"

	r := c.do("PUT", base+"user/123", []byte(`{"name":"Alice 👋"}`), "Content-Type", "application/json")
	wantStatus(t, r, http.StatusCreated)
	if len(r.body) != 0 {
		t.Fatalf("PUT body = %q, want empty", r.body)
	}
	r = c.do("GET", base+"user/123", nil)
	wantStatus(t, r, http.StatusOK)
	if string(r.body) != `{"name":"Alice 👋"}` || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET = %q %q", r.body, r.header.Get("Content-Type"))
	}
	// Replacing answers 200; no Content-Type stores the default.
	wantStatus(t, c.do("PUT", base+"user/123", []byte("v2")), http.StatusOK)
	r = c.do("GET", base+"user/123", nil)
	if string(r.body) != "v2" || r.header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("GET after replace = %q %q", r.body, r.header.Get("Content-Type"))
	}
	// Binary and empty values round-trip byte for byte.
	bin := make([]byte, 4096)
	rand.Read(bin)
	wantStatus(t, c.do("PUT", base+"bin", bin, "Content-Type", "image/png"), http.StatusCreated)
	if r := c.do("GET", base+"bin", nil); !bytes.Equal(r.body, bin) || r.header.Get("Content-Type") != "image/png" {
		t.Fatal("binary value changed")
	}
	wantStatus(t, c.do("PUT", base+"empty", []byte{}), http.StatusCreated)
	if r := c.do("GET", base+"empty", nil); r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Length") != "0" {
		t.Fatalf("empty value: %d %q", r.status, r.body)
	}
	// Missing keys and namespaces.
	wantError(t, c.do("GET", base+"nope", nil), http.StatusNotFound, kv.ENotFound, "Key not found")
	missing := "/v2/storage/kvs/" + kv.NewID().String() + "/keys/"
	wantError(t, c.do("GET", missing+"k", nil), http.StatusNotFound, kv.ENotFound, "Namespace not found")
	wantError(t, c.do("PUT", missing+"k", []byte("v")), http.StatusNotFound, kv.ENotFound, "Namespace not found")
	wantError(t, c.do("DELETE", missing+"k", nil), http.StatusNotFound, kv.ENotFound, "Namespace not found")
	wantError(t, c.do("GET", strings.TrimSuffix(missing, "/"), nil), http.StatusNotFound, kv.ENotFound, "Namespace not found")
	wantError(t, c.do("PUT", "/v2/storage/kvs/nope/keys/k", []byte("v")), http.StatusBadRequest, kv.EInvalid, "UUID")

	// Delete is idempotent.
	wantStatus(t, c.do("DELETE", base+"user/123", nil), http.StatusOK)
	wantError(t, c.do("GET", base+"user/123", nil), http.StatusNotFound, kv.ENotFound, "")
	r = c.do("DELETE", base+"user/123", nil)
	wantStatus(t, r, http.StatusOK)
	if len(r.body) != 0 {
		t.Fatalf("DELETE body = %q", r.body)
	}
	wantStatus(t, c.do("PUT", base+"user/123", []byte("again")), http.StatusCreated)
}

func testKeyPaths(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("paths")
	base := "/v2/storage/kvs/" + id + "/keys/"
	// Raw "/" and %2F name one key.
	wantStatus(t, c.do("PUT", base+"user%2F123", []byte("a")), http.StatusCreated)
	wantStatus(t, c.do("PUT", base+"user/123", []byte("b")), http.StatusOK)
	if r := c.do("GET", base+"user%2f123", nil); string(r.body) != "b" {
		t.Fatalf("user%%2f123 = %d %q", r.status, r.body)
	}
	// Path-like keys are distinct, stored verbatim, never cleaned or redirected.
	keys := []string{"a//b", "a/b", "./x", "x", "a/../b", "b", "trailing/", "trailing", "../up", ".", "..", "/lead", "//"}
	for i, k := range keys {
		r := c.do("PUT", base+k, []byte(fmt.Sprint(i)))
		if r.status != http.StatusCreated && !(k == "a/b") {
			t.Fatalf("PUT %q = %d %s", k, r.status, r.body)
		}
		if r.status >= 300 && r.status < 400 {
			t.Fatalf("PUT %q redirected", k)
		}
	}
	for i, k := range keys {
		r := c.do("GET", base+k, nil)
		if r.status != http.StatusOK || string(r.body) != fmt.Sprint(i) {
			t.Fatalf("GET %q = %d %q, want %d", k, r.status, r.body, i)
		}
		// The escaped form names the same key.
		esc := strings.ReplaceAll(strings.ReplaceAll(k, "/", "%2F"), ".", "%2E")
		if r := c.do("GET", base+esc, nil); string(r.body) != fmt.Sprint(i) {
			t.Fatalf("GET %q = %d %q, want %d", esc, r.status, r.body, i)
		}
	}
	got := c.walk(id, "", 1000)
	want := append(slices.Clone(keys), "user/123")
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("listing = %q, want %q", got, want)
	}
	// Decoded once: %252F is the three characters %2F, which a key cannot hold.
	wantError(t, c.do("PUT", base+"a%252Fb", []byte("v")), http.StatusBadRequest, kv.EInvalid, "'%'")
}

func testKeyValidation(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("valid")
	base := "/v2/storage/kvs/" + id + "/keys/"
	long := strings.Repeat("k", 256)
	wantStatus(t, c.do("PUT", base+long, []byte("v")), http.StatusCreated)
	wantStatus(t, c.do("PUT", base+"a-_/=.Z9", []byte("v")), http.StatusCreated)
	bad := map[string]string{
		"user:1":       "':'",
		long + "k":     "257",
		"_reserved":    "reserved",
		"sp%20ace":     "' '",
		"%C3%A9":       "0xc3",
		"q%3Fx":        "'?'",
		"hash%23":      "'#'",
		"nul%00":       "0x00",
		"plus+":        "'+'",
		"pct%25":       "'%'",
		"star*":        "'*'",
		"tilde~":       "'~'",
		"comma,":       "','",
		"semicolon%3B": "';'",
	}
	for k, detail := range bad {
		for _, m := range []string{"PUT", "GET", "DELETE"} {
			r := c.do(m, base+k, []byte("v"))
			wantError(t, r, http.StatusBadRequest, kv.EInvalid, detail)
		}
	}
	wantError(t, c.do("PUT", base, []byte("v")), http.StatusBadRequest, kv.EInvalid, "empty")
	// Nothing was written by the refused requests.
	got := c.walk(id, "", 1000)
	if len(got) != 2 {
		t.Fatalf("keys after refused writes = %q", got)
	}
	// The error envelope names the key parameter, as the contract shows.
	r := c.do("GET", base+"user:1", nil)
	if !bytes.Contains(r.body, []byte(`"parameter":"key"`)) || !bytes.Contains(r.body, []byte("allowed: a-z A-Z 0-9 - _ / = .")) {
		t.Fatalf("key error = %s", r.body)
	}
	// Content-Type is checked too.
	wantError(t, c.do("PUT", base+"ct", []byte("v"), "Content-Type", strings.Repeat("x", 300)), http.StatusBadRequest, kv.EInvalid, "Content-Type")
}

func testValueLimits(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("limits")
	base := "/v2/storage/kvs/" + id + "/keys/"
	max := make([]byte, kv.MaxValueSize)
	rand.Read(max)
	wantStatus(t, c.do("PUT", base+"max", max), http.StatusCreated)
	if r := c.do("GET", base+"max", nil); !bytes.Equal(r.body, max) {
		t.Fatalf("1 MiB value changed (got %d bytes)", len(r.body))
	}
	wantError(t, c.do("PUT", base+"over", make([]byte, kv.MaxValueSize+1)), http.StatusRequestEntityTooLarge, kv.ETooLarge, "1 MiB")
	wantError(t, c.do("GET", base+"over", nil), http.StatusNotFound, kv.ENotFound, "")
	// A chunked body (no Content-Length) over the limit.
	req, _ := http.NewRequest("PUT", s.URL+base+"chunked", io.MultiReader(bytes.NewReader(max), strings.NewReader("x")))
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked oversize = %d", resp.StatusCode)
	}
	wantError(t, c.do("GET", base+"chunked", nil), http.StatusNotFound, kv.ENotFound, "")
	// A huge declared body is refused at once, without the server waiting
	// for (or reading) the rest.
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "PUT %skey HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\npartial", base, s.Token, 1<<30)
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response to a 1 GiB declared body: %v", err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
		t.Fatalf("1 GiB declared body = %d, Connection %q", resp.StatusCode, resp.Header.Get("Connection"))
	}
}

func testTTL(t *testing.T, start StartFunc) {
	clock := kvdtest.NewClock(time.Date(2026, 6, 18, 14, 0, 0, 0, time.UTC))
	s := start(t, kvdtest.WithClock(clock.Now))
	c := newClient(t, s, s.Token)
	id := c.readyNS("ttl")
	base := "/v2/storage/kvs/" + id + "/keys/"
	for _, q := range []string{"0", "-1", "abc", "1.5", "9223372037", "", "1e3", "99999999999999999999"} {
		wantError(t, c.do("PUT", base+"bad?ttl_secs="+q, []byte("v")), http.StatusUnprocessableEntity, kv.EUnprocessable, "ttl_secs")
	}
	wantError(t, c.do("PUT", base+"bad?ttl=10", []byte("v")), http.StatusUnprocessableEntity, kv.EUnprocessable, "ttl_secs")
	wantError(t, c.do("GET", base+"bad", nil), http.StatusNotFound, kv.ENotFound, "")
	wantStatus(t, c.do("PUT", base+"far?ttl_secs=9223372036", []byte("v")), http.StatusCreated)

	wantStatus(t, c.do("PUT", base+"session/a?ttl_secs=10", []byte("s")), http.StatusCreated)
	wantStatus(t, c.do("PUT", base+"session/b?ttl_secs=20", []byte("s")), http.StatusCreated)
	wantStatus(t, c.do("PUT", base+"session/c", []byte("s")), http.StatusCreated)
	clock.Advance(9 * time.Second)
	wantStatus(t, c.do("GET", base+"session/a", nil), http.StatusOK)
	clock.Advance(time.Second)
	wantError(t, c.do("GET", base+"session/a", nil), http.StatusNotFound, kv.ENotFound, "Key not found")
	if got := c.walk(id, "session/", 1000); !slices.Equal(got, []string{"session/b", "session/c"}) {
		t.Fatalf("listing after expiry = %q", got)
	}
	// Writing an expired key creates it again; a write without ttl_secs makes
	// a key permanent.
	wantStatus(t, c.do("PUT", base+"session/a", []byte("new")), http.StatusCreated)
	wantStatus(t, c.do("PUT", base+"session/b", []byte("kept")), http.StatusOK)
	clock.Advance(time.Hour)
	for _, k := range []string{"session/a", "session/b", "session/c"} {
		wantStatus(t, c.do("GET", base+k, nil), http.StatusOK)
	}
	// The sweeper reclaims expired keys for good.
	wantStatus(t, c.do("PUT", base+"gone?ttl_secs=1", []byte("s")), http.StatusCreated)
	clock.Advance(2 * time.Second)
	if n := s.Worker.SweepOnce(t.Context()); n != 1 {
		t.Fatalf("sweep removed %d keys, want 1", n)
	}
	wantError(t, c.do("GET", base+"gone", nil), http.StatusNotFound, kv.ENotFound, "")
}

func testConcurrentFirstWrites(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("race")
	const writers, keys = 16, 8
	for k := range keys {
		var wg sync.WaitGroup
		statuses := make([]int, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[w] = c.do("PUT", fmt.Sprintf("/v2/storage/kvs/%s/keys/k%d", id, k), []byte(fmt.Sprint(w))).status
			}()
		}
		wg.Wait()
		created := 0
		for _, st := range statuses {
			switch st {
			case http.StatusCreated:
				created++
			case http.StatusOK:
			default:
				t.Fatalf("status %d", st)
			}
		}
		if created != 1 {
			t.Fatalf("key k%d: %d writers got 201, want exactly 1 (%v)", k, created, statuses)
		}
	}
}

func testListKeys(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("list")
	base := "/v2/storage/kvs/" + id + "/keys"
	wantStatus(t, c.do("PUT", base+"/user/123", []byte(`{"name":"Alice 👋"}`)), http.StatusCreated)
	wantStatus(t, c.do("PUT", base+"/user/2", []byte("x")), http.StatusCreated)
	wantStatus(t, c.do("PUT", base+"/other", []byte("x")), http.StatusCreated)
	l := decodeKeys(t, c.do("GET", base+"?prefix=user/&limit=100", nil))
	if len(l.Data) != 2 || l.Data[0].Key != "user/123" || l.Data[0].SizeBytes != 21 || l.Meta.HasMore {
		t.Fatalf("list = %+v", l)
	}
	if !nsTime.MatchString(l.Data[0].UpdatedAt) {
		t.Fatalf("updated_at %q is not RFC 3339 UTC with nanoseconds", l.Data[0].UpdatedAt)
	}
	// A GET's Kv-Updated-At says the same as the listing.
	if got := c.do("GET", base+"/user/123", nil).header.Get("Kv-Updated-At"); got != l.Data[0].UpdatedAt {
		t.Fatalf("Kv-Updated-At %q, listing's updated_at %q", got, l.Data[0].UpdatedAt)
	}
	// An empty listing, a prefix matching nothing, and no query at all.
	if l := decodeKeys(t, c.do("GET", base+"?prefix=zzz", nil)); len(l.Data) != 0 || l.Meta.HasMore {
		t.Fatalf("prefix zzz = %+v", l)
	}
	if l := decodeKeys(t, c.do("GET", base, nil)); len(l.Data) != 3 {
		t.Fatalf("no query = %+v", l)
	}
	l = decodeKeys(t, c.do("GET", base+"?limit=1", nil))
	if len(l.Data) != 1 || !l.Meta.HasMore {
		t.Fatalf("limit=1 = %+v", l)
	}
	cursor := *l.Meta.Cursor
	if l := decodeKeys(t, c.do("GET", base+"?limit=5000", nil)); len(l.Data) != 3 {
		t.Fatalf("limit over 1000 must clamp, got %+v", l)
	}
	for _, q := range []string{"limit=0", "limit=-1", "limit=abc", "limit=1.5", "limit="} {
		wantError(t, c.do("GET", base+"?"+q, nil), http.StatusBadRequest, kv.EInvalid, "limit")
	}
	tampered := []byte(cursor)
	tampered[len(tampered)-1] ^= 1
	for _, q := range []string{
		"cursor=garbage", "cursor=" + string(tampered), "cursor=%00%01", "cursor=" + strings.Repeat("A", 5000),
		"cursor=" + cursor + "&prefix=user/", // from a listing with another prefix
	} {
		wantError(t, c.do("GET", base+"?"+q, nil), http.StatusBadRequest, kv.EInvalid, "cursor")
	}
	// A cursor of one namespace is refused by another.
	id2 := c.readyNS("list-two")
	wantError(t, c.do("GET", "/v2/storage/kvs/"+id2+"/keys?cursor="+cursor, nil), http.StatusBadRequest, kv.EInvalid, "cursor")
	l = decodeKeys(t, c.do("GET", base+"?limit=1&cursor="+cursor, nil))
	if len(l.Data) != 1 || l.Data[0].Key != "user/123" {
		t.Fatalf("second page = %+v", l)
	}
}

func testListWalk(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("walk")
	var want, users []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range 3000 {
		var k string
		switch i % 3 {
		case 0:
			k = fmt.Sprintf("user/%d", i)
		case 1:
			k = fmt.Sprintf("user.%d", i) // sorts between "user-" and "user/"
		default:
			k = fmt.Sprintf("z/%05d/x", i)
		}
		want = append(want, k)
		if strings.HasPrefix(k, "user/") {
			users = append(users, k)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := c.do("PUT", "/v2/storage/kvs/"+id+"/keys/"+k, []byte(k))
			mu.Lock()
			defer mu.Unlock()
			if r.status != http.StatusCreated {
				t.Errorf("PUT %s = %d", k, r.status)
			}
		}()
	}
	wg.Wait()
	slices.Sort(want)
	slices.Sort(users)
	for _, limit := range []int{7, 1000} {
		if got := c.walk(id, "", limit); !slices.Equal(got, want) {
			t.Fatalf("walk limit %d: %d keys, want %d in byte order", limit, len(got), len(want))
		}
		if got := c.walk(id, "user/", limit); !slices.Equal(got, users) {
			t.Fatalf("walk prefix user/ limit %d: %d keys, want %d", limit, len(got), len(users))
		}
	}
}

func testTenantIsolation(t *testing.T, start StartFunc) {
	s := start(t)
	a := newClient(t, s, s.Token)
	b := newClient(t, s, s.NewToken(t, "intruder"))
	id := a.readyNS("private")
	wantStatus(t, a.do("PUT", "/v2/storage/kvs/"+id+"/keys/secret", []byte("s")), http.StatusCreated)
	missing := kv.NewID().String()
	for _, rt := range []struct{ method, path string }{
		{"GET", "/v2/storage/kvs/%s"},
		{"DELETE", "/v2/storage/kvs/%s"},
		{"GET", "/v2/storage/kvs/%s/keys"},
		{"GET", "/v2/storage/kvs/%s/keys/secret"},
		{"PUT", "/v2/storage/kvs/%s/keys/secret"},
		{"DELETE", "/v2/storage/kvs/%s/keys/secret"},
	} {
		theirs := b.do(rt.method, fmt.Sprintf(rt.path, id), []byte("x"))
		none := b.do(rt.method, fmt.Sprintf(rt.path, missing), []byte("x"))
		wantError(t, theirs, http.StatusNotFound, kv.ENotFound, "Namespace not found")
		if string(theirs.body) != string(none.body) {
			t.Fatalf("%s %s: another organization's namespace answers %s, a missing one %s", rt.method, rt.path, theirs.body, none.body)
		}
	}
	// Nothing the intruder did had an effect, and listings are per organization.
	if r := a.do("GET", "/v2/storage/kvs/"+id+"/keys/secret", nil); r.status != 200 || string(r.body) != "s" {
		t.Fatalf("owner's key after intrusion = %d %q", r.status, r.body)
	}
	if ns := decodeNS(t, a.do("GET", "/v2/storage/kvs/"+id, nil)); ns.Status != "provision_ok" {
		t.Fatalf("owner's namespace = %+v", ns)
	}
	r := b.do("GET", "/v2/storage/kvs", nil)
	if bytes.Contains(r.body, []byte(id)) || !bytes.Contains(r.body, []byte(`"total_results":0`)) {
		t.Fatalf("intruder's listing shows others: %s", r.body)
	}
}

func testPersistence(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("durable")
	tok := s.NewToken(t, "acme")
	for i := range 50 {
		wantStatus(t, c.do("PUT", fmt.Sprintf("/v2/storage/kvs/%s/keys/k%02d", id, i), []byte(fmt.Sprint(i)), "Content-Type", "text/plain"), http.StatusCreated)
	}
	wantStatus(t, c.do("DELETE", "/v2/storage/kvs/"+id+"/keys/k07", nil), http.StatusOK)
	s.Restart(t)
	c = newClient(t, s, s.Token)
	for i := range 50 {
		r := c.do("GET", fmt.Sprintf("/v2/storage/kvs/%s/keys/k%02d", id, i), nil)
		if i == 7 {
			wantStatus(t, r, http.StatusNotFound)
			continue
		}
		if r.status != 200 || string(r.body) != fmt.Sprint(i) || r.header.Get("Content-Type") != "text/plain" {
			t.Fatalf("after restart k%02d = %d %q %q", i, r.status, r.body, r.header.Get("Content-Type"))
		}
	}
	if ns := decodeNS(t, c.do("GET", "/v2/storage/kvs/"+id, nil)); ns.Status != "provision_ok" || ns.Name != "durable" {
		t.Fatalf("namespace after restart = %+v", ns)
	}
	wantStatus(t, newClient(t, s, tok).do("GET", "/v2/storage/kvs", nil), http.StatusOK)
}

func testRoutes(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("routes")
	for _, p := range []string{"/healthz", "/readyz"} {
		wantStatus(t, newClient(t, s, "").do("GET", p, nil), http.StatusOK)
	}
	wantError(t, c.do("GET", "/v1/storage/kvs", nil), http.StatusNotFound, kv.ENotFound, "no route")
	wantError(t, c.do("GET", "/v2/storage/kvs/"+id+"/other", nil), http.StatusNotFound, kv.ENotFound, "no route")
	wantError(t, c.do("GET", "/v2/storage/kvsx", nil), http.StatusNotFound, kv.ENotFound, "no route")
	for _, m := range [][2]string{
		{"PUT", "/v2/storage/kvs"}, {"PATCH", "/v2/storage/kvs/" + id}, {"POST", "/v2/storage/kvs/" + id + "/keys"}, {"POST", "/v2/storage/kvs/" + id + "/keys/k"},
	} {
		r := c.do(m[0], m[1], nil)
		wantStatus(t, r, http.StatusMethodNotAllowed)
		errorOf(t, r)
		if r.header.Get("Allow") == "" {
			t.Fatalf("%s %s: no Allow header", m[0], m[1])
		}
	}
	// Every response carries a request id; a sane client one is kept.
	r := c.do("GET", "/v2/storage/kvs", nil, "X-Request-Id", "abc-123")
	if r.header.Get("X-Request-Id") != "abc-123" {
		t.Fatalf("X-Request-Id = %q", r.header.Get("X-Request-Id"))
	}
	if r := c.do("GET", "/v2/storage/kvs", nil, "X-Request-Id", "bad id"); r.header.Get("X-Request-Id") == "" || r.header.Get("X-Request-Id") == "bad id" {
		t.Fatalf("X-Request-Id = %q", r.header.Get("X-Request-Id"))
	}
	// Oversized headers are refused by the server.
	r = c.do("GET", "/v2/storage/kvs", nil, "X-Big", strings.Repeat("x", 128<<10))
	if r.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("128 KiB header = %d", r.status)
	}
}

func testGracefulShutdown(t *testing.T, start StartFunc) {
	s := start(t)
	c := newClient(t, s, s.Token)
	id := c.readyNS("drain")
	// A PUT whose body is still arriving when the stop begins completes.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", s.URL+"/v2/storage/kvs/"+id+"/keys/inflight", pr)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	req.ContentLength = 10
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("in-flight PUT: %v", err)
		}
		done <- resp
	}()
	pw.Write([]byte("01234"))
	// Wait until the server has the request, then stop it.
	waitActive(t, s)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	time.Sleep(50 * time.Millisecond) // give Close the chance to (wrongly) cut the request
	pw.Write([]byte("56789"))
	pw.Close()
	resp := <-done
	if resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("in-flight PUT during shutdown = %v", resp)
	}
	resp.Body.Close()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := http.Get(s.URL + "/healthz"); err == nil {
		t.Fatal("server still answers after Close")
	}
	// What the drained request wrote is durable.
	s2 := start(t, kvdtest.WithStore(s.Dir), withSharedToken(s))
	if r := newClient(t, s2, s.Token).do("GET", "/v2/storage/kvs/"+id+"/keys/inflight", nil); string(r.body) != "0123456789" {
		t.Fatalf("after restart: %d %q", r.status, r.body)
	}
}

// waitActive waits until the server has a request in flight.
func waitActive(t *testing.T, s *kvdtest.Server) {
	deadline := time.Now().Add(10 * time.Second)
	for s.InFlight() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("request never reached the server")
		}
		time.Sleep(time.Millisecond)
	}
}

// checkStatus is wantStatus for a goroutine: it reports and goes on.
func checkStatus(t testing.TB, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Errorf("status %d, want %d: %s", r.status, want, r.body)
	}
}

func testUsage(t *testing.T, start StartFunc) {
	clock := kvdtest.NewClock(time.Date(2026, 11, 15, 12, 0, 0, 0, time.UTC))
	s := start(t, kvdtest.WithClock(clock.Now))
	c := newClient(t, s, s.Token)
	id := c.readyNS("metered")
	other := c.readyNS("quiet")
	base := "/v2/storage/kvs/" + id + "/keys/"
	const workers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	var liveBytes int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			check := func(r response, want int) { checkStatus(t, r, want) }
			for i := range 10 { // 10 writes
				k := fmt.Sprintf("w%d/k%d", w, i)
				check(c.do("PUT", base+k, []byte("0123456789")), http.StatusCreated)
			}
			for i := range 5 { // 5 reads that find a key, 3 that do not
				check(c.do("GET", base+fmt.Sprintf("w%d/k%d", w, i), nil), http.StatusOK)
			}
			for i := range 3 {
				check(c.do("GET", base+fmt.Sprintf("w%d/none%d", w, i), nil), http.StatusNotFound)
			}
			for i := range 2 { // 2 deletes of keys, 2 of nothing
				check(c.do("DELETE", base+fmt.Sprintf("w%d/k%d", w, i), nil), http.StatusOK)
				check(c.do("DELETE", base+fmt.Sprintf("w%d/none%d", w, i), nil), http.StatusOK)
			}
			check(c.do("GET", "/v2/storage/kvs/"+id+"/keys?prefix="+fmt.Sprintf("w%d/", w), nil), http.StatusOK) // 1 list
			// Refused before storage: not counted.
			check(c.do("GET", base+"bad:key", nil), http.StatusBadRequest)
			check(c.do("PUT", base+"k?ttl_secs=0", []byte("x")), http.StatusUnprocessableEntity)
			check(c.do("GET", "/v2/storage/kvs/"+id+"/keys?limit=0", nil), http.StatusBadRequest)
			check(newClient(t, s, "wrong").do("GET", base+"w0/k5", nil), http.StatusUnauthorized)
			check(c.do("GET", "/v2/storage/kvs/"+kv.NewID().String()+"/keys/k", nil), http.StatusNotFound)
			mu.Lock()
			liveBytes += 8 * int64(len(fmt.Sprintf("w%d/k0", w))+10)
			mu.Unlock()
		}()
	}
	wg.Wait()
	type figures struct {
		Reads, Writes, Deletes, Lists int64
		StoredBytes                   int64  `json:"stored_bytes"`
		ByteSeconds                   string `json:"storage_byte_seconds"`
	}
	var rep struct {
		Data struct {
			RecordType string `json:"record_type"`
			Month      string `json:"month"`
			figures
			Namespaces []struct {
				ID string
				figures
			}
			Bill *struct {
				Currency string
				Total    string
				Lines    []struct{ Resource, Quantity, Free, Billable, Amount string }
			}
		}
	}
	r := c.do("GET", "/v2/storage/kvs/usage?month=2026-11", nil)
	wantStatus(t, r, http.StatusOK)
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatal(err)
	}
	want := figures{Reads: workers * 8, Writes: workers * 10, Deletes: workers * 4, Lists: workers, StoredBytes: liveBytes, ByteSeconds: "0.000"}
	if rep.Data.figures != want || rep.Data.RecordType != "storage_kv_usage" || rep.Data.Month != "2026-11" {
		t.Fatalf("organization usage = %+v, want %+v: %s", rep.Data.figures, want, r.body)
	}
	if len(rep.Data.Namespaces) != 1 || rep.Data.Namespaces[0].ID != id || rep.Data.Namespaces[0].figures != want {
		t.Fatalf("namespaces = %+v (the quiet one has no usage)", rep.Data.Namespaces)
	}
	if rep.Data.Bill == nil || rep.Data.Bill.Currency != "USD" || rep.Data.Bill.Total != "0.00" || len(rep.Data.Bill.Lines) != 5 {
		t.Fatalf("bill = %+v", rep.Data.Bill)
	}
	// Stored bytes integrate over time.
	clock.Advance(10 * time.Second)
	r = c.do("GET", "/v2/storage/kvs/"+id+"/usage?month=2026-11", nil)
	wantStatus(t, r, http.StatusOK)
	rep.Data.Bill = nil
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatal(err)
	}
	want.ByteSeconds = fmt.Sprintf("%d.000", liveBytes*10)
	if rep.Data.figures != want || rep.Data.Bill != nil {
		t.Fatalf("namespace usage = %+v, want %+v, no bill: %s", rep.Data.figures, want, r.body)
	}
	// The current month is the default; other months are empty.
	wantStatus(t, c.do("GET", "/v2/storage/kvs/usage", nil), http.StatusOK)
	if r := c.do("GET", "/v2/storage/kvs/usage?month=2026-10", nil); !bytes.Contains(r.body, []byte(`"reads":0`)) {
		t.Fatalf("October: %s", r.body)
	}
	wantError(t, c.do("GET", "/v2/storage/kvs/usage?month=2026-13", nil), http.StatusBadRequest, kv.EInvalid, "YYYY-MM")
	wantError(t, c.do("GET", "/v2/storage/kvs/"+kv.NewID().String()+"/usage", nil), http.StatusNotFound, kv.ENotFound, "")
	wantStatus(t, c.do("GET", "/v2/storage/kvs/"+other+"/usage", nil), http.StatusOK)
	intruder := newClient(t, s, s.NewToken(t, "intruder"))
	wantError(t, intruder.do("GET", "/v2/storage/kvs/"+id+"/usage", nil), http.StatusNotFound, kv.ENotFound, "")
	if r := intruder.do("GET", "/v2/storage/kvs/usage?month=2026-11", nil); !bytes.Contains(r.body, []byte(`"reads":0`)) || bytes.Contains(r.body, []byte(id)) {
		t.Fatalf("intruder's usage: %s", r.body)
	}
	testUsageByDay(t, s, c, id, clock, liveBytes)
}

// testUsageByDay goes on from testUsage, whose workload ran at 12:00 on
// November 15 and left live bytes in namespace id: a second concurrent
// workload at 01:00 on the 16th, then the month by day at 01:30.
func testUsageByDay(t *testing.T, s *kvdtest.Server, c *client, id string, clock *kvdtest.Clock, day1Bytes int64) {
	clock.Advance(13*time.Hour - 10*time.Second) // November 16, 01:00
	base := "/v2/storage/kvs/" + id + "/keys/"
	const workers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	day2Bytes := day1Bytes
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			check := func(r response, want int) { checkStatus(t, r, want) }
			for i := range 4 { // 4 writes of new keys
				check(c.do("PUT", base+fmt.Sprintf("w%d/d2k%d", w, i), []byte("0123456789")), http.StatusCreated)
			}
			check(c.do("GET", base+fmt.Sprintf("w%d/k2", w), nil), http.StatusOK) // 2 reads
			check(c.do("GET", base+fmt.Sprintf("w%d/none", w), nil), http.StatusNotFound)
			check(c.do("DELETE", base+fmt.Sprintf("w%d/k3", w), nil), http.StatusOK) // 1 delete
			check(c.do("GET", "/v2/storage/kvs/"+id+"/keys?prefix="+fmt.Sprintf("w%d/d2", w), nil), http.StatusOK)
			mu.Lock()
			day2Bytes += 4*int64(len(fmt.Sprintf("w%d/d2k0", w))+10) - int64(len(fmt.Sprintf("w%d/k3", w))+10)
			mu.Unlock()
		}()
	}
	wg.Wait()
	clock.Advance(30 * time.Minute)

	type dayJSON struct {
		Date                          string
		Reads, Writes, Deletes, Lists int64
		ByteSeconds                   string `json:"storage_byte_seconds"`
		StoredBytes                   int64  `json:"stored_bytes"`
	}
	type figures struct {
		Reads, Writes, Deletes, Lists int64
		ByteSeconds                   string `json:"storage_byte_seconds"`
		StoredBytes                   int64  `json:"stored_bytes"`
	}
	type report struct {
		Data struct {
			figures
			Days []dayJSON
		}
	}
	get := func(path string) (report, response) {
		t.Helper()
		r := c.do("GET", path, nil)
		wantStatus(t, r, http.StatusOK)
		var rep report
		if err := json.Unmarshal(r.body, &rep); err != nil {
			t.Fatal(err)
		}
		return rep, r
	}
	day1 := dayJSON{Date: "2026-11-15", Reads: workers * 8, Writes: workers * 10, Deletes: workers * 4, Lists: workers,
		ByteSeconds: fmt.Sprintf("%d.000", day1Bytes*12*3600), StoredBytes: day1Bytes}
	day2 := dayJSON{Date: "2026-11-16", Reads: workers * 2, Writes: workers * 4, Deletes: workers, Lists: workers,
		ByteSeconds: fmt.Sprintf("%d.000", day1Bytes*3600+day2Bytes*1800), StoredBytes: day2Bytes}
	for _, path := range []string{"/v2/storage/kvs/usage?month=2026-11&granularity=day", "/v2/storage/kvs/" + id + "/usage?granularity=day&month=2026-11"} {
		rep, r := get(path)
		days := rep.Data.Days
		if len(days) != 16 {
			t.Fatalf("%s: %d days, want November 1 to 16: %s", path, len(days), r.body)
		}
		var sum figures
		var secs int64
		for i, d := range days[:14] {
			if want := (dayJSON{Date: fmt.Sprintf("2026-11-%02d", i+1), ByteSeconds: "0.000"}); d != want {
				t.Fatalf("%s: day %d = %+v, want %+v", path, i+1, d, want)
			}
		}
		if days[14] != day1 || days[15] != day2 {
			t.Fatalf("%s: November 15 and 16 = %+v, %+v; want %+v, %+v", path, days[14], days[15], day1, day2)
		}
		for _, d := range days {
			sum.Reads, sum.Writes, sum.Deletes, sum.Lists = sum.Reads+d.Reads, sum.Writes+d.Writes, sum.Deletes+d.Deletes, sum.Lists+d.Lists
			var n int64
			if _, err := fmt.Sscanf(d.ByteSeconds, "%d.000", &n); err != nil {
				t.Fatalf("%s: byte-seconds %q", path, d.ByteSeconds)
			}
			secs += n
		}
		sum.ByteSeconds, sum.StoredBytes = fmt.Sprintf("%d.000", secs), days[15].StoredBytes
		if sum != rep.Data.figures {
			t.Fatalf("%s: the days add up to %+v, the month is %+v", path, sum, rep.Data.figures)
		}
		// The month is the same with or without the days.
		monthly, mr := get(strings.Replace(path, "granularity=day", "granularity=month", 1))
		if monthly.Data.figures != rep.Data.figures || monthly.Data.Days != nil || bytes.Contains(mr.body, []byte(`"days"`)) {
			t.Fatalf("%s by month: %s", path, mr.body)
		}
	}
	// A past month has every day, a month to come none.
	if rep, r := get("/v2/storage/kvs/usage?month=2026-10&granularity=day"); len(rep.Data.Days) != 31 || rep.Data.Days[30].Date != "2026-10-31" {
		t.Fatalf("October by day: %s", r.body)
	}
	if _, r := get("/v2/storage/kvs/usage?month=2026-12&granularity=day"); !bytes.Contains(r.body, []byte(`"days":[]`)) {
		t.Fatalf("December by day: %s", r.body)
	}
	for _, q := range []string{"granularity=week", "granularity=", "granularity=DAY", "granularity=day&granularity=day"} {
		wantError(t, c.do("GET", "/v2/storage/kvs/usage?"+q, nil), http.StatusBadRequest, kv.EInvalid, "granularity")
		wantError(t, c.do("GET", "/v2/storage/kvs/"+id+"/usage?"+q, nil), http.StatusBadRequest, kv.EInvalid, "granularity")
	}
}

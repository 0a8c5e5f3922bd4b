package pgopstest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgserver"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/server"
	"github.com/jackc/pgx/v5"
)

// testClock is a clock the test moves, shared by every kvd of a test.
type testClock struct{ ns atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.set(t)
	return c
}
func (c *testClock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *testClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// TestDumpRestore fills a database through kvd (tokens of two
// organizations, namespaces ready, pending and being deleted, keys with
// content types, TTLs, binary, empty and 1 MiB values, usage of every
// kind), backs it up with the machine's pg_dump -Fc, restores the backup
// with pg_restore into a fresh database, and checks that kvd on the
// restored database serves exactly what kvd on the original serves: every
// namespace and its status, every key's listing, value and content type,
// the same expiries as the clock moves on, the tokens, the usage reports.
// The tables themselves are compared row by row too.
func TestDumpRestore(t *testing.T) {
	src := pgtest.URL(t)
	var tools [2]string
	for i, name := range []string{"pg_dump", "pg_restore"} {
		p, err := pgserver.Binary(name)
		switch {
		case err != nil && os.Getenv(pgtest.EnvRequire) == "1":
			t.Fatalf("pgtest: %v", err)
		case err != nil: // an external server (KV_TEST_POSTGRES_URL), and no PostgreSQL here
			t.Skipf("pgtest: %v (install PostgreSQL's client programs, e.g. apt-get install postgresql)", err)
		}
		tools[i] = p
	}
	pgDump, pgRestore := tools[0], tools[1]
	clock := newTestClock(time.Date(2031, time.May, 6, 7, 8, 9, 0, time.UTC))
	apiKey := "dump-restore-key"
	start := func(store string, background bool) *kvdtest.Server {
		return kvdtest.Start(t, kvdtest.WithStore(store), kvdtest.WithClock(clock.now), kvdtest.WithAPIKey(apiKey), kvdtest.WithConfig(func(c *server.Config) {
			c.NoBackground = !background
		}))
	}

	// Fill, with the background worker: namespaces become provision_ok.
	k := start(src, true)
	hc := newHTTPClient()
	def := api{hc: hc, base: k.URL, token: apiKey}
	acme := api{hc: hc, base: k.URL, token: k.NewToken(t, "acme")}
	globex := api{hc: hc, base: k.URL, token: k.NewToken(t, "globex")}
	main := def.createNamespace(t, "main", true)
	doomed := def.createNamespace(t, "doomed", true)
	acmeNS := acme.createNamespace(t, "acme-cache", true)
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return string(b)
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	type put struct {
		ns, key, value, contentType, query string
	}
	puts := []put{
		{main, "json/1", `{"name":"Alice 👋"}`, "application/json", ""},
		{main, "img/avatar.png", "\x89PNG\r\n\x1a\n" + random(2000), "image/png", ""},
		{main, "text", "plain text", "text/plain; charset=utf-8", ""},
		{main, "bytes/all", string(all), "", ""}, // no Content-Type: application/octet-stream
		{main, "bytes/empty", "", "application/octet-stream", ""},
		{main, "big", random(1 << 20), "application/octet-stream", ""},
		{main, "a/b/./c//d", "path-like", "text/plain", ""},
		{main, "ttl/300", "five minutes", "text/plain", "?ttl_secs=300"},
		{main, "ttl/400", "a little longer", "text/plain", "?ttl_secs=400"},
		{main, "ttl/day", "a day", "text/plain", "?ttl_secs=86400"},
		{main, "overwritten", "first", "text/plain", ""},
		{main, "overwritten", "second, with another type", "application/json", "?ttl_secs=3600"},
		{main, "deleted", "gone soon", "text/plain", ""},
		{doomed, "d1", "doomed value", "text/plain", ""},
		{acmeNS, "acme/1", random(100), "application/octet-stream", ""},
		{acmeNS, "acme/ttl", "acme ttl", "text/plain", "?ttl_secs=350"},
	}
	for i := range 300 {
		puts = append(puts, put{main, fmt.Sprintf("many/%04d", i), random(rng.IntN(64)), "application/x-test", ""})
	}
	for i, p := range puts {
		a := def
		if p.ns == acmeNS {
			a = acme
		}
		var h []string
		if p.contentType != "" {
			h = []string{"Content-Type", p.contentType}
		}
		ans, err := a.do(http.MethodPut, "/"+p.ns+"/keys/"+url.PathEscape(p.key)+p.query, bytes.NewReader([]byte(p.value)), h...)
		if err != nil || ans.status != http.StatusCreated && ans.status != http.StatusOK {
			t.Fatalf("put %d (%s): %v %d %s", i, p.key, err, ans.status, ans.body)
		}
		if i%50 == 0 {
			clock.add(7 * time.Second) // storage over time, not at one instant
		}
	}
	// Reads (hits and misses), lists, deletes: usage of every kind.
	def.must(t, http.StatusOK, http.MethodGet, "/"+main+"/keys/json%2F1", "")
	def.must(t, http.StatusNotFound, http.MethodGet, "/"+main+"/keys/missing", "")
	def.must(t, http.StatusOK, http.MethodGet, "/"+main+"/keys?prefix=many/&limit=10", "")
	def.must(t, http.StatusOK, http.MethodDelete, "/"+main+"/keys/deleted", "")
	acme.must(t, http.StatusOK, http.MethodGet, "/"+acmeNS+"/keys/acme%2F1", "")
	clock.add(time.Minute)
	k.Server.Close() // flushes the counts kept in memory

	// Without the background worker, a namespace stays pending, and one
	// being deleted stays deleting.
	k = start(src, false)
	def.base, acme.base, globex.base = k.URL, k.URL, k.URL
	pending := def.createNamespace(t, "pending", false)
	globex.createNamespace(t, "globex-pending", false)
	def.must(t, http.StatusOK, http.MethodDelete, "/"+doomed, "")
	clock.add(time.Second)
	k.Server.Close()

	// The backup, and its restore into a fresh database.
	dir := t.TempDir()
	dump := filepath.Join(dir, "kv.dump")
	run(t, pgDump, "-Fc", "-f", dump, src)
	dst := pgtest.URL(t)
	run(t, pgRestore, "--exit-on-error", "--no-owner", "-d", dst, dump)
	compareTables(t, src, dst)

	// kvd on each, side by side, with the same clock.
	s, r := start(src, false), start(dst, false)
	tokens := []struct {
		name, token string
	}{{"default", apiKey}, {"acme", acme.token}, {"globex", globex.token}}
	both := func(token string) (api, api) {
		return api{hc: hc, base: s.URL, token: token}, api{hc: hc, base: r.URL, token: token}
	}
	month := clock.now().Format("2006-01")
	// Usage first: reads of the comparison below are counted too.
	for _, tok := range tokens {
		a, b := both(tok.token)
		same(t, tok.name+" usage", a, b, "/usage?month="+month)
	}
	a, b := both(apiKey)
	for _, id := range []string{main, doomed, pending} {
		same(t, "namespace usage", a, b, "/"+id+"/usage?month="+month)
	}
	var report struct {
		Data struct {
			Reads, Writes, Deletes, Lists int64
			StoredBytes                   int64 `json:"stored_bytes"`
		} `json:"data"`
	}
	if err := json.Unmarshal(a.must(t, http.StatusOK, http.MethodGet, "/usage?month="+month, "").body, &report); err != nil {
		t.Fatal(err)
	}
	if d := report.Data; d.Writes < int64(len(puts))-2 || d.Reads < 2 || d.Deletes < 1 || d.Lists < 1 || d.StoredBytes < 1<<20 {
		t.Fatalf("the usage to compare is thin: %+v", d)
	}

	statuses := map[string]int{}
	for _, tok := range tokens {
		a, b := both(tok.token)
		body := same(t, tok.name+" namespaces", a, b, "?page[size]=250")
		var list struct {
			Data []struct{ ID, Status string } `json:"data"`
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		for _, ns := range list.Data {
			statuses[ns.Status]++
			same(t, "namespace", a, b, "/"+ns.ID)
			if ns.Status == "provision_ok" {
				sameKeys(t, a, b, ns.ID)
			}
		}
	}
	if len(statuses) != 3 {
		t.Fatalf("namespace statuses compared: %v; want provision_ok, pending and deleting", statuses)
	}
	// Tokens: another organization's namespace is not found, a bad token
	// is refused, on both.
	a, b = both(acme.token)
	same(t, "another organization's namespace", a, b, "/"+main)
	a, b = both("not-a-token")
	same(t, "a bad token", a, b, "")

	// Expiry: as the clock moves past the TTLs (written within a minute
	// of the start, the comparison begins about two minutes in), the same
	// keys go at the same moments.
	for _, d := range []time.Duration{100 * time.Second, 150 * time.Second, 100 * time.Second} {
		clock.add(d)
		a, b := both(apiKey)
		for _, key := range []string{"ttl%2F300", "ttl%2F400", "ttl%2Fday", "overwritten"} {
			same(t, "key as the clock moves", a, b, "/"+main+"/keys/"+key)
		}
		same(t, "listing as the clock moves", a, b, "/"+main+"/keys?prefix=ttl/")
		a, b = both(acme.token)
		same(t, "acme key as the clock moves", a, b, "/"+acmeNS+"/keys/acme%2Fttl")
	}
	def.base = s.URL
	def.must(t, http.StatusNotFound, http.MethodGet, "/"+main+"/keys/ttl%2F400", "")
	def.must(t, http.StatusOK, http.MethodGet, "/"+main+"/keys/ttl%2Fday", "")
	t.Logf("%d keys written through kvd; compared on the restored database: %v namespaces by status, every key, usage, tokens, and expiry as the clock moved", len(puts), statuses)
}

// run runs a program and fails t with its output if it fails.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
	}
}

// same GETs path from a and b and fails t unless the answers have the same
// status, Content-Type and body; it returns the body.
func same(t *testing.T, what string, a, b api, path string) []byte {
	t.Helper()
	x, err := a.do(http.MethodGet, path, nil)
	if err != nil {
		t.Fatalf("%s: GET %s from the original: %v", what, path, err)
	}
	y, err := b.do(http.MethodGet, path, nil)
	if err != nil {
		t.Fatalf("%s: GET %s from the restored: %v", what, path, err)
	}
	if x.status != y.status || x.header.Get("Content-Type") != y.header.Get("Content-Type") || !bytes.Equal(x.body, y.body) {
		t.Fatalf("%s: GET %s differs:\noriginal: %d %q %.300q\nrestored: %d %q %.300q", what, path,
			x.status, x.header.Get("Content-Type"), x.body, y.status, y.header.Get("Content-Type"), y.body)
	}
	return x.body
}

// sameKeys compares a namespace's listing, page by page, and every key in
// it.
func sameKeys(t *testing.T, a, b api, ns string) {
	t.Helper()
	cursor := ""
	n := 0
	for {
		path := "/" + ns + "/keys?limit=100"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		var page struct {
			Data []struct{ Key string } `json:"data"`
			Meta struct {
				HasMore bool   `json:"has_more"`
				Cursor  string `json:"cursor"`
			} `json:"meta"`
		}
		if err := json.Unmarshal(same(t, "key listing", a, b, path), &page); err != nil {
			t.Fatal(err)
		}
		for _, k := range page.Data {
			same(t, "key", a, b, "/"+ns+"/keys/"+url.PathEscape(k.Key))
			n++
		}
		if !page.Meta.HasMore {
			break
		}
		cursor = page.Meta.Cursor
	}
	if n == 0 {
		t.Fatalf("namespace %s has no keys to compare", ns)
	}
}

// compareTables compares every table of kvd's schema in the two databases
// row by row.
func compareTables(t *testing.T, src, dst string) {
	t.Helper()
	ctx := context.Background()
	dump := func(u string) map[string][]string {
		c, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		var tables []string
		rows, err := c.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name string
			rows.Scan(&name)
			tables = append(tables, name)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		out := map[string][]string{}
		for _, table := range tables {
			rows, err := c.Query(ctx, fmt.Sprintf("SELECT row_to_json(t)::text FROM %s t", pgx.Identifier{table}.Sanitize()))
			if err != nil {
				t.Fatal(err)
			}
			var all []string
			for rows.Next() {
				var s string
				rows.Scan(&s)
				all = append(all, s)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			sort.Strings(all)
			out[table] = all
		}
		return out
	}
	a, b := dump(src), dump(dst)
	if len(a) < 4 {
		t.Fatalf("the original database has tables %v", a)
	}
	for table, rows := range a {
		other, ok := b[table]
		if !ok {
			t.Errorf("table %s is not in the restored database", table)
			continue
		}
		if len(rows) != len(other) {
			t.Errorf("table %s: %d rows in the original, %d restored", table, len(rows), len(other))
			continue
		}
		for i := range rows {
			if rows[i] != other[i] {
				t.Errorf("table %s differs:\noriginal: %.300s\nrestored: %.300s", table, rows[i], other[i])
				break
			}
		}
	}
	if len(b) != len(a) {
		t.Errorf("tables: %d in the original, %d restored", len(a), len(b))
	}
}

package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
)

// transferKey is a key of the export tests' data set.
type transferKey struct {
	key, ctype string
	value      []byte
	ttl        time.Duration
}

// transferData covers what an export must carry: text, JSON, UTF-8,
// characters JSON escapes, binary, control characters, an empty value, a
// value of the largest size, content types, expiries (one that will have
// passed by the import) and keys under a prefix.
func transferData() []transferKey {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, kv.MaxValueSize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(r.UintN(256))
	}
	return []transferKey{
		{key: "greeting", ctype: "text/plain; charset=utf-8", value: []byte("hello, world\n")},
		{key: "user/1", ctype: "application/json", value: []byte(`{"name":"Alice"}`)},
		{key: "user/2", ctype: "application/json", value: []byte(`{"name":"Zoë ✓"}`)},
		{key: "quote", ctype: "text/html", value: []byte(`"\<a href='x'>&amp;</a>` + "\t\r\n")},
		{key: "bin/all-bytes", ctype: "application/octet-stream", value: all},
		{key: "bin/nul", ctype: "text/plain", value: []byte("a\x00b")},
		{key: "empty", value: []byte{}},
		{key: "big", ctype: "image/png", value: big},
		{key: "ttl/hour", ctype: "text/plain", value: []byte("for an hour"), ttl: time.Hour},
		{key: "ttl/short", ctype: "text/plain", value: []byte("gone by the import"), ttl: 5 * time.Second},
	}
}

// transferT0 is the clock of the export tests.
var transferT0 = time.Date(2026, 6, 18, 12, 0, 0, 0, time.UTC)

// engine starts a kvd on the named engine with the shared key and clock.
func startEngine(t *testing.T, engine, apiKey string, clock *kvdtest.Clock) *kvdtest.Server {
	t.Helper()
	opts := []kvdtest.Option{kvdtest.WithAPIKey(apiKey), kvdtest.WithClock(clock.Now)}
	if engine == "postgres" {
		opts = append(opts, kvdtest.WithStore(pgtest.URL(t)))
	}
	return kvdtest.Start(t, opts...)
}

// readyNS creates a namespace and waits until it is provision_ok.
func readyNS(t *testing.T, c *client.Client, name string) *client.Namespace {
	t.Helper()
	ctx := context.Background()
	ns, err := c.CreateNamespace(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := c.WaitReady(wctx, ns.ID.String()); err != nil {
		t.Fatal(err)
	}
	return c.Namespace(ns.ID.String())
}

func fill(t *testing.T, ns *client.Namespace, data []transferKey) {
	t.Helper()
	for _, d := range data {
		if _, err := ns.Put(context.Background(), d.key, d.value, &client.PutOptions{ContentType: d.ctype, TTL: d.ttl}); err != nil {
			t.Fatalf("put %s: %v", d.key, err)
		}
	}
}

// stored is what a namespace holds of a key.
type stored struct {
	value   []byte
	ctype   string
	expires time.Time
}

// snapshot reads every key of ns, with what GET says of it.
func snapshot(t *testing.T, ns *client.Namespace) map[string]stored {
	t.Helper()
	ctx := context.Background()
	out := map[string]stored{}
	for k, err := range ns.Keys(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		v, info, err := ns.GetInfo(ctx, k.Key)
		if err != nil {
			t.Fatalf("get %s: %v", k.Key, err)
		}
		out[k.Key] = stored{v, info.ContentType, info.ExpiresAt}
	}
	return out
}

// exportLines parses an export file: its header and its key lines.
func exportLines(t *testing.T, path string) (exportHeader, []map[string]any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, maxExportLine+1)
	var h exportHeader
	var recs []map[string]any
	for i := 0; sc.Scan(); i++ {
		if i == 0 {
			if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
				t.Fatalf("header: %v", err)
			}
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		recs = append(recs, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return h, recs
}

// TestExportImportAcrossEngines exports a namespace from a kvd on one
// engine and imports it into a kvd on the other, both ways: values byte
// for byte (text, binary, empty, the largest), content types, and
// expiries, whose remaining time is carried over within a second, while a
// key that expired in between is skipped and counted.
func TestExportImportAcrossEngines(t *testing.T) {
	for _, pair := range [][2]string{{"pebble", "postgres"}, {"postgres", "pebble"}} {
		t.Run(pair[0]+"-to-"+pair[1], func(t *testing.T) {
			clock := kvdtest.NewClock(transferT0)
			key := "transfer-" + kv.NewID().String()
			src := startEngine(t, pair[0], key, clock)
			dst := startEngine(t, pair[1], key, clock)
			srcNS := readyNS(t, client.New(client.WithBaseURL(src.URL), client.WithAPIKey(key)), "from")
			dstNS := readyNS(t, client.New(client.WithBaseURL(dst.URL), client.WithAPIKey(key)), "to")
			data := transferData()
			fill(t, srcNS, data)
			want := snapshot(t, srcNS)

			h := newHarness(t)
			h.env["TELNYX_API_KEY"] = key
			h.now = clock.Now
			r := h.must("", "storage", "kv", "export", srcNS.ID(), "--endpoint", src.URL, "-o", "out.ndjson")
			if r.stdout != "" {
				t.Errorf("export -o wrote %q to stdout", r.stdout)
			}
			if !strings.Contains(r.stderr, fmt.Sprintf("Exported %d keys, ", len(data))) {
				t.Errorf("summary %q; want %d keys exported", r.stderr, len(data))
			}
			hdr, recs := exportLines(t, filepath.Join(h.dir, "out.ndjson"))
			if hdr.Format != "kv-export/1" || hdr.Namespace != "from" || hdr.ExportedAt != transferT0.Format(kv.KeyTimeFormat) {
				t.Errorf("header %+v", hdr)
			}
			var keys []string
			for _, rec := range recs {
				keys = append(keys, rec["key"].(string))
				_, text := rec["value"]
				_, b64 := rec["value_base64"]
				wantText := textValue(want[rec["key"].(string)].value)
				if text == b64 || text != wantText {
					t.Errorf("key %s: value %v, value_base64 %v; want text %v", rec["key"], text, b64, wantText)
				}
			}
			if !slices.IsSorted(keys) || len(keys) != len(data) {
				t.Errorf("export has keys %q; want all %d in byte order", keys, len(data))
			}

			// Ten and a third seconds later, into the other engine.
			clock.Advance(10*time.Second + 300*time.Millisecond)
			r = h.must("", "storage", "kv", "import", dstNS.ID(), "out.ndjson", "--endpoint", dst.URL)
			if want := fmt.Sprintf("Imported %d keys, ", len(data)-1); !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "skipped 1 (1 expired)") {
				t.Errorf("summary %q; want %q and one key expired", r.stderr, want)
			}
			got := snapshot(t, dstNS)
			delete(want, "ttl/short")
			if len(got) != len(want) {
				t.Errorf("the destination has %d keys; want %d", len(got), len(want))
			}
			for k, w := range want {
				g, ok := got[k]
				switch {
				case !ok:
					t.Errorf("key %s was not imported", k)
				case !bytes.Equal(g.value, w.value):
					t.Errorf("key %s: value of %d bytes differs from the source's %d", k, len(g.value), len(w.value))
				case g.ctype != w.ctype:
					t.Errorf("key %s: content type %q; want %q", k, g.ctype, w.ctype)
				case w.expires.IsZero() != g.expires.IsZero():
					t.Errorf("key %s: expires %v; want %v", k, g.expires, w.expires)
				case !w.expires.IsZero():
					// 3600s - 10.3s left: a TTL of 3589s from the import.
					if d := g.expires.Sub(w.expires); d > 0 || d <= -time.Second {
						t.Errorf("key %s: expires %v, %v from the source's %v; want within a second before", k, g.expires, d, w.expires)
					}
				}
			}
		})
	}
}

// TestExportPrefixAndStdout exports the keys under a prefix to stdout.
func TestExportPrefixAndStdout(t *testing.T) {
	h := newHarness(t)
	ns := readyNS(t, client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token)), "prefixed")
	fill(t, ns, transferData())
	r := h.must("", "storage", "kv", "export", ns.ID(), "--prefix", "user/")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], `{"key":"user/1","value":"{\"name\":\"Alice\"}","content_type":"application/json","expires_at":null}`) ||
		!strings.HasPrefix(lines[2], `{"key":"user/2",`) {
		t.Errorf("export --prefix user/ wrote:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "Exported 2 keys, 35 bytes, ") || !strings.Contains(r.stderr, " to stdout ") {
		t.Errorf("summary %q", r.stderr)
	}
}

// TestExportLeavesFileOnFailure: an export that fails part way (a read
// answered with a 500, injected by a proxy) leaves -o FILE as it was and
// no temporary file beside it; one of a namespace that is not ready is
// refused before anything is written.
func TestExportLeavesFileOnFailure(t *testing.T) {
	h := newHarness(t)
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	ns := readyNS(t, c, "faulty")
	fill(t, ns, transferData())
	if err := os.WriteFile(filepath.Join(h.dir, "keep.ndjson"), []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(h.srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	faulty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/keys/quote") {
			http.Error(w, "injected", http.StatusInternalServerError)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer faulty.Close()
	r := h.expect(ExitError, "storage", "kv", "export", ns.ID(), "-o", "keep.ndjson", "--endpoint", faulty.URL)
	if !strings.Contains(r.stderr, "reading key quote: ") {
		t.Errorf("stderr %q; want the key that failed named", r.stderr)
	}
	if got := h.readFile("keep.ndjson"); got != "old\n" {
		t.Errorf("keep.ndjson is now %q", got)
	}
	entries, _ := os.ReadDir(h.dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}

	if _, err := c.DeleteNamespace(context.Background(), ns.ID()); err != nil {
		t.Fatal(err)
	}
	// Deleting, or removed already by the background worker.
	r = h.run("", "storage", "kv", "export", ns.ID(), "-o", "keep.ndjson")
	if !(r.code == ExitError && strings.Contains(r.stderr, "is deleting; its keys can be read and written once it is provision_ok")) &&
		!(r.code == ExitNotFound && strings.Contains(r.stderr, "Error: namespace "+ns.ID()+" not found")) {
		t.Errorf("export of a deleted namespace: exit %d, %q", r.code, r.stderr)
	}
	if got := h.readFile("keep.ndjson"); got != "old\n" {
		t.Errorf("keep.ndjson is now %q", got)
	}
}

// TestExportImportGolden records the summaries of a round trip.
func TestExportImportGolden(t *testing.T) {
	clock := kvdtest.NewClock(transferT0)
	h := newHarness(t, kvdtest.WithClock(clock.Now))
	h.now = clock.Now
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	src := readyNS(t, c, "golden-src")
	readyNS(t, c, "golden-dst")
	fill(t, src, transferData())
	h.must("", "storage", "kv", "export", "golden-src", "-o", "src.ndjson")
	h.must("", "storage", "kv", "export", "golden-src", "--prefix", "user/", "-o", "users.ndjson")
	clock.Advance(time.Minute)
	h.must("", "storage", "kv", "import", "golden-dst", "src.ndjson")
	h.must(h.readFile("users.ndjson"), "storage", "kv", "import", "golden-dst", "-")
	h.checkGolden("export.golden")
}

// waitKeys waits until ns holds n keys.
func waitKeys(t *testing.T, ns *client.Namespace, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := 0
		for _, err := range ns.Keys(context.Background(), "") {
			if err != nil {
				t.Fatal(err)
			}
			got++
		}
		if got == n {
			return
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("the namespace has %d keys; want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// makeExport writes an export of n small keys and returns its lines.
func makeExport(n int) []string {
	lines := []string{`{"format":"kv-export/1","namespace":"made","exported_at":"2026-06-18T12:00:00.000000000Z"}`}
	for i := range n {
		lines = append(lines, fmt.Sprintf(`{"key":"k/%04d","value":"v%d","content_type":"text/plain","expires_at":null}`, i, i))
	}
	return lines
}

// TestImportInterruptedResumes interrupts an import part way (a real
// cancellation, as Ctrl-C gives: exit 130, "interrupted"), and cuts
// another short in the middle of a line; each run again with --if-absent
// ends with exactly the file's keys.
func TestImportInterruptedResumes(t *testing.T) {
	lines := makeExport(400)
	full := strings.Join(lines, "\n") + "\n"

	t.Run("interrupted", func(t *testing.T) {
		h := newHarness(t)
		ns := readyNS(t, client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token)), "resumed")
		pr, pw := io.Pipe()
		defer pw.Close()
		go func() {
			// Half the file, then the writer stalls as a slow pipe would.
			io.WriteString(pw, strings.Join(lines[:201], "\n")+"\n")
		}()
		ctx, cancel := context.WithCancel(context.Background())
		var stderr bytes.Buffer
		done := make(chan int)
		go func() {
			done <- Run(ctx, Env{Stdin: pr, Stdout: io.Discard, Stderr: &stderr, Dir: h.dir, Getenv: func(k string) string { return h.env[k] }},
				[]string{"storage", "kv", "import", ns.ID(), "-"})
		}()
		waitKeys(t, ns, 200)
		cancel()
		if code := <-done; code != ExitInterrupted {
			t.Fatalf("exit %d; want %d\n%s", code, ExitInterrupted, stderr.String())
		}
		if !strings.HasSuffix(stderr.String(), "interrupted\n") || !regexp.MustCompile(`\nImported \d+ keys, `).MatchString("\n"+stderr.String()) {
			t.Errorf("stderr %q", stderr.String())
		}
		r := h.must(full, "storage", "kv", "import", ns.ID(), "-", "--if-absent")
		checkResumed(t, r, ns, 200, 200)
	})

	t.Run("cut", func(t *testing.T) {
		h := newHarness(t)
		ns := readyNS(t, client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token)), "cut")
		cut := full[:strings.Index(full, `{"key":"k/0300"`)+20] // in the middle of line 302
		r := h.run(cut, "storage", "kv", "import", ns.ID(), "-")
		if r.code != ExitError || !strings.Contains(r.stderr, "Error: line 302: not a key line of kv-export/1 (the JSON value is incomplete)") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		waitKeys(t, ns, 300)
		r = h.must(full, "storage", "kv", "import", ns.ID(), "-", "--if-absent")
		checkResumed(t, r, ns, 100, 300)
	})
}

var ifAbsentRE = regexp.MustCompile(`; existing keys found with (If-None-Match: \*|a HEAD before each write \(the server does not honour If-None-Match\))\n$`)

func checkResumed(t *testing.T, r result, ns *client.Namespace, written, existed int) {
	t.Helper()
	if !strings.Contains(r.stderr, fmt.Sprintf("Imported %d keys, ", written)) || !strings.Contains(r.stderr, fmt.Sprintf("(%d already there)", existed)) || !ifAbsentRE.MatchString(r.stderr) {
		t.Errorf("resumed import said %q; want %d written and %d already there", r.stderr, written, existed)
	}
	got := snapshot(t, ns)
	if len(got) != 400 {
		t.Errorf("the namespace has %d keys; want 400", len(got))
	}
	for i := range 400 {
		k := fmt.Sprintf("k/%04d", i)
		if g := got[k]; string(g.value) != fmt.Sprint("v", i) || g.ctype != "text/plain" {
			t.Errorf("key %s: %q (%s)", k, g.value, g.ctype)
		}
	}
}

// TestImportIfAbsentWithoutConditionalWrites imports with --if-absent
// through a proxy that makes kvd look like a server without conditional
// requests (no ETag sent, If-None-Match dropped): existing keys are found
// with HEAD requests and kept, and the summary says so.
func TestImportIfAbsentWithoutConditionalWrites(t *testing.T) {
	h := newHarness(t)
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	ns := readyNS(t, c, "plain")
	if _, err := ns.Put(context.Background(), "k/0001", []byte("kept"), nil); err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(h.srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error { r.Header.Del("ETag"); return nil }
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("If-None-Match")
		proxy.ServeHTTP(w, r)
	}))
	defer plain.Close()
	r := h.must(strings.Join(makeExport(3), "\n"), "storage", "kv", "import", ns.ID(), "-", "--if-absent", "--endpoint", plain.URL)
	if !strings.Contains(r.stderr, "Imported 2 keys, 4 bytes, ") || !strings.Contains(r.stderr, "(1 already there)") ||
		!strings.HasSuffix(r.stderr, "; existing keys found with a HEAD before each write (the server does not honour If-None-Match)\n") {
		t.Errorf("summary %q", r.stderr)
	}
	if v, _, err := ns.Get(context.Background(), "k/0001"); err != nil || string(v) != "kept" {
		t.Errorf("k/0001 = %q, %v; want it kept", v, err)
	}
}

// TestImportHostileInput feeds import files that are wrong in every way it
// checks: each is refused with one clear line that names the line, exit 1,
// and nothing from the bad line on is written.
func TestImportHostileInput(t *testing.T) {
	h := newHarness(t)
	h.now = kvdtest.NewClock(transferT0).Now // summaries say "in 0s"
	ns := readyNS(t, client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token)), "hostile")
	header := makeExport(0)[0]
	good := func(k string) string { return `{"key":"` + k + `","value":"ok","content_type":"","expires_at":null}` }
	huge := `{"key":"huge","value":"` + strings.Repeat("x", 5<<20) + `"}`
	tooBig := `{"key":"big","value_base64":"` + base64.StdEncoding.EncodeToString(make([]byte, kv.MaxValueSize+1)) + `"}`
	cases := []struct {
		name, input string
	}{
		{"empty", ""},
		{"blank", "\n\n"},
		{"not-json", "hello\n" + good("a")},
		{"wrong-format", `{"format":"kv-export/2","namespace":"x"}` + "\n" + good("a")},
		{"header-array", "[1,2]\n"},
		{"huge-header", strings.Repeat("{", 5<<20)},
		{"malformed", header + "\n" + good("g/1") + "\n" + `{"key":"g/2","value":` + "\n" + good("g/3")},
		{"bad-base64", header + "\n" + good("g/1") + "\n" + `{"key":"g/2","value_base64":"AAE=x"}` + "\n" + good("g/3")},
		{"huge-line", header + "\n" + good("g/1") + "\n" + huge + "\n" + good("g/3")},
		{"too-big", header + "\n" + good("g/1") + "\n" + tooBig + "\n" + good("g/3")},
		{"bad-key", header + "\n" + good("g/1") + "\n" + good("g:2") + "\n" + good("g/3")},
		{"no-value", header + "\n" + good("g/1") + "\n" + `{"key":"g/2","content_type":"text/plain"}` + "\n" + good("g/3")},
		{"two-values", header + "\n" + good("g/1") + "\n" + `{"key":"g/2","value":"a","value_base64":"YQ=="}` + "\n" + good("g/3")},
		{"unknown-field", header + "\n" + good("g/1") + "\n" + `{"key":"g/2","value":"a","ttl":5}` + "\n" + good("g/3")},
		{"bad-expiry", header + "\n" + good("g/1") + "\n" + `{"key":"g/2","value":"a","expires_at":"tomorrow"}` + "\n" + good("g/3")},
		{"bad-type", header + "\n" + good("g/1") + "\n" + `{"key":"g/2","value":7}` + "\n" + good("g/3")},
		{"bad-content-type", header + "\n" + good("g/1") + "\n" + `{"key":"g/2","value":"a","content_type":"text/plain\u0007"}` + "\n" + good("g/3")},
		{"two-objects", header + "\n" + good("g/1") + "\n" + good("g/2") + good("g/2b") + "\n" + good("g/3")},
	}
	ctx := context.Background()
	for _, tc := range cases {
		h.note("%s", tc.name)
		path := filepath.Join(h.dir, tc.name+".ndjson")
		if err := os.WriteFile(path, []byte(tc.input), 0o600); err != nil {
			t.Fatal(err)
		}
		r := h.run("", "storage", "kv", "import", ns.ID(), tc.name+".ndjson")
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		// The summary of what was written before the bad line, if
		// anything was, then the error.
		if r.code != ExitError || len(lines) > 2 || !strings.HasPrefix(lines[len(lines)-1], "Error: ") {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and an Error: line last", tc.name, r.code, r.stderr)
		}
		if strings.Contains(tc.input, "g/1") {
			if _, _, err := ns.Get(ctx, "g/1"); err != nil {
				t.Errorf("%s: the line before the bad one was not written: %v", tc.name, err)
			}
		}
		for _, k := range []string{"g/2", "g/3", "a"} {
			if _, _, err := ns.Get(ctx, k); !errors.Is(err, kv.ErrNotFound) {
				t.Errorf("%s: key %s after the bad line was written (%v)", tc.name, k, err)
			}
		}
		for k, err := range ns.Keys(ctx, "") {
			if err != nil {
				t.Fatal(err)
			}
			ns.Delete(ctx, k.Key)
		}
	}

	h.note("--keep-going reports and skips the bad lines")
	input := header + "\n" + good("g/1") + "\n" + `{"key":"g/2","value_base64":"!"}` + "\n" + huge + "\n" + good("g:x") + "\n" + good("g/3") + "\n"
	r := h.run(input, "storage", "kv", "import", ns.ID(), "-", "--keep-going")
	if r.code != ExitError {
		t.Errorf("--keep-going with bad lines: exit %d; want 1", r.code)
	}
	for _, k := range []string{"g/1", "g/3"} {
		if _, _, err := ns.Get(ctx, k); err != nil {
			t.Errorf("--keep-going: %s was not written: %v", k, err)
		}
	}
	h.note("a missing file")
	h.expect(ExitError, "storage", "kv", "import", ns.ID(), "missing.ndjson")
	h.checkGolden("import-errors.golden")
}

// TestTransferProgressOnTerminal: on a terminal, export and import show a
// progress display on stderr, cleared before the summary line.
func TestTransferProgressOnTerminal(t *testing.T) {
	h := newHarness(t)
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	src := readyNS(t, c, "shown")
	dst := readyNS(t, c, "shown-too")
	fill(t, src, transferData())
	run := func(stdin string, args ...string) *lockedBuffer {
		t.Helper()
		var stdout bytes.Buffer
		stderr := &lockedBuffer{}
		env := Env{Stdin: strings.NewReader(stdin), Stdout: &stdout, Stderr: stderr, Dir: h.dir,
			Getenv: func(k string) string { return h.env[k] }, StderrIsTerminal: func() bool { return true }}
		if code := Run(context.Background(), env, args); code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, stderr.String())
		}
		return stderr
	}
	for _, tc := range []struct {
		args    []string
		shows   string
		summary string
	}{
		{[]string{"storage", "kv", "export", src.ID(), "-o", "shown.ndjson"}, "exporting", "Exported 10 keys, "},
		{[]string{"storage", "kv", "import", dst.ID(), "shown.ndjson"}, "importing", "Imported 10 keys, "},
	} {
		buf := run("", tc.args...)
		stderr := buf.String()
		last := stderr[strings.LastIndexAny(strings.TrimSuffix(stderr, "\n"), "\r\n")+1:]
		if !strings.Contains(stderr, tc.shows) || !strings.Contains(stderr, "\r") || !strings.HasPrefix(last, tc.summary) {
			t.Errorf("%s: stderr %q; want a progress display, then the summary on a line of its own", tc.args[2], stderr)
		}
		// A spinner must not go on drawing after the summary.
		time.Sleep(300 * time.Millisecond)
		if buf.String() != stderr {
			t.Errorf("%s: the progress display was drawn after the summary", tc.args[2])
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestExportSkipsVanishedKeys: a key listed but gone when read (a proxy
// answers its GET with kvd's own 404, as for a key deleted in between) is
// skipped and counted, and the export succeeds without it.
func TestExportSkipsVanishedKeys(t *testing.T) {
	h := newHarness(t)
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	ns := readyNS(t, c, "vanishing")
	fill(t, ns, transferData())
	target, _ := url.Parse(h.srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	vanishing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/keys/quote") {
			r.URL.Path = strings.TrimSuffix(r.URL.Path, "quote") + "never-written"
			r.URL.RawPath = ""
		}
		proxy.ServeHTTP(w, r)
	}))
	defer vanishing.Close()
	r := h.must("", "storage", "kv", "export", ns.ID(), "-o", "out.ndjson", "--endpoint", vanishing.URL)
	if !strings.Contains(r.stderr, "Exported 9 keys, ") || !strings.Contains(r.stderr, "skipped 1 (1 deleted before it was read)") {
		t.Errorf("summary %q", r.stderr)
	}
	_, recs := exportLines(t, filepath.Join(h.dir, "out.ndjson"))
	for _, rec := range recs {
		if rec["key"] == "quote" {
			t.Error("the vanished key is in the export")
		}
	}
	if len(recs) != 9 {
		t.Errorf("%d keys exported; want 9", len(recs))
	}
}

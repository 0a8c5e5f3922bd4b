package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/service"
)

// bulkFile writes an export file of recs (key lines as maps) to name in
// the harness's directory.
func bulkFile(t *testing.T, h *harness, name string, recs []map[string]any) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(`{"format":"kv-export/1","namespace":"src","exported_at":"2026-06-18T12:00:00.000Z"}` + "\n")
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(h.dir, name), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

var batchesRE = regexp.MustCompile(`(\d+) batch(es)?\)`)

// summaryBatches reads the number of batches from a bulk summary.
func summaryBatches(t *testing.T, stderr string) int {
	t.Helper()
	m := batchesRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no batch count in %q", stderr)
	}
	var n int
	fmt.Sscan(m[1], &n)
	return n
}

// TestBulkPutAndDelete: bulk put writes every key of an export file in
// batches of at most 1,000 keys and 16 MiB, with values, content types and
// TTLs, skipping expired keys and applying repeated keys in file order;
// bulk delete removes the keys listed and counts the absent ones.
func TestBulkPutAndDelete(t *testing.T) {
	h := newHarness(t)
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	ns := readyNS(t, c, "bulk")
	now := time.Now()

	const n = 2500
	var recs []map[string]any
	for i := range n {
		recs = append(recs, map[string]any{"key": fmt.Sprintf("k/%04d", i), "value": fmt.Sprintf("v%d", i), "content_type": "text/plain", "expires_at": nil})
	}
	bin := []byte{0, 1, 0xff, 0xfe}
	recs = append(recs,
		map[string]any{"key": "bin", "value_base64": base64.StdEncoding.EncodeToString(bin), "content_type": "application/octet-stream", "expires_at": nil},
		map[string]any{"key": "ttl", "value": "for an hour", "content_type": "", "expires_at": now.Add(time.Hour).UTC().Format(time.RFC3339Nano)},
		map[string]any{"key": "expired", "value": "gone", "content_type": "", "expires_at": now.Add(-time.Hour).UTC().Format(time.RFC3339Nano)},
		map[string]any{"key": "k/0007", "value": "last line wins", "content_type": "text/plain", "expires_at": nil},
	)
	bulkFile(t, h, "keys.ndjson", recs)
	r := h.must("", "storage", "kv", "bulk", "put", ns.ID(), "keys.ndjson")
	if !strings.HasPrefix(r.stderr, fmt.Sprintf("Wrote %s keys, ", thousands(n+3))) || !strings.Contains(r.stderr, "skipped 1 (1 expired), failed 0") {
		t.Fatalf("bulk put summary: %q", r.stderr)
	}
	if b := summaryBatches(t, r.stderr); b < 3 {
		t.Fatalf("%d keys in %d batches; a batch holds at most 1,000", n+3, b)
	}
	got := snapshot(t, ns)
	if len(got) != n+2 {
		t.Fatalf("%d keys stored; want %d", len(got), n+2)
	}
	if s := got["k/0042"]; string(s.value) != "v42" || s.ctype != "text/plain" {
		t.Errorf("k/0042 = %+v", s)
	}
	if s := got["k/0007"]; string(s.value) != "last line wins" {
		t.Errorf("k/0007 = %q; want the later line's value", s.value)
	}
	if s := got["bin"]; !bytes.Equal(s.value, bin) {
		t.Errorf("bin = %x; want %x", s.value, bin)
	}
	if s := got["ttl"]; s.expires.IsZero() || s.expires.Before(now.Add(59*time.Minute)) {
		t.Errorf("ttl expires %v; want about an hour from now", s.expires)
	}
	if _, ok := got["expired"]; ok {
		t.Error("an expired key was written")
	}

	// bulk delete: one key a line, blank lines and CRLF allowed, absent
	// keys counted.
	var list strings.Builder
	for i := range 1500 {
		fmt.Fprintf(&list, "k/%04d\r\n", i)
	}
	list.WriteString("\nnever-written\nbin\n")
	h.expect(ExitUsage, "storage", "kv", "bulk", "delete", ns.ID(), "-")
	r = h.must(list.String(), "storage", "kv", "bulk", "delete", ns.ID(), "-", "--yes")
	if !strings.HasPrefix(r.stderr, "Deleted 1,501 keys from ") || !strings.Contains(r.stderr, "(1,502 lines in ") || !strings.Contains(r.stderr, "); 1 not there, failed 0") || summaryBatches(t, r.stderr) < 2 {
		t.Fatalf("bulk delete summary: %q", r.stderr)
	}
	left := snapshot(t, ns)
	if len(left) != n-1500+1 {
		t.Fatalf("%d keys left; want %d", len(left), n-1500+1)
	}
	if _, ok := left["k/1499"]; ok {
		t.Error("k/1499 was not deleted")
	}
	if _, ok := left["k/1500"]; !ok {
		t.Error("k/1500 was deleted")
	}
}

// TestBulkPutLargeValues: values of 1 MiB go in batches of at most
// 16 MiB of JSON.
func TestBulkPutLargeValues(t *testing.T) {
	h := newHarness(t)
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	ns := readyNS(t, c, "large")
	rng := rand.NewChaCha8([32]byte{3, 4})
	big := make([]byte, kv.MaxValueSize)
	var recs []map[string]any
	for i := range 12 {
		rng.Read(big)
		recs = append(recs, map[string]any{"key": fmt.Sprintf("big/%d", i), "value_base64": base64.StdEncoding.EncodeToString(big), "content_type": "", "expires_at": nil})
	}
	bulkFile(t, h, "big.ndjson", recs)
	r := h.must("", "storage", "kv", "bulk", "put", ns.ID(), "big.ndjson", "--concurrency", "1")
	// 12 values of 1.33 MiB in base64 (16.8 MiB of JSON): two batches at least.
	if !strings.HasPrefix(r.stderr, "Wrote 12 keys, 12,582,912 bytes") || summaryBatches(t, r.stderr) < 2 {
		t.Fatalf("bulk put of large values: %q", r.stderr)
	}
	v, _, err := ns.Get(context.Background(), "big/11")
	if err != nil || !bytes.Equal(v, big) {
		t.Fatalf("big/11: %d bytes, %v; want the last value written", len(v), err)
	}
}

// TestBulkFailures: keys the service refuses are each reported with their
// line, the others are written, and the command exits 1; a bad line stops
// the command after the lines before it; interruption and whole-request
// failures say what was done.
func TestBulkFailures(t *testing.T) {
	h := newHarness(t)
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	ns := readyNS(t, c, "failures")
	id, _ := kv.ParseID(ns.ID())
	// A token that may write only under ok/: the other keys fail one by
	// one.
	h.env["TELNYX_API_KEY"] = h.srv.NewScopedToken(t, service.TokenSpec{Org: kv.DefaultOrg, Namespaces: []kv.ID{id}, Prefixes: []string{"ok/"}})
	bulkFile(t, h, "mixed.ndjson", []map[string]any{
		{"key": "ok/1", "value": "1", "content_type": "", "expires_at": nil},
		{"key": "no/2", "value": "2", "content_type": "", "expires_at": nil},
		{"key": "ok/3", "value": "3", "content_type": "", "expires_at": nil},
		{"key": "no/4", "value": "4", "content_type": "", "expires_at": nil},
	})
	r := h.run("", "storage", "kv", "bulk", "put", ns.ID(), "mixed.ndjson")
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.code != ExitError || len(lines) != 4 ||
		!strings.HasPrefix(lines[0], "line 3: key no/2: ") && !strings.HasPrefix(lines[1], "line 3: key no/2: ") ||
		!strings.Contains(r.stderr, "line 5: key no/4: ") ||
		!strings.Contains(r.stderr, "Wrote 2 keys, 2 bytes") || !strings.Contains(r.stderr, "failed 2") ||
		lines[3] != "Error: 2 keys failed; see above" {
		t.Fatalf("bulk put with refused keys: exit %d, stderr %q", r.code, r.stderr)
	}
	h.env["TELNYX_API_KEY"] = h.srv.Token
	got := snapshot(t, ns)
	if len(got) != 2 || string(got["ok/3"].value) != "3" {
		t.Fatalf("stored %v; want ok/1 and ok/3", got)
	}

	// A bad line stops the command; the lines before it are written.
	src := `{"format":"kv-export/1","namespace":"x","exported_at":"2026-06-18T12:00:00.000Z"}` + "\n" +
		`{"key":"before","value":"b","content_type":"","expires_at":null}` + "\n" +
		`{"key":"bad:key","value":"x","content_type":"","expires_at":null}` + "\n" +
		`{"key":"after","value":"a","content_type":"","expires_at":null}` + "\n"
	r = h.run(src, "storage", "kv", "bulk", "put", ns.ID(), "-")
	if r.code != ExitError || !strings.Contains(r.stderr, "Error: line 3: key \"bad:key\"") {
		t.Fatalf("bulk put with a bad line: exit %d, %q", r.code, r.stderr)
	}
	if _, _, err := ns.Get(context.Background(), "before"); err != nil {
		t.Errorf("the line before the bad one was not written: %v", err)
	}
	if _, _, err := ns.Get(context.Background(), "after"); err == nil {
		t.Error("the line after the bad one was written")
	}
	// An invalid key in a delete list, likewise.
	r = h.run("before\nno:colons\n", "storage", "kv", "bulk", "delete", ns.ID(), "-", "--yes")
	if r.code != ExitError || !strings.Contains(r.stderr, "Error: line 2: key \"no:colons\"") {
		t.Fatalf("bulk delete with a bad key: exit %d, %q", r.code, r.stderr)
	}
	// A namespace that does not exist fails the first batch as a whole.
	r = h.run("", "storage", "kv", "bulk", "put", "00000000-0000-4000-8000-000000000000", "mixed.ndjson")
	if r.code != ExitNotFound {
		t.Fatalf("bulk put into a missing namespace: exit %d, %q", r.code, r.stderr)
	}
	h.expect(ExitUsage, "storage", "kv", "bulk", "put", ns.ID(), "mixed.ndjson", "--concurrency", "0")
	h.expect(ExitError, "storage", "kv", "bulk", "put", ns.ID(), "missing.ndjson")
}

// TestBulkProgressOnTerminal: on a terminal bulk put shows a progress bar
// on stderr, cleared before the summary line.
func TestBulkProgressOnTerminal(t *testing.T) {
	h := newHarness(t)
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	ns := readyNS(t, c, "progress")
	var recs []map[string]any
	for i := range 3000 {
		recs = append(recs, map[string]any{"key": fmt.Sprintf("p/%d", i), "value": strings.Repeat("x", 100), "content_type": "", "expires_at": nil})
	}
	bulkFile(t, h, "p.ndjson", recs)
	var stdout bytes.Buffer
	stderr := &lockedBuffer{}
	env := Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: stderr, Dir: h.dir,
		Getenv: func(k string) string { return h.env[k] }, StderrIsTerminal: func() bool { return true }}
	if code := Run(context.Background(), env, []string{"storage", "kv", "bulk", "put", ns.ID(), "p.ndjson"}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stderr.String()
	last := out[strings.LastIndexAny(strings.TrimSuffix(out, "\n"), "\r\n")+1:]
	if !strings.Contains(out, "writing") || !strings.Contains(out, "\r") || !strings.HasPrefix(last, "Wrote 3,000 keys, ") {
		t.Fatalf("stderr %q; want a progress bar, then the summary on a line of its own", out)
	}
}

package cli

import (
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// Endpoints are checked when set, and a base URL with /v2 or
// /v2/storage/kvs is the same API root; a server that cannot be reached is
// told apart from a key that does not work.
func TestEndpointGolden(t *testing.T) {
	h := newHarness(t)
	delete(h.env, "TELNYX_BASE_URL")
	h.expect(ExitUsage, "auth", "api-key", "set", "k", "--endpoint", "localhost:8080")
	h.expect(ExitUsage, "auth", "api-key", "set", "k", "--endpoint", "ftp://example.com")
	h.expect(ExitUsage, "auth", "api-key", "set", "k", "--endpoint", "http://127.0.0.1:8080/?token=x")
	h.must("", "auth", "api-key", "set", h.srv.Token, "--endpoint", h.srv.URL+"/v2/storage/kvs/")
	h.note("config file:\n%s", mustRead(t, h.env["TELNYX_CONFIG_PATH"]))
	h.must("", "storage", "kv", "list")
	h.must("", "storage", "kv", "list", "--endpoint", h.srv.URL+"/v2")
	h.env["TELNYX_BASE_URL"] = "127.0.0.1:8080"
	h.expect(ExitUsage, "storage", "kv", "list")
	h.expect(ExitUsage, "auth", "status")
	delete(h.env, "TELNYX_BASE_URL")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	h.replace[down] = "http://DOWN"
	h.replace[l.Addr().String()] = "DOWN-ADDR"
	r := h.run("", "auth", "status", "--endpoint", down)
	if r.code != ExitError || !strings.Contains(r.stderr, "Error: cannot reach "+down+": ") || strings.Contains(r.stderr, "does not work") {
		t.Fatalf("auth status with the server down: exit %d, stderr %q", r.code, r.stderr)
	}
	h.env["TELNYX_API_KEY"] = "wrong"
	h.expect(ExitError, "auth", "status")
	h.checkGolden("endpoint.golden")
}

// newerServer stands for a service that sends a key's metadata headers and
// listing fields (expires_at, etag).
func newerServer(t *testing.T) *httptest.Server {
	t.Helper()
	const id = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/v2/storage/kvs/"+id+"/keys":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"record_type":"storage_kv_key","data":[`+
				`{"key":"session/abc","size_bytes":13,"updated_at":"2026-06-18T14:48:17.475129983Z","expires_at":"2026-06-19T14:48:17.475129983Z","etag":"\"e2\""},`+
				`{"key":"user/1","size_bytes":21,"updated_at":"2026-06-18T14:48:17.475129983Z","expires_at":null,"etag":"\"e1\""}],"meta":{"has_more":false}}`)
		case strings.HasPrefix(p, "/v2/storage/kvs/"+id+"/keys/"):
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "13")
			w.Header().Set("ETag", `"e2"`)
			w.Header().Set("Kv-Updated-At", "2026-06-18T14:48:17.475129983Z")
			w.Header().Set("Kv-Expires-At", "2026-06-19T14:48:17.475129983Z")
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestKeyInfoGolden(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "info", "--wait", "--bind", "INFO")
	h.must("", "storage", "kv", "key", "put", "user/1", `{"name":"Alice"}`, "--content-type", "application/json")
	h.must("", "storage", "kv", "key", "put", "session/abc", `{"userId":42}`, "--ttl", "1d")
	r := h.must("", "storage", "kv", "key", "info", "user/1")
	if !strings.Contains(r.stdout, "16 bytes") || !strings.Contains(r.stdout, "application/json") {
		t.Fatalf("key info: %q", r.stdout)
	}
	h.must("", "storage", "kv", "key", "info", "INFO", "session/abc", "-o", "json")
	h.expect(ExitNotFound, "storage", "kv", "key", "info", "user/none")
	h.expect(ExitNotFound, "storage", "kv", "key", "info", "00000000-0000-4000-8000-000000000000", "user/1")
	h.must("", "storage", "kv", "key", "list", "-o", "wide")

	h.note("a service that sends the key's metadata headers and listing fields")
	srv := newerServer(t)
	h.env["TELNYX_BASE_URL"] = srv.URL
	h.replace[srv.URL] = "http://NEWER"
	const id = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"
	r = h.must("", "storage", "kv", "key", "info", id, "session/abc")
	if !strings.Contains(r.stdout, `"e2"`) || strings.Contains(r.stdout, "unknown") {
		t.Fatalf("key info from a newer service: %q", r.stdout)
	}
	r = h.must("", "storage", "kv", "key", "list", id, "-o", "wide")
	if !strings.Contains(r.stdout, "EXPIRES") || !strings.Contains(r.stdout, "ETAG") || !strings.Contains(r.stdout, " - ") {
		t.Fatalf("key list -o wide from a newer service: %q", r.stdout)
	}
	h.must("", "storage", "kv", "key", "list", id, "-o", "json")
	h.checkGolden("keyinfo.golden")
}

// The bill of a busy month: thousands separators, GB-months to 6
// significant digits, exact amounts, "per million".
func TestBillGolden(t *testing.T) {
	h := newHarness(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"data":{"record_type":"storage_kv_usage","month":"2026-11","period_start":"2026-11-01T00:00:00.000Z","period_end":"2026-12-01T00:00:00.000Z",
"reads":123456789,"writes":2500000,"deletes":1000,"lists":1000001,"storage_byte_seconds":"13107200000000000.000","storage_gb_months":"5.056790123456","stored_bytes":5368709120,
"namespaces":[{"id":"6ba7b810-9dad-41d1-80b4-00c04fd430c8","name":"my-cache","reads":123456789,"writes":2500000,"deletes":1000,"lists":1000001,"storage_byte_seconds":"13107200000000000.000","storage_gb_months":"5.056790123456","stored_bytes":5368709120}],
"bill":{"currency":"USD","lines":[
{"resource":"reads","unit":"operations","quantity":"123456789","free":"10000000","billable":"113456789","unit_price":"0.35","per_units":1000000,"amount":"39.71"},
{"resource":"writes","unit":"operations","quantity":"2500000","free":"1000000","billable":"1500000","unit_price":"3.50","per_units":1000000,"amount":"5.25"},
{"resource":"deletes","unit":"operations","quantity":"1000","free":"1000000","billable":"0","unit_price":"3.50","per_units":1000000,"amount":"0.00"},
{"resource":"lists","unit":"operations","quantity":"1000001","free":"1000000","billable":"1","unit_price":"3.50","per_units":1000000,"amount":"0.00"},
{"resource":"storage","unit":"GB-month","quantity":"5.056790123456","free":"1.000000000000","billable":"4.056790123456","unit_price":"0.35","per_units":1,"amount":"1.42"}],
"total":"46.38"}}}`)
	}))
	defer srv.Close()
	h.env["TELNYX_BASE_URL"] = srv.URL
	r := h.must("", "storage", "kv", "usage")
	for _, want := range []string{"123,456,789", "5.05679 ", "$0.35 per million", "$39.71", "$46.38", "5,368,709,120"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("usage lacks %q:\n%s", want, r.stdout)
		}
	}
	h.checkGolden("bill.golden")
}

// --cacert trusts a private CA; --insecure trusts anything, saying so.
func TestTLSFlags(t *testing.T) {
	h := newHarness(t)
	target, _ := url.Parse(h.srv.URL)
	tlsSrv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	h.env["TELNYX_BASE_URL"] = tlsSrv.URL
	ca := filepath.Join(h.dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := h.run("", "storage", "kv", "list"); r.code != ExitError || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("without --cacert: exit %d, stderr %q; want a certificate error", r.code, r.stderr)
	}
	if r := h.run("", "storage", "kv", "list", "--cacert", "ca.pem"); r.code != 0 || r.stderr != "" {
		t.Fatalf("--cacert: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := h.run("", "storage", "kv", "list", "--insecure"); r.code != 0 || !strings.HasPrefix(r.stderr, "Warning: --insecure") {
		t.Fatalf("--insecure: exit %d, stderr %q; want success and a warning", r.code, r.stderr)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "junk.pem"), []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := h.run("", "storage", "kv", "list", "--cacert", "junk.pem"); r.code != ExitUsage {
		t.Fatalf("--cacert of a file without a certificate: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestParseTTL(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30s": 30 * time.Second, "5m": 5 * time.Minute, "1h": time.Hour,
		"1d": 24 * time.Hour, "2d12h": 60 * time.Hour, "1d1s": 24*time.Hour + time.Second, "7d": 7 * 24 * time.Hour,
	} {
		if got, err := parseTTL(in); err != nil || got != want {
			t.Errorf("parseTTL(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0s", "1500ms", "soon", "d", "1.5d", "-1d", "1d-1h", "1d+1h", "999999999999d", "-5s", "1w"} {
		if got, err := parseTTL(in); err == nil {
			t.Errorf("parseTTL(%q) = %v; want an error", in, got)
		}
	}
}

// Every command shows examples in its help.
func TestEveryCommandHasExamples(t *testing.T) {
	a := &app{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" && c.Name() != "help" && c.Name() != "completion" {
			t.Errorf("%s has no Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(a.newRootCommand())
}

// Shell completion of NS lists the namespaces and func.toml's bindings.
func TestCompletionOfNamespaces(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "alpha", "--wait", "--bind", "ALPHA")
	h.must("", "storage", "kv", "create", "--name", "beta", "--wait")
	r := h.must("", "__complete", "storage", "kv", "get", "")
	for _, want := range []string{"alpha\t", "beta\t", "ALPHA\tfunc.toml binding"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("completion lacks %q:\n%s", want, r.stdout)
		}
	}
	r = h.must("", "__complete", "storage", "kv", "key", "list", "a")
	if !strings.Contains(r.stdout, "alpha") || strings.Contains(r.stdout, "beta") {
		t.Errorf("completion of \"a\": %s", r.stdout)
	}
}

// key put KEY - on a terminal says what it waits for; from a pipe it is
// silent.
func TestPutFromTerminalStdinSaysSo(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "stdin", "--wait", "--bind", "STDIN")
	h.terminal = true
	r := h.must("typed", "storage", "kv", "key", "put", "k", "-")
	if r.stderr != "Reading the value from stdin; end with Ctrl-D\n" {
		t.Fatalf("put from a terminal: stderr %q; want the hint", r.stderr)
	}
	h.terminal = false
	if r := h.must("piped", "storage", "kv", "key", "put", "k", "-"); r.stderr != "" {
		t.Fatalf("put from a pipe: stderr %q; want nothing", r.stderr)
	}
	if r := h.must("", "storage", "kv", "key", "get", "k"); r.stdout != "piped" {
		t.Fatalf("value = %q", r.stdout)
	}
}

package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgekv/kv/internal/kvdtest"
)

// hostile holds values a hostile func.toml, config or server could plant:
// command substitutions, quotes of both kinds, backslashes, newlines.
var hostile = []string{
	"$(touch pwned-1)",
	"`touch pwned-2`",
	`it's "quoted" \ and \\ $HOME ${HOME} $((1+1))`,
	"two\nlines; touch pwned-3",
	"'; touch pwned-4; '",
	"\\'$(touch pwned-5)\\'",
	"",
}

// sourced writes script to a temp dir, sources it with /bin/sh from there
// and prints the variable name; it fails the test if any command planted
// in a value ran.
func sourced(t *testing.T, script, name string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vars"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `. ./vars && printf %s "$`+name+`"`)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sourcing %q: %v", script, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "pwned*")); len(m) > 0 {
		t.Fatalf("sourcing %q ran a planted command: %v", script, m)
	}
	return string(out)
}

func TestEnvOutputIsShellSafe(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	h := newHarness(t)
	for _, v := range hostile {
		h.env["TELNYX_API_KEY"] = v
		r := h.must("", "env")
		if got := sourced(t, r.stdout, "TELNYX_API_KEY"); got != v {
			t.Errorf("env (shell) with TELNYX_API_KEY=%q read back by sh as %q", v, got)
		}
		if got := sourced(t, r.stdout, "TELNYX_BASE_URL"); got != h.srv.URL+"/v2" {
			t.Errorf("env (shell): TELNYX_BASE_URL read back as %q", got)
		}

		r = h.run("", "env", "--format", "dotenv")
		if strings.ContainsAny(v, "\n\r\x00'\\") {
			if r.code != ExitError || r.stdout != "" || !strings.Contains(r.stderr, "cannot write TELNYX_API_KEY for a .env file") {
				t.Errorf("env --format dotenv with TELNYX_API_KEY=%q: exit %d, stdout %q, stderr %q; want a refusal and nothing written", v, r.code, r.stdout, r.stderr)
			}
			continue
		}
		if r.code != 0 {
			t.Fatalf("env --format dotenv with TELNYX_API_KEY=%q: exit %d, %s", v, r.code, r.stderr)
		}
		if got := sourced(t, r.stdout, "TELNYX_API_KEY"); got != v {
			t.Errorf("env --format dotenv with TELNYX_API_KEY=%q read back by sh as %q", v, got)
		}
		// The dotenv parsers' rule: a value in single quotes is taken as
		// it is, up to the closing quote.
		for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
			name, val, _ := strings.Cut(line, "=")
			if len(val) < 2 || val[0] != '\'' || val[len(val)-1] != '\'' || strings.Contains(val[1:len(val)-1], "'") {
				t.Errorf("dotenv line %q: want NAME='value' with no quote inside", line)
			}
			if name == "TELNYX_API_KEY" && val[1:len(val)-1] != v {
				t.Errorf("dotenv line %q does not carry %q literally", line, v)
			}
		}
	}
	h.env["TELNYX_API_KEY"] = "`touch pwned`"
	r := h.must("", "env", "--format", "json")
	var m map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m["TELNYX_API_KEY"] != "`touch pwned`" {
		t.Fatalf("env --format json = %q (%v)", r.stdout, err)
	}
}

// A func.toml whose binding id is not a UUID is refused wherever it is
// read, naming the binding and the file; so is an id a server hands to
// bind.
func TestBadBindingIDs(t *testing.T) {
	h := newHarness(t)
	if err := os.WriteFile(filepath.Join(h.dir, "func.toml"), []byte("[storage.kv.MY_CACHE]\nid = \"`touch pwned`\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"env"}, {"exec", "--", "true"}, {"storage", "kv", "get"}, {"storage", "kv", "key", "list", "MY_CACHE"}} {
		r := h.expect(ExitError, args...)
		if !strings.Contains(r.stderr, filepath.Join(h.dir, "func.toml")) || !strings.Contains(r.stderr, "binding MY_CACHE: id \"`touch pwned`\" is not a namespace id") {
			t.Errorf("%v: stderr %q; want the file, the binding and the bad id", args, r.stderr)
		}
	}
	os.Remove(filepath.Join(h.dir, "func.toml"))

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/v2/storage/kvs" {
			fmt.Fprint(w, `{"data":{"id":"$(touch pwned)","name":"evil","status":"provision_ok"}}`)
			return
		}
		fmt.Fprint(w, `{"data":[{"id":"$(touch pwned)","name":"evil","status":"provision_ok"}],"meta":{"page_number":1,"page_size":250,"total_pages":1,"total_results":1}}`)
	}))
	defer srv.Close()
	h.env["TELNYX_BASE_URL"] = srv.URL
	r := h.expect(ExitError, "storage", "kv", "bind", "evil", "EVIL")
	if !strings.Contains(r.stderr, "not a UUID") {
		t.Errorf("bind of a namespace whose id is not a UUID: %q", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "func.toml")); err == nil {
		t.Errorf("bind wrote func.toml with a bad id")
	}
}

// hostileServer answers every listing with names, keys, statuses and
// errors full of terminal escapes, C1 controls and invalid UTF-8.
func hostileServer(t *testing.T) *httptest.Server {
	t.Helper()
	const id = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"
	evil := "x\x1b]0;owned\x07\x1b[2J\u009b31m\xff\u202eevil\x7f\tend"
	enc := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		p := r.URL.Path
		switch {
		case p == "/v2/storage/kvs":
			fmt.Fprintf(w, `{"data":[{"record_type":"storage_kv","id":%s,"name":%s,"status":%s,"created_at":"2026-01-01T00:00:00.000Z"}],"meta":{"page_number":1,"page_size":20,"total_pages":2,"total_results":21}}`, enc(id), enc(evil), enc(evil))
		case p == "/v2/storage/kvs/"+id:
			fmt.Fprintf(w, `{"data":{"record_type":"storage_kv","id":%s,"name":%s,"status":"provision_ok","created_at":"2026-01-01T00:00:00.000Z"}}`, enc(id), enc(evil))
		case p == "/v2/storage/kvs/"+id+"/keys":
			fmt.Fprintf(w, `{"data":[{"key":%s,"size_bytes":1,"updated_at":"2026-01-01T00:00:00.000000000Z"}],"meta":{"has_more":true,"cursor":%s}}`, enc(evil), enc(evil))
		case strings.HasSuffix(p, "/keys/plain"):
			// An error from a proxy: plain text, where invalid UTF-8
			// survives (JSON decoding replaces it).
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "upstream "+evil)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"errors":[{"code":"10005","title":"Not found","detail":%s}]}`, enc("gone "+evil))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// terminalSafe reports what in s could act on a terminal: a control
// character other than newline, a C1 control, invalid UTF-8, a bidi
// override.
func terminalSafe(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("invalid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 || invisible(r) {
			return fmt.Errorf("raw %U", r)
		}
	}
	return nil
}

func TestHostileServerOutputIsEscaped(t *testing.T) {
	h := newHarness(t)
	srv := hostileServer(t)
	h.env["TELNYX_BASE_URL"] = srv.URL
	h.replace[srv.URL] = "http://HOSTILE"
	const id = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"
	h.terminal = true
	runs := []result{
		h.must("", "storage", "kv", "list"),
		h.must("", "storage", "kv", "get", id),
		h.must("", "storage", "kv", "key", "list", id),
		h.run("", "storage", "kv", "key", "get", id, "k"),
		h.run("", "storage", "kv", "key", "get", id, "plain"),
		h.run("n\n", "storage", "kv", "delete", id),
		h.must("", "storage", "kv", "list", "-o", "json"),
		h.must("", "storage", "kv", "key", "list", id, "-o", "json"),
	}
	for i, r := range runs {
		for _, out := range []string{r.stdout, r.stderr} {
			if err := terminalSafe(out); err != nil {
				t.Errorf("run %d printed %v: %q", i, err, out)
			}
		}
	}
	// JSON decoding turned the invalid byte into U+FFFD already.
	if !strings.Contains(runs[0].stdout, `x\x1b]0;owned\x07\x1b[2J\u009b31m`+"\ufffd"+`\u202eevil\x7f\tend`) {
		t.Errorf("the table does not show the escapes: %q", runs[0].stdout)
	}
	if !strings.Contains(runs[4].stderr, `upstream x\x1b]0;owned\x07\x1b[2J\u009b31m\xff\u202eevil\x7f end`) {
		t.Errorf("the plain-text error does not show the escapes: %q", runs[4].stderr)
	}
	if !strings.Contains(runs[6].stdout, `\u001b]0;owned\u0007\u001b[2J\u009b31m`+"\ufffd"+`\u202eevil\u007f\tend`) {
		t.Errorf("the JSON does not escape control characters: %q", runs[5].stdout)
	}
	h.checkGolden("escape.golden")
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain/key=1.2":             "plain/key=1.2",
		"Alice 👋 café":              "Alice 👋 café",
		"\x1b[31mred":               `\x1b[31mred`,
		"\u009b2J":                  `\u009b2J`,
		"bad\xffutf8\xc3":           `bad\xffutf8\xc3`,
		"tab\tnl\ncr\r\x00\x7f":     `tab\tnl\ncr\r\x00\x7f`,
		"\u202egnp.exe\u2066\u2028": `\u202egnp.exe\u2066\u2028`,
	} {
		if got := esc(in); got != want {
			t.Errorf("esc(%q) = %s; want %s", in, got, want)
		}
	}
	if got := string(escJSON([]byte(`{"a":"` + "\u009b\x7f\u00e9" + `"}`))); got != `{"a":"\u009b\u007f`+"\u00e9"+`"}` {
		t.Errorf("escJSON = %s", got)
	}
}

// key list --all against a server that repeats its cursor ends with an
// error instead of looping.
func TestKeyListAllStopsOnARepeatedCursor(t *testing.T) {
	h := newHarness(t)
	var requests int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		if requests > 100 {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"data":[{"key":"k/%d","size_bytes":1,"updated_at":"2026-01-01T00:00:00.000000000Z"}],"meta":{"has_more":true,"cursor":"same"}}`, requests)
	}))
	defer srv.Close()
	h.env["TELNYX_BASE_URL"] = srv.URL
	r := h.expect(ExitError, "storage", "kv", "key", "list", "6ba7b810-9dad-41d1-80b4-00c04fd430c8", "--all")
	if !strings.Contains(r.stderr, "repeats an earlier cursor") || requests > 3 {
		t.Fatalf("after %d requests: stderr %q; want a repeated-cursor error", requests, r.stderr)
	}
	h.checkGolden("cursor.golden")
}

// create --wait gives up after --timeout, naming the namespace and the
// status it was left in; the id is printed before the wait.
func TestCreateWaitTimeout(t *testing.T) {
	h := newHarness(t, kvdtest.WithoutBackground())
	r := h.run("", "storage", "kv", "create", "--name", "stuck", "--wait", "--timeout", "1s", "--bind", "STUCK")
	id := uuidRE.FindString(r.stderr)
	if r.code != ExitError || !strings.HasPrefix(r.stderr, "Created namespace stuck ("+id+"); waiting") {
		t.Fatalf("exit %d, stderr %q; want exit 1 and the id first", r.code, r.stderr)
	}
	if id == "" || !strings.Contains(r.stderr, "is not provision_ok after 1s (last status: pending)") {
		t.Fatalf("stderr %q; want the id and the last status", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "func.toml")); err == nil {
		t.Fatal("a namespace that never became ready was bound")
	}
	h.expect(ExitUsage, "storage", "kv", "create", "--name", "x", "--timeout", "1s")
	h.expect(ExitUsage, "storage", "kv", "create", "--name", "x", "--wait", "--timeout", "0s")
	h.checkGolden("wait.golden")
}

// On a terminal the wait shows one rewritten status line, cleared at the end.
func TestCreateWaitOnATerminal(t *testing.T) {
	h := newHarness(t)
	var stdout, stderr strings.Builder
	env := Env{
		Stdout: &stdout, Stderr: &stderr,
		Getenv:           func(k string) string { return h.env[k] },
		Dir:              h.dir,
		StderrIsTerminal: func() bool { return true },
	}
	if code := Run(t.Context(), env, []string{"storage", "kv", "create", "--name", "live", "--wait"}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "\r\x1b[Kstatus: ") || !strings.HasSuffix(stderr.String(), "\r\x1b[K") {
		t.Fatalf("stderr %q; want a status line rewritten in place and cleared", stderr.String())
	}
	_ = time.Second
}

func TestQuantity(t *testing.T) {
	for in, want := range map[string]string{
		"0":                     "0",
		"0.000000000000":        "0",
		"1.000000000000":        "1",
		"0.000000000044":        "0.000000000044",
		"0.000042998971193415":  "0.000042999",
		"12.345678912345":       "12.3457",
		"10000000":              "10,000,000",
		"1234567.891":           "1,234,568",
		"999999.5":              "1,000,000",
		"0.1234565":             "0.123457",
		"-2.5":                  "-2.5",
		"not a number":          "not a number",
		"1e9":                   "1e9",
		"123456789012345678901": "123456789012345678901",
	} {
		if got := quantity(in); got != want {
			t.Errorf("quantity(%q) = %q; want %q", in, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q; want %q", n, got, want)
		}
	}
	if plural(1, "namespace") != "1 namespace" || plural(2000, "namespace") != "2,000 namespaces" || plural(0, "key") != "0 keys" {
		t.Error("plural")
	}
}

// A redirect to another port is refused: the API key stays where it was
// given.
func TestRedirectElsewhereIsRefused(t *testing.T) {
	h := newHarness(t)
	got := make(chan string, 10)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
	}))
	defer other.Close()
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer first.Close()
	h.env["TELNYX_BASE_URL"] = first.URL
	r := h.expect(ExitError, "storage", "kv", "list")
	if !strings.Contains(r.stderr, "not following a redirect to another origin") {
		t.Fatalf("stderr %q; want the refused redirect", r.stderr)
	}
	select {
	case auth := <-got:
		t.Fatalf("the other origin was sent a request (Authorization %q)", auth)
	default:
	}
}

package cli

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv/internal/kvdtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// harness runs telnyx-edge in-process against a real kvd, in a temporary
// working directory with its own config file.
type harness struct {
	t        *testing.T
	srv      *kvdtest.Server
	dir      string
	env      map[string]string
	terminal bool
	now      func() time.Time // the CLI's clock; nil: time.Now
	log      bytes.Buffer     // transcript for golden files
	// replace maps text that changes from run to run (a fake server's
	// address) to what the transcript shows instead.
	replace map[string]string
}

func newHarness(t *testing.T, opts ...kvdtest.Option) *harness {
	t.Helper()
	srv := kvdtest.Start(t, opts...)
	h := &harness{t: t, srv: srv, dir: t.TempDir(), replace: map[string]string{}}
	h.env = map[string]string{
		"TELNYX_API_KEY":     srv.Token,
		"TELNYX_BASE_URL":    srv.URL,
		"TELNYX_CONFIG_PATH": filepath.Join(t.TempDir(), "config.toml"),
		"PATH":               os.Getenv("PATH"),
	}
	return h
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs one command line with stdin and records it in the transcript.
func (h *harness) run(stdin string, args ...string) result {
	h.t.Helper()
	var stdout, stderr bytes.Buffer
	env := Env{
		Stdin:      strings.NewReader(stdin),
		Stdout:     &stdout,
		Stderr:     &stderr,
		Getenv:     func(k string) string { return h.env[k] },
		Environ:    h.environ,
		Dir:        h.dir,
		IsTerminal: func() bool { return h.terminal },
		Now:        h.now,
	}
	code := Run(context.Background(), env, args)
	r := result{code, stdout.String(), stderr.String()}
	fmt.Fprintf(&h.log, "$ telnyx-edge %s\n", quoteArgs(args))
	if r.stdout != "" {
		fmt.Fprintf(&h.log, "%s", withNewline(r.stdout))
	}
	if r.stderr != "" {
		fmt.Fprintf(&h.log, "[stderr]\n%s", withNewline(r.stderr))
	}
	fmt.Fprintf(&h.log, "[exit %d]\n\n", r.code)
	return r
}

func (h *harness) environ() []string {
	var out []string
	for k, v := range h.env {
		out = append(out, k+"="+v)
	}
	return out
}

// must runs a command that must succeed.
func (h *harness) must(stdin string, args ...string) result {
	h.t.Helper()
	r := h.run(stdin, args...)
	if r.code != 0 {
		h.t.Fatalf("telnyx-edge %s: exit %d\nstdout: %s\nstderr: %s", quoteArgs(args), r.code, r.stdout, r.stderr)
	}
	return r
}

// expect runs a command that must exit with code and one "Error: " line.
func (h *harness) expect(code int, args ...string) result {
	h.t.Helper()
	r := h.run("", args...)
	if r.code != code {
		h.t.Fatalf("telnyx-edge %s: exit %d; want %d\nstderr: %s", quoteArgs(args), r.code, code, r.stderr)
	}
	if lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "Error: ") {
		h.t.Fatalf("telnyx-edge %s: stderr %q; want exactly one Error: line", quoteArgs(args), r.stderr)
	}
	return r
}

func (h *harness) note(format string, args ...any) {
	fmt.Fprintf(&h.log, "# "+format+"\n\n", args...)
}

func (h *harness) readFile(name string) string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.dir, name))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

var (
	uuidRE   = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timeRE   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	cursorRE = regexp.MustCompile(`(--cursor |"cursor": ")[A-Za-z0-9_=-]+`)
	etagRE   = regexp.MustCompile(`\\?"[0-9a-f]{16}\\?"`)
)

// normalize replaces what changes from run to run: ids (numbered in order
// of appearance), timestamps, cursors, the server's address and token.
func (h *harness) normalize(s string) string {
	s = strings.ReplaceAll(s, h.srv.URL, "http://KVD")
	s = strings.ReplaceAll(s, h.srv.Token, "TOKEN")
	s = strings.ReplaceAll(s, maskKey(h.srv.Token), "MASKED-TOKEN")
	s = strings.ReplaceAll(s, h.env["TELNYX_CONFIG_PATH"], "CONFIG")
	// Longest first, so that a URL is replaced before the address in it.
	froms := slices.SortedFunc(maps.Keys(h.replace), func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, from := range froms {
		s = strings.ReplaceAll(s, from, h.replace[from])
	}
	ids := map[string]string{}
	s = uuidRE.ReplaceAllStringFunc(s, func(id string) string {
		if _, ok := ids[id]; !ok {
			ids[id] = fmt.Sprintf("<id-%d>", len(ids)+1)
		}
		return ids[id]
	})
	s = timeRE.ReplaceAllString(s, "<time>")
	s = etagRE.ReplaceAllString(s, "<etag>")
	return cursorRE.ReplaceAllString(s, "${1}<cursor>")
}

// checkGolden compares the normalized transcript with testdata/name.
func (h *harness) checkGolden(name string) {
	h.t.Helper()
	got := h.normalize(h.log.String())
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			h.t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		h.t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		h.t.Fatalf("transcript differs from %s (run with -update to accept):\n%s", path, lineDiff(string(want), got))
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\nwant: %q\ngot:  %q", i+1, wl, gl)
		}
	}
	return ""
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " '\"{}$\\") {
			q[i] = shellQuote(a)
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

func withNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n[no newline at end]\n"
}

// The documentation's quick start, against a real kvd.
func TestQuickStartGolden(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "my-cache", "--wait", "--bind", "MY_CACHE")
	h.note("func.toml:\n%s", h.readFile("func.toml"))
	h.must("", "storage", "kv", "key", "put", "user/123", `{"name":"Alice 👋"}`)
	r := h.must("", "storage", "kv", "key", "get", "user/123")
	if r.stdout != `{"name":"Alice 👋"}` {
		t.Fatalf("key get printed %q; want the value and nothing else", r.stdout)
	}
	h.must("", "storage", "kv", "key", "put", "MY_CACHE", "flag/new-ui", "true", "--content-type", "text/plain")
	h.must("", "storage", "kv", "key", "put", "user/123", `{"name":"Bob"}`, "-o", "json")
	h.must("", "storage", "kv", "key", "list")
	h.must("", "storage", "kv", "key", "list", "my-cache", "--prefix", "user/", "-o", "json")
	h.must("", "storage", "kv", "list")
	h.must("", "storage", "kv", "get", "my-cache")
	h.must("", "storage", "kv", "get", "MY_CACHE", "-o", "json")
	h.expect(ExitUsage, "storage", "kv", "key", "delete", "user/123")
	h.must("", "storage", "kv", "key", "delete", "user/123", "--yes")
	h.expect(ExitNotFound, "storage", "kv", "key", "get", "user/123")
	h.must("", "env")
	h.must("", "env", "--format", "dotenv")
	h.must("", "env", "--format", "json")
	h.must("", "storage", "kv", "delete", "my-cache", "-y")
	h.checkGolden("quickstart.golden")
}

// The month's usage and bill, on a server whose clock the test moves.
func TestUsageGolden(t *testing.T) {
	clock := kvdtest.NewClock(time.Date(2026, 11, 15, 12, 0, 0, 0, time.UTC))
	h := newHarness(t, kvdtest.WithClock(clock.Now))
	h.must("", "storage", "kv", "create", "--name", "metered", "--wait")
	for _, k := range []string{"a", "b", "c"} {
		h.must("", "storage", "kv", "key", "put", "metered", "user/"+k, "0123456789")
	}
	h.must("", "storage", "kv", "key", "get", "metered", "user/a")
	h.expect(ExitNotFound, "storage", "kv", "key", "get", "metered", "user/none")
	h.must("", "storage", "kv", "key", "list", "metered")
	h.must("", "storage", "kv", "key", "delete", "metered", "user/c", "--yes")
	clock.Advance(time.Hour) // two keys of 16 bytes for an hour: 115,200 byte-seconds
	h.must("", "storage", "kv", "usage")
	h.must("", "storage", "kv", "usage", "metered", "--month", "2026-11")
	h.must("", "storage", "kv", "usage", "--month", "2026-10", "-o", "json")
	h.expect(ExitError, "storage", "kv", "usage", "--month", "2026-13")
	r := h.must("", "storage", "kv", "usage", "-o", "json")
	if !strings.Contains(r.stdout, `"storage_byte_seconds": "115200.000"`) || !strings.Contains(r.stdout, `"reads": 2`) || !strings.Contains(r.stdout, `"writes": 3`) {
		t.Fatalf("usage JSON:\n%s", r.stdout)
	}
	h.checkGolden("usage.golden")
}

func TestErrorsGolden(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "errs", "--wait")
	h.note("no func.toml here")
	h.expect(ExitUsage, "storage", "kv", "get")
	h.expect(ExitUsage, "storage", "kv", "key", "put", "errs", "k", "v", "--ttl", "1500ms")
	h.expect(ExitUsage, "storage", "kv", "key", "put", "errs", "k", "v", "--ttl", "0s")
	h.expect(ExitUsage, "storage", "kv", "key", "put", "errs", "k", "v", "--ttl", "soon")
	h.expect(ExitUsage, "storage", "kv", "key", "put", "errs", "k")
	h.expect(ExitUsage, "storage", "kv", "key", "list", "errs", "--limit", "5000")
	h.expect(ExitUsage, "storage", "kv", "key", "get", "a", "b", "c")
	h.expect(ExitUsage, "storage", "kv", "frob")
	h.expect(ExitUsage, "storage", "kv", "lsit")
	h.expect(ExitUsage, "storage", "kv", "key", "list", "errs", "--prefix", "user:")
	h.expect(ExitUsage, "storage", "kv", "key", "list", "errs", "--prefix", "_private/")
	h.expect(ExitUsage, "storage", "kv", "key", "put", "errs", "k", "v", "--ttl", "1.5d")
	h.expect(ExitUsage, "storage", "kv", "create")
	h.expect(ExitUsage, "storage", "kv", "create", "--name", "x", "--bind", "lower_case")
	h.expect(ExitUsage, "storage", "kv", "list", "--page-size", "0")
	h.expect(ExitUsage, "storage", "kv", "list", "--nope")
	h.expect(ExitUsage, "storage", "kv", "list", "-o", "yaml")
	h.expect(ExitUsage, "storage", "kv", "get", "Not A Name")
	h.expect(ExitNotFound, "storage", "kv", "get", "nope")
	h.expect(ExitNotFound, "storage", "kv", "get", "MY_CACHE")
	h.expect(ExitNotFound, "storage", "kv", "get", "00000000-0000-4000-8000-000000000000")
	h.expect(ExitNotFound, "storage", "kv", "key", "get", "errs", "user/1")
	h.expect(ExitNotFound, "storage", "kv", "key", "list", "00000000-0000-4000-8000-000000000000")
	h.expect(ExitError, "storage", "kv", "key", "put", "errs", "bad:key", "v")
	h.expect(ExitError, "storage", "kv", "create", "--name", "errs")
	h.expect(ExitError, "storage", "kv", "create", "--name", "Upper")
	h.env["TELNYX_API_KEY"] = "wrong"
	h.expect(ExitError, "storage", "kv", "list")
	delete(h.env, "TELNYX_API_KEY")
	h.expect(ExitError, "storage", "kv", "list")
	h.env["TELNYX_API_KEY"] = h.srv.Token
	r := h.must("", "storage", "kv", "list", "-o", "json")
	if strings.Contains(r.stdout, `"x"`) {
		t.Fatalf("a refused --bind still created the namespace:\n%s", r.stdout)
	}
	h.checkGolden("errors.golden")
}

func TestAuthGolden(t *testing.T) {
	h := newHarness(t)
	delete(h.env, "TELNYX_API_KEY")
	delete(h.env, "TELNYX_BASE_URL")
	h.expect(ExitError, "auth", "status")
	h.must("", "auth", "api-key", "set", h.srv.Token, "--endpoint", h.srv.URL+"/v2/")
	fi, err := os.Stat(h.env["TELNYX_CONFIG_PATH"])
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	h.note("config file:\n%s", mustRead(t, h.env["TELNYX_CONFIG_PATH"]))
	h.must("", "auth", "status")
	h.must("", "storage", "kv", "list")
	h.note("the environment overrides the file")
	h.env["TELNYX_API_KEY"] = "wrong"
	h.expect(ExitError, "auth", "status")
	delete(h.env, "TELNYX_API_KEY")
	h.must(h.srv.Token+"\n", "auth", "api-key", "set", "-")
	h.must("", "auth", "logout")
	h.note("config file:\n%s", mustRead(t, h.env["TELNYX_CONFIG_PATH"]))
	h.must("", "auth", "logout")
	h.expect(ExitError, "auth", "status")
	h.checkGolden("auth.golden")
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBindGolden(t *testing.T) {
	h := newHarness(t)
	before, err := os.ReadFile(filepath.Join("testdata", "bind.before.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "func.toml"), before, 0o644); err != nil {
		t.Fatal(err)
	}
	h.must("", "storage", "kv", "create", "--name", "my-cache", "--wait")
	r := h.must("", "storage", "kv", "create", "--name", "sessions", "--wait", "-o", "json")
	id := uuidRE.FindString(r.stdout)
	h.must("", "storage", "kv", "bind", "my-cache", "MY_CACHE")
	h.must("", "storage", "kv", "bind", id, "SESSION_STORE")
	h.must("", "storage", "kv", "bind", id, "SESSION_STORE")
	h.expect(ExitUsage, "storage", "kv", "bind", "my-cache", "my_cache")
	h.expect(ExitNotFound, "storage", "kv", "bind", "00000000-0000-4000-8000-000000000000", "GHOST")
	h.expect(ExitUsage, "storage", "kv", "key", "list")
	h.must("", "storage", "kv", "key", "put", "SESSION_STORE", "s/1", "x")
	h.must("", "storage", "kv", "key", "list", "SESSION_STORE")
	after := h.readFile("func.toml")
	h.note("func.toml after:\n%s", after)
	h.checkGolden("bind.golden")

	// The edit kept every line of the original file.
	for _, line := range strings.Split(string(before), "\n") {
		if !strings.Contains(after, line) {
			t.Fatalf("line %q of func.toml was lost:\n%s", line, after)
		}
	}
}

// Values are bytes: NULs and invalid UTF-8 survive put --path, put from
// stdin and get.
func TestBinaryRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "bin", "--wait", "--bind", "BIN")
	rng := rand.New(rand.NewPCG(1, 2))
	value := make([]byte, 200_000)
	for i := range value {
		value[i] = byte(rng.Uint32())
	}
	copy(value, "\x00\xff\xfe\xc3\x28\x80 not utf-8 \x00")
	if err := os.WriteFile(filepath.Join(h.dir, "value.bin"), value, 0o644); err != nil {
		t.Fatal(err)
	}
	h.must("", "storage", "kv", "key", "put", "blob/file", "--path", "value.bin")
	if r := h.must("", "storage", "kv", "key", "get", "blob/file"); r.stdout != string(value) {
		t.Fatalf("get after put --path: %d bytes, differing from the %d written", len(r.stdout), len(value))
	}
	h.must(string(value[:5000]), "storage", "kv", "key", "put", "BIN", "blob/stdin", "-")
	if r := h.must("", "storage", "kv", "key", "get", "BIN", "blob/stdin"); r.stdout != string(value[:5000]) {
		t.Fatalf("get after put from stdin: %q...; want the bytes written", r.stdout[:min(20, len(r.stdout))])
	}
	h.must(string(value[:7]), "storage", "kv", "key", "put", "blob/stdin-path", "--path", "-")
	if r := h.must("", "storage", "kv", "key", "get", "blob/stdin-path"); r.stdout != string(value[:7]) {
		t.Fatalf("get after put --path -: %q", r.stdout)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.must("", "storage", "kv", "key", "put", "blob/empty", "--path", "empty")
	if r := h.must("", "storage", "kv", "key", "get", "blob/empty"); r.stdout != "" {
		t.Fatalf("get of an empty value printed %q", r.stdout)
	}
	big := make([]byte, 1<<20+1)
	if err := os.WriteFile(filepath.Join(h.dir, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	h.expect(ExitError, "storage", "kv", "key", "put", "blob/big", "--path", "big")
}

func TestKeyListPaging(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "paging", "--wait", "--bind", "PAGING")
	for i := range 5 {
		h.must("", "storage", "kv", "key", "put", fmt.Sprintf("k/%d", i), "v")
	}
	r := h.must("", "storage", "kv", "key", "list", "--limit", "2")
	if strings.Count(r.stdout, "k/") != 2 || !strings.Contains(r.stderr, "--cursor ") {
		t.Fatalf("one page of 2: stdout %q stderr %q; want 2 keys and a cursor hint", r.stdout, r.stderr)
	}
	cursor := strings.Fields(strings.SplitN(r.stderr, "--cursor ", 2)[1])[0]
	r = h.must("", "storage", "kv", "key", "list", "--limit", "2", "--cursor", cursor)
	if !strings.Contains(r.stdout, "k/2") || !strings.Contains(r.stdout, "k/3") || strings.Contains(r.stdout, "k/1") {
		t.Fatalf("second page: %q; want k/2 and k/3", r.stdout)
	}
	r = h.must("", "storage", "kv", "key", "list", "--limit", "2", "--all")
	for i := range 5 {
		if !strings.Contains(r.stdout, fmt.Sprintf("k/%d", i)) {
			t.Fatalf("--all: %q lacks k/%d", r.stdout, i)
		}
	}
	if r.stderr != "" {
		t.Fatalf("--all printed a hint: %q", r.stderr)
	}
}

func TestConfirmation(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "confirm", "--wait", "--bind", "C")
	h.must("", "storage", "kv", "key", "put", "k", "v")
	h.terminal = true
	if r := h.run("n\n", "storage", "kv", "key", "delete", "k"); r.code != ExitError || !strings.Contains(r.stderr, "Delete key k? [y/N]") {
		t.Fatalf("answer n: exit %d, stderr %q; want the question and exit 1", r.code, r.stderr)
	}
	h.must("", "storage", "kv", "key", "get", "k")
	h.must("y\n", "storage", "kv", "key", "delete", "k")
	if r := h.run("", "storage", "kv", "key", "get", "k"); r.code != ExitNotFound {
		t.Fatalf("after confirming: key get exit %d; want %d", r.code, ExitNotFound)
	}
	h.terminal = false
	h.must("", "storage", "kv", "key", "put", "k", "v")
	h.env["TELNYX_EDGE_SKIP_CONFIRMATIONS"] = "1"
	h.must("", "storage", "kv", "key", "delete", "k")
	r := h.must("", "storage", "kv", "delete", "-o", "json")
	if !strings.Contains(r.stdout, `"status": "deleting"`) {
		t.Fatalf("namespace delete printed %q; want status deleting", r.stdout)
	}
}

func TestExecSeesVariables(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	h := newHarness(t)
	r := h.must("", "storage", "kv", "create", "--name", "exec", "--wait", "--bind", "MY_CACHE", "-o", "json")
	id := uuidRE.FindString(r.stdout)
	h.env["FROM_PARENT"] = "kept"
	r = h.run("from stdin", "exec", "--", "sh", "-c", `echo "$KV_MY_CACHE_ID|$TELNYX_BASE_URL|$TELNYX_API_KEY|$FROM_PARENT|$(cat)"; echo oops >&2; exit 7`)
	want := id + "|" + h.srv.URL + "/v2|" + h.srv.Token + "|kept|from stdin\n"
	if r.code != 7 || r.stdout != want || r.stderr != "oops\n" {
		t.Fatalf("exec: exit %d, stdout %q, stderr %q; want exit 7, %q, oops", r.code, r.stdout, r.stderr, want)
	}
	// Flags after the command's name are the command's.
	r = h.run("", "exec", "sh", "-c", "echo $KV_MY_CACHE_ID")
	if r.code != 0 || r.stdout != id+"\n" {
		t.Fatalf("exec without --: exit %d, stdout %q", r.code, r.stdout)
	}
	r = h.run("", "exec", "--", "no-such-command-here")
	if r.code != 127 || !strings.HasPrefix(r.stderr, "Error: ") {
		t.Fatalf("exec of a missing command: exit %d, stderr %q; want 127", r.code, r.stderr)
	}
	if r := h.run("", "exec"); r.code != ExitUsage {
		t.Fatalf("exec without a command: exit %d; want %d", r.code, ExitUsage)
	}
}

func TestCompletion(t *testing.T) {
	h := newHarness(t)
	r := h.must("", "completion", "bash")
	if !strings.Contains(r.stdout, "telnyx-edge") || !strings.Contains(r.stdout, "complete") {
		t.Fatalf("completion bash printed %d bytes without a completion function", len(r.stdout))
	}
}

package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
)

// Envelopes as node's JSON.stringify({value, expires_at}) writes them.
var stringifyCases = []struct {
	value string
	want  string
}{
	{"plain", `{"value":"plain","expires_at":1700000000123}`},
	{"", `{"value":"","expires_at":1700000000123}`},
	{`{"name":"Alice 👋"}`, `{"value":"{\"name\":\"Alice 👋\"}","expires_at":1700000000123}`},
	{`back\slash`, `{"value":"back\\slash","expires_at":1700000000123}`},
	{"\x00\x01\x1f\x7f\b\f\n\r\t", `{"value":"\u0000\u0001\u001f` + "\x7f" + `\b\f\n\r\t","expires_at":1700000000123}`},
	{`<a href="x">&amp;</a>`, `{"value":"<a href=\"x\">&amp;</a>","expires_at":1700000000123}`},
	{"\u2028\u2029", "{\"value\":\"\u2028\u2029\",\"expires_at\":1700000000123}"},
}

func TestEncodeExpiryEnvelope(t *testing.T) {
	for _, tc := range stringifyCases {
		if got := string(client.EncodeExpiryEnvelope(tc.value, 1700000000123)); got != tc.want {
			t.Errorf("EncodeExpiryEnvelope(%q) = %s; want %s", tc.value, got, tc.want)
		}
		v, at, err := client.DecodeExpiryEnvelope([]byte(tc.want))
		if err != nil || v != tc.value || at != 1700000000123 {
			t.Errorf("DecodeExpiryEnvelope(%s) = %q, %v, %v", tc.want, v, at, err)
		}
	}
	if got := string(client.EncodeExpiryEnvelope("bad \xff utf8", 1)); got != "{\"value\":\"bad \uFFFD utf8\",\"expires_at\":1}" {
		t.Errorf("invalid UTF-8 encoded as %q; want U+FFFD", got)
	}
	for _, bad := range []string{``, `[]`, `null`, `"s"`, `{"expires_at":1}`, `{"value":1,"expires_at":1}`, `{"value":null,"expires_at":1}`, `{"value":"v"}`, `{"value":"v","expires_at":"1"}`, `{"value":"v","expires_at":null}`} {
		if _, _, err := client.DecodeExpiryEnvelope([]byte(bad)); !errors.Is(err, client.ErrNotEnvelope) {
			t.Errorf("DecodeExpiryEnvelope(%s): err = %v; want ErrNotEnvelope", bad, err)
		}
	}
	// JavaScript may write a fractional expires_at (ttlSeconds = 0.0005).
	if _, at, err := client.DecodeExpiryEnvelope([]byte(`{"value":"v","expires_at":1700000000000.5}`)); err != nil || at != 1700000000000.5 {
		t.Errorf("fractional expires_at = %v, %v", at, err)
	}
}

func TestExpiryHelpers(t *testing.T) {
	clk := &clock{now: time.UnixMilli(1700000000000)}
	srv := kvdtest.Start(t)
	c := client.New(client.WithBaseURL(srv.URL), client.WithAPIKey(srv.Token), client.WithClock(clk.Now))
	ctx := context.Background()
	ns := readyNamespace(t, c, "expiry")

	if err := ns.PutWithExpiry(ctx, "session/abc", `{"userId":42}`, time.Hour); err != nil {
		t.Fatal(err)
	}
	raw, _, err := ns.Get(ctx, "session/abc")
	if want := `{"value":"{\"userId\":42}","expires_at":1700003600000}`; err != nil || string(raw) != want {
		t.Fatalf("stored envelope = %s, %v; want %s", raw, err, want)
	}
	clk.Advance(time.Hour) // now == expires_at: not yet expired (Date.now() > expires_at)
	if v, ok, err := ns.GetWithExpiry(ctx, "session/abc"); err != nil || !ok || v != `{"userId":42}` {
		t.Fatalf("GetWithExpiry at expires_at = %q, %v, %v; want the value", v, ok, err)
	}
	clk.Advance(time.Millisecond)
	if v, ok, err := ns.GetWithExpiry(ctx, "session/abc"); err != nil || ok || v != "" {
		t.Fatalf("GetWithExpiry after expires_at = %q, %v, %v; want expired", v, ok, err)
	}
	if _, _, err := ns.Get(ctx, "session/abc"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("expired key not deleted: Get err = %v", err)
	}
	if _, ok, err := ns.GetWithExpiry(ctx, "session/missing"); err != nil || ok {
		t.Fatalf("GetWithExpiry of a missing key = %v, %v; want not ok, no error", ok, err)
	}
	if _, err := ns.Put(ctx, "flag/new-ui", []byte("true"), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ns.GetWithExpiry(ctx, "flag/new-ui"); !errors.Is(err, client.ErrNotEnvelope) {
		t.Fatalf("GetWithExpiry of a plain value: err = %v; want ErrNotEnvelope", err)
	}

	// Sweep: two expired under the prefix, one fresh, one plain value, and
	// one expired outside the prefix.
	for key, ttl := range map[string]time.Duration{"cache/a": time.Second, "cache/b": time.Minute, "cache/c": time.Hour, "other/x": time.Second} {
		if err := ns.PutWithExpiry(ctx, key, "v", ttl); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ns.Put(ctx, "cache/plain", []byte("not an envelope"), nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	deleted, err := ns.SweepExpired(ctx, "cache/")
	if err != nil || deleted != 2 {
		t.Fatalf("SweepExpired = %d, %v; want 2", deleted, err)
	}
	var left []string
	for info, err := range ns.Keys(ctx, "") {
		if err != nil {
			t.Fatal(err)
		}
		left = append(left, info.Key)
	}
	if want := []string{"cache/c", "cache/plain", "flag/new-ui", "other/x"}; !slices.Equal(left, want) {
		t.Fatalf("keys after sweep = %v; want %v", left, want)
	}
}

// runSeedHelpers runs the documentation's JavaScript helpers with node
// against ns and returns one result per operation (nil for JS null).
func runSeedHelpers(t *testing.T, srv *kvdtest.Server, nsID string, ops [][]any) []*string {
	t.Helper()
	script, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "testdata/seed_helpers.mjs", string(script))
	cmd.Env = append(os.Environ(), "KV_MY_CACHE_ID="+nsID, "TELNYX_API_KEY="+srv.Token, "TELNYX_BASE_URL="+srv.URL+"/v2")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node: %v\n%s", err, stderr)
	}
	var results []*string
	if err := json.Unmarshal(out, &results); err != nil || len(results) != len(ops) {
		t.Fatalf("node printed %s (%v); want %d results", out, err, len(ops))
	}
	return results
}

func TestSeedJavaScriptInterop(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		if os.Getenv("KV_REQUIRE_NODE") == "1" {
			t.Fatal("node is not on PATH and KV_REQUIRE_NODE=1")
		}
		t.Skip("node is not on PATH; the interop test with the documentation's JavaScript helpers needs it (set KV_REQUIRE_NODE=1 to fail instead)")
	}
	srv := kvdtest.Start(t)
	c := client.New(client.WithBaseURL(srv.URL), client.WithAPIKey(srv.Token))
	ctx := context.Background()
	ns := readyNamespace(t, c, "interop")

	// JSON.stringify and EncodeExpiryEnvelope agree byte for byte.
	var ops [][]any
	for _, tc := range stringifyCases {
		ops = append(ops, []any{"stringify", tc.value, 1700000000123})
	}
	for i, got := range runSeedHelpers(t, srv, ns.ID(), ops) {
		if want := string(client.EncodeExpiryEnvelope(stringifyCases[i].value, 1700000000123)); got == nil || *got != want {
			t.Errorf("JSON.stringify(%q) = %v; Go wrote %s", stringifyCases[i].value, got, want)
		}
	}

	// JavaScript writes, Go reads.
	ops = nil
	for i, tc := range stringifyCases {
		ops = append(ops,
			[]any{"putWithExpiry", "session/js/" + strconv.Itoa(i), tc.value, 3600},
			[]any{"put", "raw/js/" + strconv.Itoa(i), tc.value})
	}
	ops = append(ops, []any{"putWithExpiry", "session/js/expired", "old", -10})
	runSeedHelpers(t, srv, ns.ID(), ops)
	for i, tc := range stringifyCases {
		v, ok, err := ns.GetWithExpiry(ctx, "session/js/"+strconv.Itoa(i))
		if err != nil || !ok || v != tc.value {
			t.Errorf("Go GetWithExpiry of JS envelope %d = %q, %v, %v; want %q", i, v, ok, err, tc.value)
		}
		raw, _, err := ns.Get(ctx, "raw/js/"+strconv.Itoa(i))
		if err != nil || string(raw) != tc.value {
			t.Errorf("Go Get of JS kvPut %d = %q, %v; want %q", i, raw, err, tc.value)
		}
	}
	if _, ok, err := ns.GetWithExpiry(ctx, "session/js/expired"); err != nil || ok {
		t.Fatalf("Go GetWithExpiry of an expired JS envelope = %v, %v; want expired", ok, err)
	}
	if _, _, err := ns.Get(ctx, "session/js/expired"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("expired JS envelope not deleted by Go: %v", err)
	}

	// Go writes, JavaScript reads.
	ops = nil
	for i, tc := range stringifyCases {
		if err := ns.PutWithExpiry(ctx, "session/go/"+strconv.Itoa(i), tc.value, time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := ns.Put(ctx, "raw/go/"+strconv.Itoa(i), []byte(tc.value), nil); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, []any{"getWithExpiry", "session/go/" + strconv.Itoa(i)}, []any{"get", "raw/go/" + strconv.Itoa(i)})
	}
	if err := ns.PutWithExpiry(ctx, "session/go/expired", "old", -time.Second); err != nil {
		t.Fatal(err)
	}
	ops = append(ops, []any{"getWithExpiry", "session/go/expired"}, []any{"get", "session/go/missing"})
	results := runSeedHelpers(t, srv, ns.ID(), ops)
	for i, tc := range stringifyCases {
		if got := results[2*i]; got == nil || *got != tc.value {
			t.Errorf("JS kvGetWithExpiry of Go envelope %d = %v; want %q", i, got, tc.value)
		}
		if got := results[2*i+1]; got == nil || *got != tc.value {
			t.Errorf("JS kvGet of Go Put %d = %v; want %q", i, got, tc.value)
		}
	}
	if got := results[len(results)-2]; got != nil {
		t.Errorf("JS kvGetWithExpiry of an expired Go envelope = %q; want null", *got)
	}
	if got := results[len(results)-1]; got != nil {
		t.Errorf("JS kvGet of a missing key = %q; want null", *got)
	}
	if _, _, err := ns.Get(ctx, "session/go/expired"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("expired Go envelope not deleted by JS: %v", err)
	}
}

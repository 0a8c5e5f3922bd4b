package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// keyETag returns the ETag key info reports for key.
func keyETag(t *testing.T, h *harness, key string) string {
	t.Helper()
	r := h.must("", "storage", "kv", "key", "info", key, "-o", "json")
	var info struct {
		ETag string `json:"etag"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || info.ETag == "" {
		t.Fatalf("key info %s -o json = %q (%v); want an etag", key, r.stdout, err)
	}
	return info.ETag
}

// TestConditionalKeyGolden: key put --if-match / --if-absent and key
// delete --if-match write only when the condition holds; otherwise exit 4
// with one line naming the key's current ETag, and nothing is written.
func TestConditionalKeyGolden(t *testing.T) {
	h := newHarness(t)
	h.must("", "storage", "kv", "create", "--name", "cas", "--wait", "--bind", "CAS")

	h.note("--if-absent creates a missing key, and refuses an existing one")
	h.must("", "storage", "kv", "key", "put", "lock/job-7", "worker-1", "--if-absent", "--ttl", "5m")
	first := keyETag(t, h, "lock/job-7")
	r := h.expect(ExitPrecondition, "storage", "kv", "key", "put", "lock/job-7", "worker-2", "--if-absent")
	if !strings.Contains(r.stderr, first) || !strings.Contains(r.stderr, "exists already") {
		t.Fatalf("--if-absent on an existing key: %q; want it to say so and name ETag %s", r.stderr, first)
	}

	h.note("--if-match writes only over the ETag given")
	r = h.must("", "storage", "kv", "key", "put", "lock/job-7", "worker-1 renewed", "--if-match", first, "-o", "json")
	var put struct {
		Created bool   `json:"created"`
		ETag    string `json:"etag"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &put); err != nil || put.Created || put.ETag == "" || put.ETag == first {
		t.Fatalf("put --if-match current -o json = %q; want replaced with a new etag", r.stdout)
	}
	r = h.expect(ExitPrecondition, "storage", "kv", "key", "put", "lock/job-7", "stale", "--if-match", first)
	if !strings.Contains(r.stderr, "its ETag is "+put.ETag+", not "+first) {
		t.Fatalf("--if-match stale: %q; want the current and the given ETag", r.stderr)
	}
	h.must("", "storage", "kv", "key", "put", "lock/job-7", "any", "--if-match", "*")
	h.expect(ExitPrecondition, "storage", "kv", "key", "put", "lock/none", "x", "--if-match", "*")
	h.expect(ExitPrecondition, "storage", "kv", "key", "put", "CAS", "lock/none", "--path", "-", "--if-match", put.ETag)

	h.note("key delete --if-match")
	cur := keyETag(t, h, "lock/job-7")
	r = h.expect(ExitPrecondition, "storage", "kv", "key", "delete", "lock/job-7", "--if-match", first, "--yes")
	if !strings.Contains(r.stderr, "not deleted") || !strings.Contains(r.stderr, cur) {
		t.Fatalf("delete --if-match stale: %q", r.stderr)
	}
	if got := h.must("", "storage", "kv", "key", "get", "lock/job-7").stdout; got != "any" {
		t.Fatalf("after the refused writes and delete the value is %q; want any", got)
	}
	h.must("", "storage", "kv", "key", "delete", "lock/job-7", "--if-match", cur, "--yes")
	h.expect(ExitNotFound, "storage", "kv", "key", "get", "lock/job-7")
	h.expect(ExitPrecondition, "storage", "kv", "key", "delete", "lock/job-7", "--if-match", "*", "--yes")

	h.note("usage errors")
	h.expect(ExitUsage, "storage", "kv", "key", "put", "k", "v", "--if-match", "*", "--if-absent")
	h.expect(ExitUsage, "storage", "kv", "key", "put", "k", "v", "--if-match", "")
	h.expect(ExitError, "storage", "kv", "key", "put", "k", "v", "--if-match", `"unterminated`)

	h.note("the quotes of an ETag may be left out, as a shell drops them")
	r = h.must("", "storage", "kv", "key", "put", "k", "v1", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &put); err != nil {
		t.Fatal(err)
	}
	h.must("", "storage", "kv", "key", "put", "k", "v2", "--if-match", strings.Trim(put.ETag, `"`))
	h.checkGolden("conditional.golden")
}

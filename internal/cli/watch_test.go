package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/internal/kvdtest"
)

// watchCmd runs `storage kv watch args...` until stop is called, which
// returns its exit code, stdout and stderr.
func (h *harness) watchCmd(args ...string) (stdout *kvdtest.SyncBuffer, stop func() (int, string)) {
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &kvdtest.SyncBuffer{}, &kvdtest.SyncBuffer{}
	env := Env{Stdin: strings.NewReader(""), Stdout: out, Stderr: errOut, Getenv: func(k string) string { return h.env[k] }, Environ: h.environ, Dir: h.dir, IsTerminal: func() bool { return false }}
	done := make(chan int, 1)
	go func() { done <- Run(ctx, env, append([]string{"storage", "kv", "watch"}, args...)) }()
	return out, func() (int, string) {
		cancel()
		select {
		case code := <-done:
			return code, errOut.String()
		case <-time.After(10 * time.Second):
			h.t.Fatal("watch did not stop within 10 s of its interruption")
			return 0, ""
		}
	}
}

// waitFor waits until out holds n lines.
func waitFor(t *testing.T, out *kvdtest.SyncBuffer, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if out.String() != "" && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch printed %q; want %d lines", out.String(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWatchCommand: the watch prints a snapshot, ready and each change,
// as text and as NDJSON, resumes with --since, stops cleanly when
// interrupted, and refuses bad flags with a clear line.
func TestWatchCommand(t *testing.T) {
	h := newHarness(t)
	c := client.New(client.WithBaseURL(h.srv.URL), client.WithAPIKey(h.srv.Token))
	ns := readyNS(t, c, "watched")
	ctx := context.Background()
	if _, err := ns.Put(ctx, "flags/a", []byte("on"), nil); err != nil {
		t.Fatal(err)
	}

	out, stop := h.watchCmd(ns.ID(), "--prefix", "flags/", "--snapshot", "--values")
	lines := waitFor(t, out, 2)
	if !strings.Contains(lines[0], "put     flags/a  (2 bytes, application/octet-stream)  \"on\"") || !strings.HasSuffix(lines[1], "  ready") {
		t.Fatalf("snapshot lines: %q", lines)
	}
	ns.Put(ctx, "other", []byte("not watched"), nil)
	ns.Put(ctx, "flags/b", []byte{0xff, 0}, &client.PutOptions{ContentType: "application/x-bin"})
	ns.Delete(ctx, "flags/a")
	lines = waitFor(t, out, 4)
	if !strings.Contains(lines[2], "put     flags/b  (2 bytes, application/x-bin)  base64:/wA=") || !strings.Contains(lines[3], "delete  flags/a") {
		t.Fatalf("change lines: %q", lines)
	}
	if code, stderr := stop(); code != 0 || stderr != "" {
		t.Fatalf("interrupted watch: exit %d, stderr %q", code, stderr)
	}

	// NDJSON, resuming after the snapshot's ready revision.
	since := strings.Fields(lines[1])[0]
	out, stop = h.watchCmd(ns.ID(), "--prefix", "flags/", "--since", since, "-o", "json", "--values")
	lines = waitFor(t, out, 2)
	var put, del map[string]any
	if json.Unmarshal([]byte(lines[0]), &put) != nil || json.Unmarshal([]byte(lines[1]), &del) != nil {
		t.Fatalf("NDJSON lines: %q", lines)
	}
	if put["event"] != "put" || put["key"] != "flags/b" || put["value_base64"] != "/wA=" || put["content_type"] != "application/x-bin" || put["etag"] == "" {
		t.Fatalf("NDJSON put: %v", put)
	}
	if del["event"] != "delete" || del["key"] != "flags/a" || del["revision"].(float64) <= put["revision"].(float64) {
		t.Fatalf("NDJSON delete: %v", del)
	}
	stop()

	h.expect(2, "storage", "kv", "watch", ns.ID(), "--since", "5", "--snapshot")
	h.expect(2, "storage", "kv", "watch", ns.ID(), "--prefix", "bad prefix")
	h.expect(2, "storage", "kv", "watch", ns.ID(), "--since", "x")
}

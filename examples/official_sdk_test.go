package examples

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
)

// telnyxSDK is the official Node SDK's version the test runs.
const telnyxSDK = "telnyx@7.24.0"

// installSDK installs the official Node SDK from npm into a directory kept
// between runs, and returns it.
func installSDK(t *testing.T) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		if os.Getenv("KV_REQUIRE_NODE") == "1" {
			t.Fatal("npm is required (KV_REQUIRE_NODE=1) but not on PATH")
		}
		t.Skip("npm not on PATH; apt-get install npm to run the official SDK's check")
	}
	dir := filepath.Join(os.TempDir(), "kvd-"+strings.ReplaceAll(telnyxSDK, "@", "-"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "telnyx", "package.json")); err == nil {
		return dir
	}
	tmp, err := os.MkdirTemp(os.TempDir(), "kvd-npm-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(npm, "install", "--no-audit", "--no-fund", "--prefix", tmp, telnyxSDK)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		if os.Getenv("KV_REQUIRE_NODE") == "1" {
			t.Fatalf("npm install %s: %v\n%s", telnyxSDK, err, out)
		}
		t.Skipf("npm install %s failed (no registry?): %v", telnyxSDK, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp) // another run installed it meanwhile
	}
	return dir
}

// TestOfficialNodeSDK runs the official Telnyx Node SDK's KV calls against
// kvd at its default settings (rate limit and all), over several thousand
// keys, and checks that the duplicate name's 409 reached kvd once: the SDK
// follows x-should-retry and does not retry it.
func TestOfficialNodeSDK(t *testing.T) {
	node := nodeOrSkip(t)
	dir := installSDK(t)
	cfg := server.DefaultConfig()
	cfg.Listen, cfg.Store, cfg.APIKey = "127.0.0.1:0", t.TempDir(), "sdk-check-key"
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.Logger = kvdtest.Config(t).Logger
	s := kvdtest.StartConfig(t, cfg)
	// A module resolves its imports from where it lives: beside the SDK.
	src, err := os.ReadFile("official_sdk.mjs")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "official_sdk.mjs")
	if err := os.WriteFile(script, src, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, script)
	cmd.Env = append(os.Environ(), "TELNYX_API_KEY="+s.Token, "TELNYX_BASE_URL="+s.URL+"/v2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the official SDK's calls against kvd: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	resp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `kvd_http_requests_total{method="POST",route="namespaces",status="409"} 1`) {
		t.Fatalf("the duplicate name's 409 was not sent exactly once; the SDK retried it:\n%s", grepLines(string(m), "route=\"namespaces\""))
	}
	if strings.Contains(string(m), `status="429"`) {
		t.Fatalf("kvd rate-limited the SDK at its default settings:\n%s", grepLines(string(m), "429"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

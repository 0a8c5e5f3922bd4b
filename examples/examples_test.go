// Package examples holds runnable examples from the product documentation;
// its test runs them against a real kvd.
package examples

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/kvdtest"
)

// nodeOrSkip returns the node binary, or skips unless KV_REQUIRE_NODE=1.
func nodeOrSkip(t *testing.T) string {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("KV_REQUIRE_NODE") == "1" {
			t.Fatal("node is required (KV_REQUIRE_NODE=1) but not on PATH; apt-get install nodejs")
		}
		t.Skip("node not on PATH; apt-get install nodejs to run the documented JavaScript example")
	}
	return node
}

// TestQuickstartJavaScript runs the documentation's JavaScript quick start,
// unchanged but for its base URL, against kvd.
func TestQuickstartJavaScript(t *testing.T) {
	node := nodeOrSkip(t)
	s := kvdtest.Start(t)
	req, _ := http.NewRequest("POST", s.URL+"/v2/storage/kvs", strings.NewReader(`{"name":"my-cache"}`))
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ Data struct{ ID string } }
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	id := created.Data.ID
	s.Provision(t, kv.DefaultOrg, id) // now rather than poll

	for _, base := range []string{s.URL, s.URL + "/v2", s.URL + "/"} {
		cmd := exec.Command(node, "quickstart.mjs")
		cmd.Env = append(os.Environ(), "KV_MY_CACHE_ID="+id, "TELNYX_API_KEY="+s.Token, "TELNYX_BASE_URL="+base)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("node quickstart.mjs: %v\n%s", err, out)
		}
		if got, want := string(out), "{\"name\":\"Alice 👋\"}\nnull\n"; got != want {
			t.Fatalf("quick start printed %q, want %q", got, want)
		}
	}
	// The key the example wrote with %2F is the key user/123.
	r, _ := http.NewRequest("GET", s.URL+"/v2/storage/kvs/"+id+"/keys/user/123", nil)
	r.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err = http.DefaultClient.Do(r)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET user/123: %v %v", resp, err)
	}
	resp.Body.Close()
}

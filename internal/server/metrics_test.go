package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/server"
)

func TestMetricsListener(t *testing.T) {
	s := kvdtest.Start(t, kvdtest.WithConfig(func(c *server.Config) { c.MetricsListen = "127.0.0.1:0" }))
	if s.MetricsAddr() == "" || s.MetricsAddr() == s.Addr() {
		t.Fatalf("metrics on %q, API on %q", s.MetricsAddr(), s.Addr())
	}
	for range 3 {
		call(t, http.DefaultClient, "GET", s.URL+"/v2/storage/kvs/550e8400-e29b-41d4-a716-446655440000/keys/k", s.Token, "")
	}
	call(t, http.DefaultClient, "GET", s.URL+"/v2/storage/kvs", "wrong", "")
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("http://" + s.MetricsAddr() + "/metrics")
	for _, want := range []string{
		`kvd_http_requests_total{method="GET",route="key",status="404"} 3`,
		`kvd_http_requests_total{method="GET",route="namespaces",status="401"} 1`,
		`kvd_http_request_duration_seconds_count{method="GET",route="key",status="404"} 3`,
		`go_goroutines`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if code, _ := get("http://" + s.MetricsAddr() + "/debug/pprof/"); code != 200 {
		t.Fatalf("pprof index: %d", code)
	}
	// The command line may hold a database password: not shown.
	if code, body := get("http://" + s.MetricsAddr() + "/debug/pprof/cmdline"); code != 404 || strings.Contains(body, "test") {
		t.Fatalf("/debug/pprof/cmdline: %d %q", code, body)
	}
	// Never on the public listener.
	if code, body := get(s.URL + "/metrics"); code != 404 || strings.Contains(body, "kvd_http") {
		t.Fatalf("API listener serves /metrics: %d", code)
	}
}

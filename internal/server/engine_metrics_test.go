package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/client"
	"github.com/edgekv/kv/deploy"
	"github.com/edgekv/kv/internal/kvdtest"
	"github.com/edgekv/kv/internal/pgtest"
	"github.com/edgekv/kv/internal/server"
)

// scrape reads the metrics of a kvd.
func scrape(t *testing.T, s *kvdtest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// value is the value of the series of family name whose labels include
// want (name=value pairs); ok is false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// metricNames are the metric names in text, with a histogram's _bucket,
// _sum and _count suffixes taken off.
func metricNames(text string) []string {
	var out []string
	for _, n := range regexp.MustCompile(`\bkvd_[a-z0-9_]*[a-z0-9]`).FindAllString(text, -1) {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			n = strings.TrimSuffix(n, suffix)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// documentedMetrics are the names the README's "Metrics" section lists.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n### Metrics\n")
	if start < 0 {
		t.Fatal(`README.md has no "### Metrics" section`)
	}
	text = text[start+1:]
	if end := strings.Index(text, "\n## "); end >= 0 {
		text = text[:end]
	}
	if end := strings.Index(text[4:], "\n### "); end >= 0 {
		text = text[:end+4]
	}
	names := metricNames(text)
	if len(names) < 30 {
		t.Fatalf("the README's Metrics section names only %d metrics: %q", len(names), names)
	}
	return names
}

// traffic makes every kind of request, and refusals: a bad token, a
// namespace over the quota, a write over the stored-bytes quota.
func traffic(t *testing.T, s *kvdtest.Server) {
	t.Helper()
	ctx := context.Background()
	c := client.New(client.WithBaseURL(s.URL), client.WithAPIKey(s.Token), client.WithMaxAttempts(1))
	ns, err := c.CreateNamespace(ctx, "metered")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := c.WaitReady(wctx, ns.ID.String()); err != nil {
		t.Fatal(err)
	}
	h := c.Namespace(ns.ID.String())
	for i := range 20 {
		if _, err := h.Put(ctx, "k/"+string(rune('a'+i)), []byte("value"), nil); err != nil {
			t.Fatal(err)
		}
	}
	// A watch stays open through the scrape (the test's end closes it).
	wctx2, stopWatch := context.WithCancel(ctx)
	t.Cleanup(stopWatch)
	events := h.Watch(wctx2, client.WatchOptions{Prefix: "k/"})
	next, stop := iter.Pull2(events)
	t.Cleanup(stop)
	if ev, err, ok := next(); !ok || err != nil || ev.Kind != client.EventReady {
		t.Fatalf("watch: %+v %v %v", ev, err, ok)
	}
	h.Get(ctx, "k/a")
	h.Get(ctx, "k/missing")
	h.List(ctx, "k/", "", 0)
	h.Delete(ctx, "k/b")
	if ev, err, ok := next(); !ok || err != nil || ev.Kind != client.EventDelete || ev.Key != "k/b" {
		t.Fatalf("watch: %+v %v %v; want the delete of k/b", ev, err, ok)
	}
	if _, err := h.Put(ctx, "big", make([]byte, 4096), nil); !errors.Is(err, kv.ErrQuota) {
		t.Errorf("a write over the stored-bytes quota: %v", err)
	}
	if _, err := c.CreateNamespace(ctx, "one-too-many"); !errors.Is(err, kv.ErrQuota) {
		t.Errorf("a namespace over the quota: %v", err)
	}
	bad := client.New(client.WithBaseURL(s.URL), client.WithAPIKey("wrong"), client.WithMaxAttempts(1))
	if _, err := bad.ListNamespaces(ctx, 1, 10); !errors.Is(err, kv.ErrUnauthorized) {
		t.Errorf("a bad token: %v", err)
	}
}

// TestMetricsOfEveryEngine scrapes a real kvd on each engine after
// traffic and finds every metric the README documents (each engine's own
// on that engine) and every metric the Grafana dashboard queries, with
// values that follow the traffic.
func TestMetricsOfEveryEngine(t *testing.T) {
	documented := documentedMetrics(t)
	queried := dashboardMetrics(t)
	seen := map[string]bool{}
	for _, engine := range []string{"pebble", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			opts := []kvdtest.Option{kvdtest.WithConfig(func(c *server.Config) {
				c.MetricsListen = "127.0.0.1:0"
				c.MaxNamespaces = 1
				c.MaxStoredBytes = 2048
			})}
			if engine == "postgres" {
				opts = append(opts, kvdtest.WithStore(pgtest.URL(t)))
			}
			s := kvdtest.Start(t, opts...)
			traffic(t, s)
			fams := scrape(t, s)
			for name, f := range fams {
				seen[name] = true
				if strings.HasPrefix(name, "kvd_") && f.GetHelp() == "" {
					t.Errorf("%s has no HELP text", name)
				}
			}
			own, other := "kvd_pebble_", "kvd_pg_"
			if engine == "postgres" {
				own, other = other, own
			}
			for _, name := range documented {
				_, ok := fams[name]
				switch {
				case strings.HasPrefix(name, other) && ok:
					t.Errorf("%s is exported on %s", name, engine)
				case !strings.HasPrefix(name, other) && !ok:
					t.Errorf("%s (documented) is not exported on %s", name, engine)
				}
			}
			for name := range fams {
				if strings.HasPrefix(name, "kvd_") && !slices.Contains(documented, name) {
					t.Errorf("%s is exported but not documented in the README", name)
				}
			}
			for _, want := range []struct {
				name   string
				labels []string
				min    float64
			}{
				{"kvd_refused_total", []string{"reason", "auth_failed"}, 1},
				{"kvd_refused_total", []string{"reason", "quota_namespaces"}, 1},
				{"kvd_refused_total", []string{"reason", "quota_stored_bytes"}, 1},
				{"kvd_http_requests_total", []string{"route", "key", "method", "PUT", "status", "201"}, 20},
				{"kvd_lifecycle_jobs_done_total", nil, 1},
				{"kvd_watch_streams", nil, 1},
				{"kvd_watch_namespaces", nil, 1},
				{"kvd_watch_events_total", nil, 1},
				{own + map[string]string{"kvd_pebble_": "wal_fsync_duration_seconds", "kvd_pg_": "pool_acquires_total"}[own], nil, 20},
				{own + map[string]string{"kvd_pebble_": "disk_usage_bytes", "kvd_pg_": "pool_connections"}[own], nil, 1},
				{own + map[string]string{"kvd_pebble_": "disk_usage_bytes", "kvd_pg_": "shared_calls_total"}[own], map[string][]string{"kvd_pebble_": nil, "kvd_pg_": {"op", "put"}}[own], 1},
				{own + map[string]string{"kvd_pebble_": "disk_usage_bytes", "kvd_pg_": "shared_runs_total"}[own], map[string][]string{"kvd_pebble_": nil, "kvd_pg_": {"op", "put"}}[own], 1},
			} {
				if v, ok := value(fams, want.name, want.labels...); !ok || v < want.min {
					t.Errorf("%s%q = %v (found %v); want at least %v", want.name, want.labels, v, ok, want.min)
				}
			}
			for _, zero := range []struct {
				name   string
				labels []string
			}{
				{"kvd_refused_total", []string{"reason", "free_space"}},
				{"kvd_lifecycle_jobs_pending", []string{"status", "pending"}},
				{"kvd_lifecycle_job_failures_total", []string{"job", "provision"}},
				{"kvd_pg_breaker_open", nil},
				{"kvd_watch_overflows_total", nil},
				{"kvd_pg_errors_total", []string{"kind", "engine_failure"}},
			} {
				if v, ok := value(fams, zero.name, zero.labels...); (ok || !strings.HasPrefix(zero.name, other)) && v != 0 {
					t.Errorf("%s%q = %v; want 0", zero.name, zero.labels, v)
				}
			}
		})
	}
	for _, name := range queried {
		if !seen[name] {
			t.Errorf("the dashboard queries %s, which no engine exports", name)
		}
	}
}

// dashboardMetrics are the metrics deploy/grafana/kvd.json queries; it must
// be valid JSON with panels.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(deploy.Dashboard, &d); err != nil {
		t.Fatalf("deploy/grafana/kvd.json: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	names := metricNames(strings.Join(exprs, "\n"))
	if len(names) < 20 {
		t.Fatalf("the dashboard queries only %d metrics: %q", len(names), names)
	}
	return names
}

// TestMetricsBacklog: namespaces that wait for a worker (none runs here)
// are counted on each engine, with the age of the oldest by the server's
// clock.
func TestMetricsBacklog(t *testing.T) {
	for _, engine := range []string{"pebble", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			clock := kvdtest.NewClock(time.Date(2026, 6, 18, 12, 0, 0, 0, time.UTC))
			opts := []kvdtest.Option{kvdtest.WithoutBackground(), kvdtest.WithClock(clock.Now),
				kvdtest.WithConfig(func(c *server.Config) { c.MetricsListen = "127.0.0.1:0" })}
			if engine == "postgres" {
				opts = append(opts, kvdtest.WithStore(pgtest.URL(t)))
			}
			s := kvdtest.Start(t, opts...)
			c := client.New(client.WithBaseURL(s.URL), client.WithAPIKey(s.Token))
			for _, name := range []string{"first", "second"} {
				if _, err := c.CreateNamespace(context.Background(), name); err != nil {
					t.Fatal(err)
				}
				clock.Advance(30 * time.Second)
			}
			fams := scrape(t, s)
			if v, _ := value(fams, "kvd_lifecycle_jobs_pending", "status", "pending"); v != 2 {
				t.Errorf("pending jobs = %v; want 2", v)
			}
			if v, _ := value(fams, "kvd_lifecycle_jobs_pending", "status", "deleting"); v != 0 {
				t.Errorf("deleting jobs = %v; want 0", v)
			}
			if v, _ := value(fams, "kvd_lifecycle_oldest_job_age_seconds"); v != 60 {
				t.Errorf("oldest job age = %vs; want 60s", v)
			}
		})
	}
}

// TestMetricsRefusalsOfLimits counts the refusals of the rate limit and
// the free-space reserve, each on a kvd of its own.
func TestMetricsRefusalsOfLimits(t *testing.T) {
	s := kvdtest.Start(t, kvdtest.WithConfig(func(c *server.Config) {
		c.MetricsListen = "127.0.0.1:0"
		c.RateLimit, c.RateBurst = 2, 2
	}))
	for range 3 {
		call(t, http.DefaultClient, "GET", s.URL+"/v2/storage/kvs", s.Token, "")
	}
	if v, _ := value(scrape(t, s), "kvd_refused_total", "reason", "rate_limited"); v != 1 {
		t.Errorf("rate_limited = %v; want 1", v)
	}

	full := kvdtest.Start(t, kvdtest.WithConfig(func(c *server.Config) {
		c.MetricsListen = "127.0.0.1:0"
		c.MinFreeSpace = 1 << 62 // more than any disk has
	}))
	resp, _ := call(t, http.DefaultClient, "POST", full.URL+"/v2/storage/kvs", full.Token, `{"name":"full"}`)
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Fatalf("a creation on a full disk: %s", resp.Status)
	}
	if v, _ := value(scrape(t, full), "kvd_refused_total", "reason", "free_space"); v != 1 {
		t.Errorf("free_space = %v; want 1", v)
	}
}

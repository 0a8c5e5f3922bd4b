// Package metrics exports kvd's operational metrics in the Prometheus
// format: request counts and latencies by route, method and status,
// refusals by reason, the storage engine's figures (Pebble's, or the
// PostgreSQL pool's and errors), the background worker's, plus the Go
// runtime's and the process's own. They are served on a listener of their
// own (with pprof), never beside the public API.
package metrics

import (
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTP records API requests. Its methods are safe for concurrent use; a
// nil *HTTP records nothing.
type HTTP struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	// The label combinations seen so far, so that a request does not hash
	// its labels: routes, methods and statuses are few.
	mu       sync.RWMutex
	counters map[labels]prometheus.Counter
	hists    map[labels]prometheus.Observer
}

type labels struct {
	route, method string
	status        int
}

// NewHTTP registers the request metrics with reg.
func NewHTTP(reg prometheus.Registerer) *HTTP {
	m := &HTTP{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvd_http_requests_total",
			Help: "API requests served, by route, method and status code.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kvd_http_request_duration_seconds",
			Help:    "Time to serve an API request, by route, method and status code.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route", "method", "status"}),
		counters: map[labels]prometheus.Counter{},
		hists:    map[labels]prometheus.Observer{},
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// Observe records one request.
func (m *HTTP) Observe(route, method string, status int, d time.Duration) {
	if m == nil {
		return
	}
	switch method {
	case http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodHead:
	default:
		method = "other" // methods are client input: keep the label set bounded
	}
	l := labels{route, method, status}
	m.mu.RLock()
	c, h := m.counters[l], m.hists[l]
	m.mu.RUnlock()
	if c == nil {
		s := strconv.Itoa(status)
		c = m.requests.WithLabelValues(route, method, s)
		h = m.latency.WithLabelValues(route, method, s)
		m.mu.Lock()
		m.counters[l], m.hists[l] = c, h
		m.mu.Unlock()
	}
	c.Inc()
	h.Observe(d.Seconds())
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves /metrics from reg and Go's profiles under /debug/pprof/.
func Handler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// No /debug/pprof/cmdline: the command line may hold a database
	// password (--store postgres://user:secret@...).
	mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/debug/pprof/cmdline" {
			http.NotFound(w, r)
			return
		}
		pprof.Index(w, r)
	})
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Refusals counts connections and requests refused to keep kvd within its
// limits, by reason. A nil *Refusals counts nothing.
type Refusals struct {
	c *prometheus.CounterVec
}

// The reasons of refusals. Every one is exported from the start (at 0),
// so that a dashboard or an alert finds the series before the first
// refusal.
const (
	// Connections (internal/httpconn).
	RefusedMaxConnections = "max_connections" // over --max-connections
	RefusedEvicted        = "evicted"         // an idle connection closed to make room
	RefusedHeaderBudget   = "header_budget"   // request headers over --header-memory
	// Requests (internal/api).
	RefusedRateLimited      = "rate_limited"       // 429, over --rate-limit
	RefusedQuotaNamespaces  = "quota_namespaces"   // 403, over --max-namespaces
	RefusedQuotaStoredBytes = "quota_stored_bytes" // 403, over --max-stored-bytes
	RefusedAuth             = "auth_failed"        // 401, a missing or unknown token
	RefusedFreeSpace        = "free_space"         // 507, the disk below --min-free-space
	RefusedBodyBudget       = "body_budget"        // 503, request bodies over --body-memory
	RefusedResponseBudget   = "response_budget"    // 503, values being sent over --response-memory
)

// RefusalReasons lists every reason, in the order of the documentation.
var RefusalReasons = []string{RefusedMaxConnections, RefusedEvicted, RefusedHeaderBudget, RefusedRateLimited, RefusedQuotaNamespaces,
	RefusedQuotaStoredBytes, RefusedAuth, RefusedFreeSpace, RefusedBodyBudget, RefusedResponseBudget}

// NewRefusals registers the refusal counter with reg.
func NewRefusals(reg prometheus.Registerer) *Refusals {
	r := &Refusals{c: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvd_refused_total",
		Help: "Connections and requests refused to keep kvd within its limits, by reason: max_connections, evicted, header_budget (connections); rate_limited (429), quota_namespaces and quota_stored_bytes (403), auth_failed (401), free_space (507), body_budget and response_budget (503).",
	}, []string{"reason"})}
	for _, reason := range RefusalReasons {
		r.c.WithLabelValues(reason)
	}
	reg.MustRegister(r.c)
	return r
}

// Inc counts one refusal.
func (r *Refusals) Inc(reason string) {
	if r != nil {
		r.c.WithLabelValues(reason).Inc()
	}
}

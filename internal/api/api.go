// Package api serves the key-value HTTP API under /v2/storage/kvs, plus
// /healthz and /readyz. It does its own routing on the escaped request path:
// a key is everything after /keys/ decoded exactly once, and no path
// cleaning or redirect ever applies (net/http's ServeMux would clean
// "a//b" or "a/../b", which are distinct, valid keys).
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/fairshare"
	"github.com/edgekv/kv/internal/metrics"
	"github.com/edgekv/kv/internal/ratelimit"
	"github.com/edgekv/kv/internal/service"
)

// Config configures the handler.
type Config struct {
	Service *service.Service
	Logger  *slog.Logger // nil: slog.Default()
	// AccessLog logs one line per request at Info level.
	AccessLog bool
	// Ready reports whether the server should receive traffic (/readyz);
	// nil means always.
	Ready func() bool
	// Limiter limits requests per token; nil means no limit.
	Limiter *ratelimit.Limiter
	// Metrics records every request; nil records nothing.
	Metrics *metrics.HTTP
	// Refusals counts the requests refused by a limit (rate, quotas,
	// authentication, free space, memory budgets); nil counts nothing.
	Refusals *metrics.Refusals
	// SlowBody is the pace of bodies and large responses: each 64 KiB of
	// a request body over 4 KiB must arrive within it, and each 64 KiB of
	// a value over 4 KiB be taken by the client within it; it is also the
	// longest a request waits for room in the budgets below before a 503.
	// 0 means DefaultSlowBody.
	SlowBody time.Duration
	// BodyBudget is the memory for request bodies being received, shared
	// fairly by organizations (0: DefaultBodyBudget); ResponseBudget
	// likewise for values being sent (0: DefaultResponseBudget). Both must
	// hold at least one value of the largest size.
	BodyBudget, ResponseBudget int64
}

// DefaultSlowBody is Config.SlowBody's default: bodies and large values
// must move at 13 KB/s or faster.
const DefaultSlowBody = 5 * time.Second

// Handler is the API's http.Handler.
type Handler struct {
	svc       *service.Service
	log       *slog.Logger
	accessLog bool
	ready     func() bool
	limiter   *ratelimit.Limiter
	metrics   *metrics.HTTP
	refusals  *metrics.Refusals
	reqSeq    atomic.Uint64
	inFlight  atomic.Int64
	slowBody  time.Duration
	// bodies and responses are the memory budgets of request bodies and
	// of large values being sent (body.go).
	bodies, responses *fairshare.Pool
	// batchReads bounds the batches with gets running at once (see
	// batchReadSlots).
	batchReads chan struct{}
	reqPrefix  string
	// closing is set when the server stops: watch streams end.
	closing atomic.Bool
	// streamsCtx is the context of the watch streams that run on a
	// connection of their own, streams counts them; Close ends them.
	streamsCtx   context.Context
	closeStreams context.CancelFunc
	streams      sync.WaitGroup
}

// New returns the API handler.
func New(cfg Config) *Handler {
	h := &Handler{svc: cfg.Service, log: cfg.Logger, accessLog: cfg.AccessLog, ready: cfg.Ready, limiter: cfg.Limiter, metrics: cfg.Metrics, refusals: cfg.Refusals,
		slowBody: cfg.SlowBody}
	if h.slowBody <= 0 {
		h.slowBody = DefaultSlowBody
	}
	h.streamsCtx, h.closeStreams = context.WithCancel(context.Background())
	budget := func(n, def int64) *fairshare.Pool {
		if n <= 0 {
			n = def
		}
		return fairshare.New(max(n, kv.MaxValueSize+1))
	}
	h.bodies = budget(cfg.BodyBudget, DefaultBodyBudget)
	h.responses = budget(cfg.ResponseBudget, DefaultResponseBudget)
	h.batchReads = make(chan struct{}, batchReadSlots)
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.ready == nil {
		h.ready = func() bool { return true }
	}
	var b [4]byte
	rand.Read(b[:])
	h.reqPrefix = hex.EncodeToString(b[:]) + "-"
	return h
}

// basePath is the root of every API route.
const basePath = "/v2/storage/kvs"

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	rec := recorders.Get().(*recorder)
	*rec = recorder{ResponseWriter: w, status: http.StatusOK, ctx: r.Context(), start: start}
	rec.id = r.Header.Get("X-Request-Id")
	if !validRequestID(rec.id) {
		rec.id = h.newRequestID()
	}
	rec.idHdr[0] = rec.id
	w.Header()["X-Request-Id"] = rec.idHdr[:]
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.log.LogAttrs(r.Context(), slog.LevelError, "panic serving request",
				slog.String("request_id", rec.id), slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
			if !rec.wrote {
				writeError(rec, h.log, kv.Errorf(kv.EInternal, "An internal error occurred; the request id is %s", rec.id))
			}
		}
		if !rec.detached { // a stream that went on by itself reports its own end
			h.served(rec.summary(r), rec.bytes, time.Since(start))
		}
		if !rec.wrote {
			// net/http copies the header map when the status is written;
			// it must be before rec's arrays go back to the pool.
			rec.WriteHeader(http.StatusOK)
		}
		*rec = recorder{}
		recorders.Put(rec)
	}()
	h.route(rec, r)
}

// servedRequest is what the metrics and the access log say of a request
// that was served.
type servedRequest struct {
	ctx                     context.Context
	id, route, method, path string
	org, tokenID            string
	status                  int
}

// served returns what rec and r say of the request, copied: a stream that
// goes on after its handler has returned reports it at its end.
func (rec *recorder) summary(r *http.Request) servedRequest {
	return servedRequest{ctx: rec.ctx, id: rec.id, route: rec.route, method: r.Method, path: r.URL.EscapedPath(),
		org: rec.org, tokenID: rec.tokenID, status: rec.status}
}

// served counts a request in the metrics and writes its access log line.
func (h *Handler) served(q servedRequest, bytes int64, took time.Duration) {
	h.metrics.Observe(q.route, q.method, q.status, took)
	if h.accessLog {
		h.log.LogAttrs(q.ctx, slog.LevelInfo, "request",
			slog.String("request_id", q.id),
			slog.String("method", q.method),
			slog.String("path", q.path),
			slog.Int("status", q.status),
			slog.Int64("bytes", bytes),
			slog.String("org", q.org),
			slog.String("token_id", q.tokenID),
			slog.Duration("duration", took))
	}
}

// InFlight is the number of requests being served.
func (h *Handler) InFlight() int64 { return h.inFlight.Load() }

// Close ends the watch streams (they would hold a graceful shutdown for
// as long as their clients stay); other requests are not affected.
func (h *Handler) Close() {
	h.closing.Store(true)
	h.closeStreams()
}

// WaitStreams waits until the watch streams that took over their
// connections have ended, or ctx ends: they are not requests in flight
// that a shutdown of the HTTP server waits for.
func (h *Handler) WaitStreams(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.streams.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Handler) newRequestID() string {
	n := h.reqSeq.Add(1)
	var b [16]byte
	return h.reqPrefix + string(strconv.AppendUint(b[:0], n, 16))
}

// validRequestID accepts a client's X-Request-Id if it is short and plain.
func validRequestID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// recorders are reused across requests: a request allocates none.
var recorders = sync.Pool{New: func() any { return new(recorder) }}

// recorder remembers what was written, for the access log and for panics,
// and holds the backing arrays of the headers every response sets.
type recorder struct {
	http.ResponseWriter
	idHdr, ctHdr, lenHdr, updHdr [1]string
	ctx                          context.Context // the request's
	id                           string
	org, tokenID                 string
	route                        string // the route's name, for metrics
	status                       int
	bytes                        int64
	wrote                        bool
	start                        time.Time
	// detached: the request goes on after its handler returns (a watch
	// stream on a connection of its own), and reports its own end.
	detached bool
}

func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status = status
		r.wrote = true
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// route is a parsed API path.
type route struct {
	kind routeKind
	id   string // namespace id, as sent
	key  string // decoded key
	ns   kv.ID  // id, parsed once the request is authenticated
}

// hasNamespace reports whether the route names a namespace.
func (rt route) hasNamespace() bool {
	return rt.kind == routeNamespace || rt.kind == routeKeys || rt.kind == routeKey || rt.kind == routeNamespaceUsage || rt.kind == routeBatch || rt.kind == routeWatch
}

type routeKind int

const (
	routeNone           routeKind = iota
	routeNamespaces               // /v2/storage/kvs
	routeNamespace                // /v2/storage/kvs/{id}
	routeKeys                     // /v2/storage/kvs/{id}/keys
	routeKey                      // /v2/storage/kvs/{id}/keys/{key}
	routeUsage                    // /v2/storage/kvs/usage
	routeNamespaceUsage           // /v2/storage/kvs/{id}/usage
	routeBatch                    // /v2/storage/kvs/{id}/batch
	routeWatch                    // /v2/storage/kvs/{id}/watch
)

var routeNames = [...]string{
	routeNone:           "other",
	routeNamespaces:     "namespaces",
	routeNamespace:      "namespace",
	routeKeys:           "keys",
	routeKey:            "key",
	routeUsage:          "usage",
	routeNamespaceUsage: "namespace_usage",
	routeBatch:          "batch",
	routeWatch:          "watch",
}

// parseRoute splits an escaped path into a route. The key is the escaped
// remainder after "/keys/", unescaped once; ok is false for a path that is
// no route or that cannot be unescaped.
func parseRoute(escaped string) (rt route, ok bool) {
	rest, found := strings.CutPrefix(escaped, basePath)
	if !found {
		return rt, false
	}
	if rest == "" || rest == "/" {
		return route{kind: routeNamespaces}, true
	}
	if rest[0] != '/' {
		return rt, false
	}
	rest = rest[1:]
	idEsc, tail, _ := strings.Cut(rest, "/")
	rt.id = unescape(idEsc)
	switch {
	case rest == "usage":
		rt.kind = routeUsage
	case !strings.Contains(rest, "/"):
		rt.kind = routeNamespace
	case tail == "usage":
		rt.kind = routeNamespaceUsage
	case tail == "keys":
		rt.kind = routeKeys
	case tail == "batch":
		rt.kind = routeBatch
	case tail == "watch":
		rt.kind = routeWatch
	case strings.HasPrefix(tail, "keys/"):
		rt.kind, rt.key = routeKey, unescape(tail[len("keys/"):])
	default:
		return rt, false
	}
	return rt, true
}

func (h *Handler) route(w *recorder, r *http.Request) {
	path := r.URL.EscapedPath()
	w.route = "other"
	switch path {
	case "/healthz":
		w.route = "healthz"
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	case "/readyz":
		w.route = "readyz"
		if h.ready() {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		} else {
			writeErrorStatus(w, http.StatusServiceUnavailable, kv.Errorf(kv.EUnavailable, "not ready"))
		}
		return
	}
	rt, ok := parseRoute(path)
	if ok {
		w.route = routeNames[rt.kind]
	}
	if !ok && !strings.HasPrefix(path, basePath+"/") {
		h.fail(w, kv.Errorf(kv.ENotFound, "no route %s %s; the API lives under %s", r.Method, truncate(path, 128), basePath))
		return
	}
	token := bearerToken(r)
	who, err := h.svc.Authenticate(r.Context(), token, r.RemoteAddr)
	if err != nil {
		var limited *service.RateLimitError
		if errors.As(err, &limited) {
			w.Header().Set("Retry-After", strconv.Itoa(limited.Retry))
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kvd"`)
		}
		h.fail(w, err)
		return
	}
	w.org, w.tokenID = who.Org, who.TokenID
	if h.limiter != nil && !h.allow(w, token) {
		return
	}
	if !ok {
		h.fail(w, kv.Errorf(kv.ENotFound, "no route %s %s", r.Method, truncate(path, 128)))
		return
	}
	if rt.hasNamespace() {
		// The id is parsed here, once: everything beyond takes a kv.ID.
		if rt.ns, err = kv.ParseID(rt.id); err != nil {
			h.fail(w, err)
			return
		}
	}
	switch rt.kind {
	case routeNamespaces:
		switch r.Method {
		case http.MethodPost:
			h.createNamespace(w, r, who)
		case http.MethodGet, http.MethodHead:
			h.listNamespaces(w, r, who)
		default:
			methodNotAllowed(w, "GET, POST")
		}
	case routeNamespace:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.getNamespace(w, r, who, rt.ns)
		case http.MethodDelete:
			h.deleteNamespace(w, r, who, rt.ns)
		default:
			methodNotAllowed(w, "GET, DELETE")
		}
	case routeUsage, routeNamespaceUsage:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.usage(w, r, who, rt)
		default:
			methodNotAllowed(w, "GET")
		}
	case routeKeys:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.listKeys(w, r, who, rt.ns)
		default:
			methodNotAllowed(w, "GET")
		}
	case routeBatch:
		switch r.Method {
		case http.MethodPost:
			h.batch(w, r, who, rt.ns)
		default:
			methodNotAllowed(w, "POST")
		}
	case routeWatch:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.watch(w, r, who, rt.ns, token)
		default:
			methodNotAllowed(w, "GET")
		}
	case routeKey:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.getKey(w, r, who, rt)
		case http.MethodPut:
			h.putKey(w, r, who, rt)
		case http.MethodDelete:
			h.deleteKey(w, r, who, rt)
		default:
			methodNotAllowed(w, "GET, PUT, DELETE")
		}
	}
}

// allow applies the rate limit of token, setting the X-RateLimit headers,
// and answers 429 with Retry-After when the token is over its limit.
func (h *Handler) allow(w *recorder, token string) bool {
	d := h.limiter.Allow(token)
	hd := w.Header()
	hd.Set("X-RateLimit-Limit", strconv.Itoa(d.Limit))
	hd.Set("X-RateLimit-Remaining", strconv.Itoa(d.Remaining))
	hd.Set("X-RateLimit-Reset", strconv.Itoa(ceilSeconds(d.Reset)))
	if d.Allowed {
		return true
	}
	retry := ceilSeconds(d.RetryAfter)
	hd.Set("Retry-After", strconv.Itoa(retry))
	h.fail(w, kv.Errorf(kv.ERateLimited, "rate limit of %d requests per minute exceeded; retry in %d s", d.Limit, retry))
	return false
}

func ceilSeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

func methodNotAllowed(w *recorder, allow string) {
	w.Header().Set("Allow", allow)
	writeErrorStatus(w, http.StatusMethodNotAllowed, &kv.Error{Code: kv.EInvalid, Title: "Method not allowed", Detail: "method not allowed; allowed: " + allow})
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) string {
	a := r.Header.Get("Authorization")
	if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// unescape decodes a path segment once. A malformed escape is left as it
// is, so validation then refuses the '%' with a clear message.
func unescape(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	u, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return u
}

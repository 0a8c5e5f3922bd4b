// Package client is the Go SDK of the key-value service: a client for the
// Telnyx Edge Compute KV HTTP API, as served by the hosted service and by
// kvd.
//
// A Client manages namespaces; a *Namespace handle reads and writes the keys
// of one namespace:
//
//	c, err := client.FromEnv() // TELNYX_API_KEY, TELNYX_BASE_URL
//	ns := c.Namespace(id)      // or client.Binding("MY_CACHE")
//	created, err := ns.Put(ctx, "user/123", []byte(`{"name":"Alice"}`), nil)
//	value, contentType, err := ns.Get(ctx, "user/123")
//
// Errors returned by the service are *APIError values; they match the
// sentinels of package kv with errors.Is (errors.Is(err, kv.ErrNotFound)).
//
// Idempotent calls (every GET, PUT and DELETE) are retried with exponential
// backoff and full jitter on 429, 502, 503 and 504 responses and on
// connection failures, honouring Retry-After, up to Config.MaxAttempts
// attempts, never waiting longer than Config.MaxRetryWait at a time nor
// Config.MaxRetryTotal in all, and never past the context's end. Creating a
// namespace (a POST) is never retried. A call that must not be applied twice
// (Incr, a write with PutOptions.IfMatch or IfAbsent, a conditional delete,
// a batch with checks or incr) is retried only when it cannot have been
// applied: the connection was never made, or the service answered 429;
// when its outcome is open (the connection broke after the request was
// sent, a 5xx answer) its error matches ErrMaybeApplied. A Client is safe
// for concurrent use.
//
// The client defends itself against a misbehaving server: every response
// body is read up to a bound (a value up to kv.MaxValueSize, a JSON answer
// up to MaxJSONResponse, an error up to 64 KiB), a listing that repeats a
// cursor ends with ErrBadCursor, and a redirect to another origin (scheme,
// host and port) is refused, so the API key is only ever sent to the
// origin of Config.BaseURL.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultBaseURL is the hosted service's API root.
const DefaultBaseURL = "https://api.telnyx.com"

// Environment variables read by FromEnv and Binding.
const (
	EnvAPIKey  = "TELNYX_API_KEY"
	EnvBaseURL = "TELNYX_BASE_URL"
)

// Config configures a Client. The zero value of each field selects its
// default (see DefaultConfig).
type Config struct {
	// BaseURL is the API root, e.g. "https://api.telnyx.com" or
	// "http://127.0.0.1:8080". A trailing "/v2" or "/v2/storage/kvs" and
	// trailing slashes are accepted and ignored.
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <APIKey>".
	APIKey string
	// HTTPClient sends the requests; nil means a client with no overall
	// timeout (bound calls with their context).
	HTTPClient *http.Client
	// MaxAttempts bounds the attempts of one retried call, the first
	// included; 1 disables retries. Default 4.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the computed backoff: before retry n
	// (from 1) the client waits a random duration in
	// [0, min(MaxBackoff, MinBackoff*2^(n-1))), unless the response said
	// Retry-After. Defaults 100ms and 5s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// MaxRetryWait bounds one wait before a retry. A Retry-After longer
	// than this makes the call return the service's answer (an *APIError
	// with RetryAfter set) at once instead of sleeping. Default 30s.
	MaxRetryWait time.Duration
	// MaxRetryTotal bounds the waits of one call added up; a retry that
	// would wait past it is not made. Default 60s.
	MaxRetryTotal time.Duration
	// UserAgent is sent in the User-Agent header.
	UserAgent string
	// Now is the clock of the expiry helpers; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		BaseURL:       DefaultBaseURL,
		MaxAttempts:   4,
		MinBackoff:    100 * time.Millisecond,
		MaxBackoff:    5 * time.Second,
		MaxRetryWait:  30 * time.Second,
		MaxRetryTotal: 60 * time.Second,
		UserAgent:     "edgekv-go-client",
	}
}

// Option adjusts a Config.
type Option func(*Config)

// WithBaseURL sets Config.BaseURL.
func WithBaseURL(u string) Option { return func(c *Config) { c.BaseURL = u } }

// WithAPIKey sets Config.APIKey.
func WithAPIKey(key string) Option { return func(c *Config) { c.APIKey = key } }

// WithHTTPClient sets Config.HTTPClient.
func WithHTTPClient(h *http.Client) Option { return func(c *Config) { c.HTTPClient = h } }

// WithMaxAttempts sets Config.MaxAttempts.
func WithMaxAttempts(n int) Option { return func(c *Config) { c.MaxAttempts = n } }

// WithBackoff sets Config.MinBackoff and Config.MaxBackoff.
func WithBackoff(min, max time.Duration) Option {
	return func(c *Config) { c.MinBackoff, c.MaxBackoff = min, max }
}

// WithRetryWait sets Config.MaxRetryWait and Config.MaxRetryTotal.
func WithRetryWait(perWait, total time.Duration) Option {
	return func(c *Config) { c.MaxRetryWait, c.MaxRetryTotal = perWait, total }
}

// WithClock sets Config.Now.
func WithClock(now func() time.Time) Option { return func(c *Config) { c.Now = now } }

// WithConfig replaces the whole configuration; later options still apply.
func WithConfig(cfg Config) Option { return func(c *Config) { *c = cfg } }

// Client talks to the API. It is safe for concurrent use.
type Client struct {
	root   string // API root without /v2 and without a trailing slash
	apiKey string
	hc     *http.Client
	cfg    Config
	// wait sleeps before a retry; tests replace it to observe delays.
	wait func(ctx context.Context, d time.Duration) error
}

// New returns a Client configured by DefaultConfig and opts.
func New(opts ...Option) *Client {
	cfg := DefaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	def := DefaultConfig()
	if cfg.BaseURL == "" {
		cfg.BaseURL = def.BaseURL
	}
	if cfg.MaxAttempts < 1 {
		cfg.MaxAttempts = def.MaxAttempts
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = def.MinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(def.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = def.MaxRetryWait
	}
	if cfg.MaxRetryTotal <= 0 {
		cfg.MaxRetryTotal = def.MaxRetryTotal
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = def.UserAgent
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// A copy of the caller's http.Client, so that the redirect policy is
	// ours without changing theirs.
	hc := &http.Client{}
	if cfg.HTTPClient != nil {
		*hc = *cfg.HTTPClient
	}
	hc.CheckRedirect = sameOriginRedirects(hc.CheckRedirect)
	return &Client{root: NormalizeBaseURL(cfg.BaseURL), apiKey: cfg.APIKey, hc: hc, cfg: cfg, wait: sleepCtx}
}

// FromEnv returns a Client configured from TELNYX_API_KEY and
// TELNYX_BASE_URL (default DefaultBaseURL), then opts. It fails when
// TELNYX_API_KEY is unset or empty.
func FromEnv(opts ...Option) (*Client, error) {
	key := os.Getenv(EnvAPIKey)
	if key == "" {
		return nil, fmt.Errorf("client: %s is not set", EnvAPIKey)
	}
	base := os.Getenv(EnvBaseURL)
	if base == "" {
		base = DefaultBaseURL
	}
	return New(append([]Option{WithAPIKey(key), WithBaseURL(base)}, opts...)...), nil
}

// NormalizeBaseURL returns the API root of u: without trailing slashes and
// without a trailing "/v2" or "/v2/storage/kvs", so "http://h:8080/v2/"
// gives "http://h:8080". It does not check u; ParseBaseURL does.
func NormalizeBaseURL(u string) string {
	u = strings.TrimRight(strings.TrimSpace(u), "/")
	u = strings.TrimSuffix(u, namespacesPath)
	u = strings.TrimSuffix(u, "/v2")
	return strings.TrimRight(u, "/")
}

// ParseBaseURL checks an API root as a person gives it and returns it
// normalised (see NormalizeBaseURL): an http or https URL with a host, and
// no user name, password, query or fragment. The error says what is wrong
// and, for a bare "host:port", what was probably meant.
func ParseBaseURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("the endpoint is empty; give a URL such as https://api.telnyx.com or http://127.0.0.1:8080")
	}
	if !strings.Contains(s, "://") {
		return "", fmt.Errorf("endpoint %.80q has no scheme; did you mean http://%s (or https://)?", s, strings.TrimLeft(s, "/"))
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("endpoint %.80q is not a URL: %v", s, errors.Unwrap(err))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("endpoint %.80q: the scheme must be http or https, not %q", s, u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("endpoint %.80q has no host", s)
	case u.User != nil:
		return "", fmt.Errorf("endpoint %.80q holds a user name or password; the API key goes in TELNYX_API_KEY or auth api-key set, not in the URL", u.Redacted())
	case u.RawQuery != "" || u.ForceQuery:
		return "", fmt.Errorf("endpoint %.80q has a query (?...); give the API root alone", s)
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "", fmt.Errorf("endpoint %.80q has a fragment (#...); give the API root alone", s)
	}
	return NormalizeBaseURL(u.Scheme + "://" + u.Host + u.EscapedPath()), nil
}

// BaseURL returns the API root the client talks to (without /v2).
func (c *Client) BaseURL() string { return c.root }

// request describes one API call.
type request struct {
	method string
	path   string // escaped path below the root, starting with /v2/
	query  string // encoded query, without '?'
	header http.Header
	// body returns a fresh reader of the request body for each attempt; nil
	// means no body. size is the body's length, or -1 when unknown.
	body func() (io.Reader, error)
	size int64
	// retry permits retries (idempotent calls with a replayable body).
	retry bool
	// unsafe marks a call that must not be applied twice (an incr, a
	// conditional write, a batch with checks): it is retried only when it
	// cannot have been applied (see replaySafe), and an answer that leaves
	// its outcome open is reported as ErrMaybeApplied.
	unsafe bool
	// notModified accepts a 304 answer (a GET with If-None-Match).
	notModified bool
	// limit bounds a JSON response body; 0 means MaxJSONResponse.
	limit int
}

// do sends r, retrying as the policy allows, and returns a response with a
// 2xx status; any other status is returned as an *APIError. The caller
// closes the response body.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	attempts := 1
	if r.retry {
		attempts = c.cfg.MaxAttempts
	}
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		resp, err := c.send(ctx, r)
		var delay time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				if r.unsafe {
					return nil, maybeApplied(ctx.Err())
				}
				return nil, ctx.Err()
			}
			if r.unsafe && !notSent(err) {
				return nil, maybeApplied(err)
			}
			if attempt >= attempts || !retryableTransportError(err) {
				return nil, err
			}
			delay = min(c.backoff(attempt), c.cfg.MaxRetryWait)
		case resp.StatusCode >= 200 && resp.StatusCode < 300,
			r.notModified && resp.StatusCode == http.StatusNotModified:
			return resp, nil
		default:
			apiErr := readAPIError(resp)
			if r.unsafe && resp.StatusCode >= 500 {
				return nil, maybeApplied(apiErr)
			}
			if attempt >= attempts || !retryableStatus(resp.StatusCode) ||
				(r.unsafe && resp.StatusCode != http.StatusTooManyRequests) {
				return nil, apiErr
			}
			delay = min(c.backoff(attempt), c.cfg.MaxRetryWait)
			if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				// A wait longer than the bound is the service saying
				// "not now": report that rather than sleep on it.
				if ra > c.cfg.MaxRetryWait {
					return nil, apiErr
				}
				delay = ra
			}
			err = apiErr
		}
		// Waiting past the budget or the deadline cannot succeed; report
		// the last answer rather than a bare deadline error.
		if waited+delay > c.cfg.MaxRetryTotal {
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return nil, err
		}
		if werr := c.wait(ctx, delay); werr != nil {
			return nil, werr
		}
		waited += delay
	}
}

// send makes one attempt.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	u := c.root + r.path
	if r.query != "" {
		u += "?" + r.query
	}
	var body io.Reader
	if r.body != nil {
		b, err := r.body()
		if err != nil {
			return nil, err
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if r.body != nil {
		// A wrapped reader hides its length from net/http; say it here.
		req.ContentLength = r.size
		if r.size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	return c.hc.Do(req)
}

// backoff is the full-jitter delay before retry number attempt (from 1).
func (c *Client) backoff(attempt int) time.Duration {
	ceiling := c.cfg.MinBackoff
	for i := 1; i < attempt && ceiling < c.cfg.MaxBackoff; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, c.cfg.MaxBackoff)
	return rand.N(ceiling + 1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// drain discards what is left of a response body so the connection can be
// reused, reading at most a little.
func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}

// errBodyNotReplayable is reported by a body source asked for a second
// attempt it cannot provide.
var errBodyNotReplayable = errors.New("client: request body cannot be replayed")

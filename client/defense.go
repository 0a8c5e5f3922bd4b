package client

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/edgekv/kv"
)

// Bounds on what the client reads from a response, whatever the server
// sends.
const (
	// MaxJSONResponse bounds a JSON answer: the largest legal page (1,000
	// keys of 256 bytes with their metadata and a cursor, or 250
	// namespaces) is well under a MiB.
	MaxJSONResponse = 4 << 20
	// MaxUsageResponse bounds a usage report, which lists every namespace
	// of the organization and so has no page size to bound it.
	MaxUsageResponse = 32 << 20
	// maxErrorBody bounds an error answer; only its first envelope is read.
	maxErrorBody = 64 << 10
	// maxRedirects bounds the same-origin redirects followed by one request.
	maxRedirects = 3
)

// ErrResponseTooLarge is matched (errors.Is) by the error of a call whose
// response body is over its bound: a value over kv.MaxValueSize, a JSON
// answer over MaxJSONResponse. The body is not read past the bound.
var ErrResponseTooLarge = errors.New("client: response too large")

// ErrBadCursor is matched (errors.Is) by the error of a listing that cannot
// end: a key listing page that says more keys follow but gives no cursor,
// or a cursor the walk has already been given; a namespace listing that
// serves a page it has served before.
var ErrBadCursor = errors.New("client: the service sent a listing cursor that would never end the walk")

// readLimited reads a whole response body of at most limit bytes. A body
// (or a Content-Length) over limit is an error matching
// ErrResponseTooLarge, and at most limit+1 bytes are read.
func readLimited(resp *http.Response, limit int64, what string) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes; at most %d are accepted", ErrResponseTooLarge, what, resp.ContentLength, limit)
	}
	// Grow by doubling, as io.ReadAll does, but never past limit+1: a
	// hostile body costs at most about twice the bound.
	size := int64(512)
	if resp.ContentLength >= 0 {
		size = resp.ContentLength + 1
	}
	buf := make([]byte, 0, min(size, limit+1))
	for {
		if int64(len(buf)) > limit {
			return nil, fmt.Errorf("%w: %s is over %d bytes", ErrResponseTooLarge, what, limit)
		}
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), limit+1))
			copy(grown, buf)
			buf = grown
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			if int64(len(buf)) > limit {
				return nil, fmt.Errorf("%w: %s is over %d bytes", ErrResponseTooLarge, what, limit)
			}
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("client: reading %s: %w", what, err)
		}
	}
}

// copyLimited streams a response body of at most limit bytes into w. A body
// (or a Content-Length) over limit is an error matching
// ErrResponseTooLarge; nothing past limit bytes is read or written.
func copyLimited(w io.Writer, resp *http.Response, limit int64, what string) (int64, error) {
	if resp.ContentLength > limit {
		return 0, fmt.Errorf("%w: %s is %d bytes; at most %d are accepted", ErrResponseTooLarge, what, resp.ContentLength, limit)
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, limit))
	if err != nil {
		return n, fmt.Errorf("client: streaming %s: %w", what, err)
	}
	if n == limit {
		var one [1]byte
		if m, _ := io.ReadFull(resp.Body, one[:]); m > 0 {
			return n, fmt.Errorf("%w: %s is over %d bytes", ErrResponseTooLarge, what, limit)
		}
	}
	return n, nil
}

// valueWhat names a key's value in errors.
func valueWhat(key string) string { return fmt.Sprintf("the value of %q", key) }

// valueLimit is the bound of a value.
const valueLimit = int64(kv.MaxValueSize)

// RedirectError is the error of a request that the server redirected to
// another origin. The client does not follow it: the request carries the
// API key, which belongs to the origin of the base URL alone.
type RedirectError struct {
	From, To string // the two origins, scheme://host:port
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("client: the service at %s redirected to %s; not following a redirect to another origin, which would hand it the API key", e.From, e.To)
}

// sameOriginRedirects wraps an http.Client's redirect policy: a redirect to
// another origin than the first request's is refused, and at most
// maxRedirects are followed.
func sameOriginRedirects(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		from, to := origin(via[0].URL), origin(req.URL)
		if from != to {
			return &RedirectError{From: from, To: to}
		}
		if len(via) > maxRedirects {
			return fmt.Errorf("client: stopped after %d redirects (last to %s)", maxRedirects, req.URL.Redacted())
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
}

// origin returns scheme://host:port of u, with the scheme's default port
// when u has none and the host in lowercase.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return scheme + "://" + host + ":" + port
}

// cursorGuard detects a listing whose cursors repeat, in constant memory:
// Brent's cycle detection compares each new cursor with one saved cursor,
// saved afresh at powers of two, so any cycle is found within a few times
// its length.
type cursorGuard struct {
	saved       string
	power, step int
	pages       int
	what        string // what repeats: "cursor", or "page" for namespaces
}

func newCursorGuard(start string) *cursorGuard {
	return &cursorGuard{saved: start, power: 1, what: "cursor"}
}

// next checks the page just received: hasMore and its cursor.
func (g *cursorGuard) next(hasMore bool, cursor string) error {
	g.pages++
	if !hasMore {
		return nil
	}
	if cursor == "" {
		return fmt.Errorf("%w: page %d says more keys follow but has no cursor", ErrBadCursor, g.pages)
	}
	if cursor == g.saved {
		return fmt.Errorf("%w: page %d repeats an earlier %s (%.40q); the listing would loop forever", ErrBadCursor, g.pages, g.what, cursor)
	}
	g.step++
	if g.step == g.power {
		g.saved, g.power, g.step = cursor, g.power*2, 0
	}
	return nil
}

package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgekv/kv"
)

// Sentinels for errors.Is, shared with package kv: an *APIError matches the
// sentinel of its code.
var (
	ErrUnauthorized  = kv.ErrUnauthorized
	ErrNotFound      = kv.ErrNotFound
	ErrInternal      = kv.ErrInternal
	ErrInvalid       = kv.ErrInvalid
	ErrUnprocessable = kv.ErrUnprocessable
	ErrConflict      = kv.ErrConflict
	ErrTooLarge      = kv.ErrTooLarge
	ErrRateLimited   = kv.ErrRateLimited
	ErrUnavailable   = kv.ErrUnavailable
	ErrQuota         = kv.ErrQuota
	ErrForbidden     = kv.ErrForbidden
)

// APIError is an error answer of the service: a non-2xx status with the
// Telnyx error envelope (or, from a proxy, without one).
//
// errors.Is(err, kv.ErrNotFound) and the other kv sentinels match by Code,
// and errors.As(err, &kvErr) yields the equivalent *kv.Error.
type APIError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Code is the error code. A code the client does not know, or a
	// response without the envelope, gets kv.CodeForStatus(StatusCode).
	Code kv.ErrorCode
	// RawCode is the code as sent ("" without an envelope).
	RawCode string
	// Title and Detail are the envelope's texts; Detail says what was wrong
	// and what is allowed.
	Title  string
	Detail string
	// Pointer and Parameter locate the fault in the request, when given.
	Pointer   string
	Parameter string
	// RequestID is the response's X-Request-Id, for support.
	RequestID string
	// RetryAfter is the response's Retry-After, if any (0 otherwise).
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	msg := e.Detail
	if msg == "" {
		msg = e.Title
	}
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("client: %s (HTTP %d, code %s)", msg, e.StatusCode, e.Code)
}

// Unwrap returns the equivalent *kv.Error, so errors.Is and errors.As see
// the kv vocabulary.
func (e *APIError) Unwrap() error {
	return &kv.Error{Code: e.Code, Title: e.Title, Detail: e.Detail, Pointer: e.Pointer, Parameter: e.Parameter}
}

// knownCode reports whether c is one of the codes of package kv.
func knownCode(c kv.ErrorCode) bool { return kv.KnownCode(c) }

// readAPIError turns a non-2xx response into an *APIError and closes its
// body.
func readAPIError(resp *http.Response) *APIError {
	defer resp.Body.Close()
	e := &APIError{StatusCode: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = ra
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var env kv.ErrorEnvelope
	if json.Unmarshal(body, &env) == nil && len(env.Errors) > 0 {
		first := env.Errors[0]
		e.RawCode, e.Title, e.Detail = first.Code, first.Title, first.Detail
		if first.Source != nil {
			e.Pointer, e.Parameter = first.Source.Pointer, first.Source.Parameter
		}
		e.Code = kv.ErrorCode(first.Code)
	} else {
		e.Title = http.StatusText(resp.StatusCode)
		if text := firstLine(body); text != "" && !strings.HasPrefix(text, "<") {
			e.Detail = text
		}
	}
	if !knownCode(e.Code) {
		e.Code = kv.CodeForStatus(resp.StatusCode)
	}
	return e
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date (relative to now). A date in the past means no wait.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(24*time.Hour/time.Second) {
			secs = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// retryableTransportError reports whether err means the request most likely
// never reached the service or the connection broke before an answer: a
// failed dial, a refused or reset connection, or a connection closed before
// the response. Timeouts of an http.Client are the caller's budget and are
// not retried.
func retryableTransportError(err error) bool {
	if errors.Is(err, errBodyNotReplayable) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.IsTemporary || dns.IsTimeout
	}
	return errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

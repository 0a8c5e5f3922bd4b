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
	// ErrPreconditionFailed is matched by the 412 answer of a conditional
	// request (PutOptions.IfMatch or IfAbsent, DeleteOptions.IfMatch) or
	// of an atomic batch whose check failed: nothing was written. The
	// *APIError carries the key's current ETag, when the key exists and
	// the service sent it.
	ErrPreconditionFailed = kv.ErrPrecondition
)

// codePreconditionFailed is the code of a 412 answer (API.md, "Codes and
// retry hints").
const codePreconditionFailed = kv.EPrecondition

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
	// ETag is the key's current entity tag sent with the answer, if any:
	// on a failed precondition (412) it is the ETag the key has now, and
	// empty when the key does not exist.
	ETag string
	// OldestRevision is, on a 410 of a watch (ErrHistoryGone), the lowest
	// revision the watch may resume from.
	OldestRevision uint64
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
	e := &APIError{StatusCode: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id"), ETag: resp.Header.Get("ETag")}
	if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		e.RetryAfter = ra
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var env struct {
		Errors []errorObject `json:"errors"`
	}
	if json.Unmarshal(body, &env) == nil && len(env.Errors) > 0 {
		e.fill(env.Errors[0])
	} else {
		e.Title = http.StatusText(resp.StatusCode)
		if text := firstLine(body); text != "" && !strings.HasPrefix(text, "<") {
			e.Detail = text
		}
	}
	e.settleCode()
	return e
}

// errorObject is one error of an envelope, as kv.ErrorObject, with the
// current ETag a precondition failure may carry in its meta.
type errorObject struct {
	Code   string          `json:"code"`
	Title  string          `json:"title"`
	Detail string          `json:"detail"`
	Source *kv.ErrorSource `json:"source,omitempty"`
	Meta   struct {
		ETag           string `json:"etag"`
		OldestRevision uint64 `json:"oldest_revision"`
	} `json:"meta"`
}

// fill copies an error object into e.
func (e *APIError) fill(o errorObject) {
	e.RawCode, e.Title, e.Detail = o.Code, o.Title, o.Detail
	if o.Source != nil {
		e.Pointer, e.Parameter = o.Source.Pointer, o.Source.Parameter
	}
	if e.ETag == "" {
		e.ETag = o.Meta.ETag
	}
	e.OldestRevision = o.Meta.OldestRevision
	e.Code = kv.ErrorCode(o.Code)
}

// settleCode replaces a code the client does not know by the one of the
// status. A 412 always has the precondition code.
func (e *APIError) settleCode() {
	switch {
	case e.StatusCode == http.StatusPreconditionFailed:
		e.Code = codePreconditionFailed
	case !knownCode(e.Code):
		e.Code = kv.CodeForStatus(e.StatusCode)
	}
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

// notSent reports whether err, an error of http.Client.Do, proves that the
// request never reached the service: the connection could not be made (a
// failed dial, a refused connection, a failed name lookup). Such a request
// can be sent again whatever it does.
func notSent(err error) bool {
	if errors.Is(err, errBodyNotReplayable) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// ErrMaybeApplied is matched (errors.Is) by the error of a call that must
// not be applied twice (Incr, a conditional write, a batch with checks or
// incr) when it failed in a way that leaves open whether the service applied
// it: the connection broke or the context ended after the request was
// sent, or the service (or a proxy before it) answered 5xx. The client does
// not retry such a call; the error also matches its cause (an *APIError, a
// context error, a network error), so errors.As and errors.Is see it.
var ErrMaybeApplied = errors.New("client: the request may or may not have been applied")

// maybeAppliedError is an error matching ErrMaybeApplied and its cause.
type maybeAppliedError struct{ err error }

func maybeApplied(err error) error { return &maybeAppliedError{err: err} }

func (e *maybeAppliedError) Error() string {
	return "client: " + strings.TrimPrefix(e.err.Error(), "client: ") + "; the request may or may not have been applied"
}

func (e *maybeAppliedError) Unwrap() []error { return []error{ErrMaybeApplied, e.err} }

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

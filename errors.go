package kv

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrorCode is the service's error vocabulary. Its values are the Telnyx
// error codes sent on the wire.
type ErrorCode string

// Error codes. 10001, 10005, 10010, 10015 and 10020 are the hosted service's;
// the codes for 409, 413 and 429 are this project's choice and stable.
const (
	EUnauthorized  ErrorCode = "10001" // 401: missing or unknown token
	ENotFound      ErrorCode = "10005" // 404: no such namespace or key (for this organization)
	EInternal      ErrorCode = "10010" // 500: the detail never shows internals
	EInvalid       ErrorCode = "10015" // 400: malformed request or invalid key
	EUnprocessable ErrorCode = "10020" // 422: well-formed but unacceptable (ttl_secs)
	EConflict      ErrorCode = "10030" // 409: name in use, namespace not ready or already deleting
	ETooLarge      ErrorCode = "10031" // 413: value or request over its limit
	ERateLimited   ErrorCode = "10032" // 429: too many requests
	EUnavailable   ErrorCode = "10033" // 503: shutting down or storage unavailable
	EQuota         ErrorCode = "10034" // 403: an organization's configured limit is reached

	// EInsufficientStorage is 507: the store's disk has less free space than
	// kvd keeps in reserve; writes are refused until space is freed.
	EInsufficientStorage ErrorCode = "10038"
	// EForbidden is 403: the token's permissions or scope do not allow
	// the operation or the key.
	EForbidden ErrorCode = "10036"
	// EPrecondition is 412: an If-Match, an If-None-Match or a batch's
	// check did not hold; nothing was written.
	EPrecondition ErrorCode = "10035"
	// EHistoryGone is 410: a watch asked for changes from before the
	// history the namespace keeps; the error's OldestRevision is the
	// lowest revision it may resume from.
	EHistoryGone ErrorCode = "10037"
)

var codeInfo = map[ErrorCode]struct {
	status int
	title  string
}{
	EUnauthorized:  {http.StatusUnauthorized, "Unauthorized"},
	ENotFound:      {http.StatusNotFound, "Resource not found"},
	EInternal:      {http.StatusInternalServerError, "Internal error"},
	EInvalid:       {http.StatusBadRequest, "Invalid request"},
	EUnprocessable: {http.StatusUnprocessableEntity, "Unprocessable entity"},
	EConflict:      {http.StatusConflict, "Conflict"},
	ETooLarge:      {http.StatusRequestEntityTooLarge, "Request too large"},
	ERateLimited:   {http.StatusTooManyRequests, "Too many requests"},
	EUnavailable:   {http.StatusServiceUnavailable, "Service unavailable"},
	EQuota:         {http.StatusForbidden, "Quota exceeded"},

	EInsufficientStorage: {http.StatusInsufficientStorage, "Insufficient storage"},
	EForbidden:           {http.StatusForbidden, "Forbidden"},
	EPrecondition:        {http.StatusPreconditionFailed, "Precondition failed"},
	EHistoryGone:         {http.StatusGone, "History compacted"},
}

// statusCodes is the code an answer without a recognised code is taken
// to have, for the statuses that several codes share.
var statusCodes = map[int]ErrorCode{
	http.StatusForbidden: EForbidden,
}

// HTTPStatus is the HTTP status that carries the code; unknown codes map to 500.
func (c ErrorCode) HTTPStatus() int {
	if i, ok := codeInfo[c]; ok {
		return i.status
	}
	return http.StatusInternalServerError
}

// Title is the short human title of the code.
func (c ErrorCode) Title() string {
	if i, ok := codeInfo[c]; ok {
		return i.title
	}
	return "Error"
}

// KnownCode reports whether c is one of the service's codes.
func KnownCode(c ErrorCode) bool {
	_, ok := codeInfo[c]
	return ok
}

// CodeForStatus is the reverse of HTTPStatus, for clients that receive an
// error without a recognised code. A status that several codes share has
// one of them chosen (403: EForbidden).
func CodeForStatus(status int) ErrorCode {
	if c, ok := statusCodes[status]; ok {
		return c
	}
	for c, i := range codeInfo {
		if i.status == status {
			return c
		}
	}
	if status >= 500 {
		return EInternal
	}
	return EInvalid
}

// Error is an error of the service's vocabulary: a code, a detail that says
// what was wrong and what is allowed, and optionally where in the request.
type Error struct {
	Code      ErrorCode
	Title     string // defaults to Code.Title()
	Detail    string
	Pointer   string // JSON pointer into the request body, e.g. "/name"
	Parameter string // query or path parameter, e.g. "key"
	// ETag is the key's current entity tag, sent with a 412 as the ETag
	// header; empty when the key does not exist.
	ETag string
	// OldestRevision is, for EHistoryGone, the lowest revision a watch
	// may resume from; it is sent as meta.oldest_revision.
	OldestRevision uint64

	notReady bool // NotReady's: worth retrying (see ShouldRetry)
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "kv: " + e.Code.Title()
	}
	return "kv: " + e.Detail
}

// Is makes errors.Is(err, kv.ErrNotFound) true for every Error with the same
// code as the sentinel.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Detail == "" && t.Code == e.Code
}

// WithParam returns a copy of e naming the request parameter at fault.
func (e *Error) WithParam(p string) *Error {
	c := *e
	c.Parameter = p
	return &c
}

// WithPointer returns a copy of e naming the JSON pointer at fault.
func (e *Error) WithPointer(p string) *Error {
	c := *e
	c.Pointer = p
	return &c
}

// Errorf returns an *Error with the code and a formatted detail.
func Errorf(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is. Every *Error with the same code matches.
var (
	ErrUnauthorized  = &Error{Code: EUnauthorized}
	ErrNotFound      = &Error{Code: ENotFound}
	ErrInternal      = &Error{Code: EInternal}
	ErrInvalid       = &Error{Code: EInvalid}
	ErrUnprocessable = &Error{Code: EUnprocessable}
	ErrConflict      = &Error{Code: EConflict}
	ErrTooLarge      = &Error{Code: ETooLarge}
	ErrRateLimited   = &Error{Code: ERateLimited}
	ErrUnavailable   = &Error{Code: EUnavailable}
	ErrQuota         = &Error{Code: EQuota}

	ErrInsufficientStorage = &Error{Code: EInsufficientStorage}
	ErrForbidden           = &Error{Code: EForbidden}
	ErrPrecondition        = &Error{Code: EPrecondition}
	ErrHistoryGone         = &Error{Code: EHistoryGone}
)

// ErrorCodeOf returns the code of err: its own if it is (or wraps) an *Error,
// EInternal otherwise.
func ErrorCodeOf(err error) ErrorCode {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// Common errors with fixed details.

// NamespaceNotFound is the error for a namespace that does not exist or
// belongs to another organization; the two are indistinguishable.
func NamespaceNotFound() *Error {
	return &Error{Code: ENotFound, Detail: "Namespace not found", Parameter: "id"}
}

// KeyNotFound is the error for a key that does not exist or has expired.
// It is always the same value, which IsKeyNotFound recognizes; callers must
// not modify it.
func KeyNotFound() *Error { return keyNotFound }

var keyNotFound = &Error{Code: ENotFound, Detail: "Key not found", Parameter: "key"}

// IsKeyNotFound reports whether err is (or wraps) KeyNotFound(), as opposed
// to another not-found error such as a missing namespace.
func IsKeyNotFound(err error) bool { return errors.Is(err, keyNotFound) }

// NotReady is the error for a key operation on a namespace that is not
// provision_ok.
func NotReady(s Status) *Error {
	return &Error{Code: EConflict, Detail: fmt.Sprintf("Namespace is not ready (status: %s)", s), notReady: true}
}

package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/edgekv/kv"
)

// StatusClientGone is the status recorded (in metrics and the access log)
// for a request whose client went away before it was answered; nothing is
// sent. It is nginx's "client closed request".
const StatusClientGone = 499

// fail answers err for the request w serves: an error of the vocabulary in
// the envelope with the status its code maps to; a request whose client
// went away gets nothing (it is logged at debug level and recorded as
// StatusClientGone); a request that ran out of time, 503; anything else is
// logged and shown only as an internal error.
func (h *Handler) fail(w *recorder, err error) {
	var e *kv.Error
	switch {
	case w.ctx != nil && w.ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		h.log.LogAttrs(w.ctx, slog.LevelDebug, "request abandoned by its client", slog.String("request_id", w.id), slog.String("err", err.Error()))
		w.status, w.wrote = StatusClientGone, true
		return
	case errors.As(err, &e):
		if e.Code == kv.EUnavailable && err != error(e) { // with a cause to show
			h.log.LogAttrs(context.Background(), slog.LevelWarn, "storage unavailable", slog.String("request_id", w.id), slog.String("err", err.Error()))
		}
	case errors.Is(err, context.DeadlineExceeded):
		h.log.LogAttrs(context.Background(), slog.LevelWarn, "request timed out", slog.String("request_id", w.id), slog.String("err", err.Error()))
		e = kv.Errorf(kv.EUnavailable, "the request took too long to serve; try again")
	default:
		h.log.LogAttrs(context.Background(), slog.LevelError, "internal error", slog.String("request_id", w.id), slog.String("err", err.Error()))
		e = &kv.Error{Code: kv.EInternal, Detail: "An internal error occurred; the request id is " + w.id}
	}
	if reason := refusal(w.route, e); reason != "" {
		h.refusals.Inc(reason)
	}
	writeErrorStatus(w, e.Code.HTTPStatus(), e)
}

// writeError answers err outside a request's flow (a panic): as fail, but
// without the client-gone case.
func writeError(w *recorder, log *slog.Logger, err error) {
	var e *kv.Error
	if !errors.As(err, &e) {
		log.LogAttrs(context.Background(), slog.LevelError, "internal error", slog.String("request_id", w.id), slog.String("err", err.Error()))
		e = &kv.Error{Code: kv.EInternal, Detail: "An internal error occurred; the request id is " + w.id}
	}
	writeErrorStatus(w, e.Code.HTTPStatus(), e)
}

var (
	retryTrue     = []string{"true"}
	retryFalse    = []string{"false"}
	retryAfterOne = []string{"1"}
)

// writeErrorStatus sends e in the envelope with status, and the
// x-should-retry hint the official SDKs follow.
func writeErrorStatus(w http.ResponseWriter, status int, e *kv.Error) {
	if kv.ShouldRetry(status, e) {
		w.Header()["X-Should-Retry"] = retryTrue
	} else {
		w.Header()["X-Should-Retry"] = retryFalse
	}
	// Every 503 says when to come back: a second, unless the error's
	// source said otherwise.
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header()["Retry-After"] = retryAfterOne
	}
	if e.ETag != "" {
		w.Header()["Etag"] = []string{e.ETag}
	}
	if e == kv.KeyNotFound() { // the most common error: a read of a missing key
		writeBody(w, status, keyNotFoundBody, keyNotFoundLen)
		return
	}
	writeJSON(w, status, e.Envelope())
}

// keyNotFoundBody is kv.KeyNotFound()'s envelope, encoded once.
var (
	keyNotFoundBody, _ = json.Marshal(kv.KeyNotFound().Envelope())
	keyNotFoundLen     = strconv.Itoa(len(keyNotFoundBody))
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"errors":[{"code":"10010","title":"Internal error","detail":"response could not be encoded"}]}`)
		status = http.StatusInternalServerError
	}
	writeBody(w, status, b, strconv.Itoa(len(b)))
}

var jsonContentType = []string{"application/json"}

func writeBody(w http.ResponseWriter, status int, b []byte, length string) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{length}
	w.WriteHeader(status)
	w.Write(b)
}

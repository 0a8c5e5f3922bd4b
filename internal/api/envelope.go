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

// errorDocs is where each error code is explained.
const errorDocs = "https://developers.telnyx.com/docs/overview/errors/"

type errorBody struct {
	Errors []errorObject `json:"errors"`
}

type errorObject struct {
	Code   string       `json:"code"`
	Title  string       `json:"title"`
	Detail string       `json:"detail"`
	Source *errorSource `json:"source,omitempty"`
	Meta   errorMeta    `json:"meta"`
}

type errorSource struct {
	Pointer   string `json:"pointer,omitempty"`
	Parameter string `json:"parameter,omitempty"`
}

type errorMeta struct {
	URL string `json:"url"`
}

// writeError sends err in the Telnyx error envelope with the status its code
// maps to. Errors outside the vocabulary are logged and shown only as an
// internal error.
func writeError(w http.ResponseWriter, reqID string, log *slog.Logger, err error) {
	var e *kv.Error
	if !errors.As(err, &e) {
		log.LogAttrs(context.Background(), slog.LevelError, "internal error", slog.String("request_id", reqID), slog.String("err", err.Error()))
		e = &kv.Error{Code: kv.EInternal, Detail: "An internal error occurred; the request id is " + reqID}
	}
	writeErrorStatus(w, e.Code.HTTPStatus(), e)
}

func writeErrorStatus(w http.ResponseWriter, status int, e *kv.Error) {
	if e == kv.KeyNotFound() { // the most common error: a read of a missing key
		writeBody(w, status, keyNotFoundBody, keyNotFoundLen)
		return
	}
	writeJSON(w, status, envelopeOf(e))
}

func envelopeOf(e *kv.Error) errorBody {
	obj := errorObject{Code: string(e.Code), Title: e.Title, Detail: e.Detail, Meta: errorMeta{URL: errorDocs + string(e.Code)}}
	if obj.Title == "" {
		obj.Title = e.Code.Title()
	}
	if e.Pointer != "" || e.Parameter != "" {
		obj.Source = &errorSource{Pointer: e.Pointer, Parameter: e.Parameter}
	}
	return errorBody{Errors: []errorObject{obj}}
}

// keyNotFoundBody is kv.KeyNotFound()'s envelope, encoded once.
var (
	keyNotFoundBody, _ = json.Marshal(envelopeOf(kv.KeyNotFound()))
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

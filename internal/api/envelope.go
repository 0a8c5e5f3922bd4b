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
	obj := errorObject{Code: string(e.Code), Title: e.Title, Detail: e.Detail, Meta: errorMeta{URL: errorDocs + string(e.Code)}}
	if obj.Title == "" {
		obj.Title = e.Code.Title()
	}
	if e.Pointer != "" || e.Parameter != "" {
		obj.Source = &errorSource{Pointer: e.Pointer, Parameter: e.Parameter}
	}
	writeJSON(w, status, errorBody{Errors: []errorObject{obj}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"errors":[{"code":"10010","title":"Internal error","detail":"response could not be encoded"}]}`)
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

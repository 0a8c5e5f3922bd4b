package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
)

// MaxBatchBody bounds the body of a batch.
const MaxBatchBody = 16 << 20

// batchReadSlots is how many batches with gets run at once: each may hold
// up to store.MaxBatchReadBytes of values and their encoding, so this
// bounds that memory; on two cores more would not run faster.
const batchReadSlots = 4

var opKinds = map[string]store.OpKind{
	"check": store.OpCheck, "get": store.OpGet, "put": store.OpPut, "delete": store.OpDelete, "incr": store.OpIncr,
}

var opNames = map[store.OpKind]string{
	store.OpCheck: "check", store.OpGet: "get", store.OpPut: "put", store.OpDelete: "delete", store.OpIncr: "incr",
}

// errBatchShape is a body that is not a batch at all.
var errBatchShape = kv.Errorf(kv.EInvalid, `request body must be a JSON object like {"atomic": true, "ops": [{"op": "put", "key": "k", "value": "v"}]}; ops are check, get, put, delete and incr`)

func (h *Handler) batch(w *recorder, r *http.Request, who service.Principal, id kv.ID) {
	if _, err := parseQuery(r.URL.RawQuery); err != nil {
		h.fail(w, err)
		return
	}
	b, err := h.readBody(w, r, who.Org, MaxBatchBody)
	if err != nil {
		h.fail(w, err)
		return
	}
	// The body's grant is held to the end: the decoded values are as
	// large as the body.
	defer b.release()
	ops, atomic, err := parseBatch(b.Data)
	if err != nil {
		h.fail(w, err)
		return
	}
	// Batches that read values hold them, and their answer, in memory:
	// only a few run at once.
	for _, op := range ops {
		if op.Kind == store.OpGet {
			select {
			case h.batchReads <- struct{}{}:
				defer func() { <-h.batchReads }()
			case <-r.Context().Done():
				h.fail(w, r.Context().Err())
				return
			}
			break
		}
	}
	res, err := h.svc.Batch(r.Context(), who, id, ops, atomic)
	if err != nil {
		h.fail(w, err)
		return
	}
	out := encodeBatch(ops, res)
	if len(out) > smallBody {
		pw := &pacedWriter{w: w, rc: http.NewResponseController(w), every: h.slowBody}
		g, err := h.responses.Acquire(r.Context(), who.Org, int64(len(out)), h.slowBody, pw.preempt)
		if err != nil {
			h.fail(w, h.budgetError(w, r, err, errResponsesBusy))
			return
		}
		defer g.Release()
		hd := w.Header()
		hd["Content-Type"] = jsonContentType
		hd["Content-Length"] = []string{strconv.Itoa(len(out))}
		w.WriteHeader(http.StatusOK)
		pw.write(out)
		return
	}
	writeBody(w, http.StatusOK, out, strconv.Itoa(len(out)))
}

// opResult is one result of a batch answer.
type opResult struct {
	Op          string          `json:"op"`
	Key         string          `json:"key"`
	OK          *bool           `json:"ok,omitempty"`
	Found       *bool           `json:"found,omitempty"`
	Value       any             `json:"value,omitempty"`
	ValueBase64 *string         `json:"value_base64,omitempty"`
	ContentType string          `json:"content_type,omitempty"`
	ExpiresAt   *string         `json:"expires_at,omitempty"`
	Created     *bool           `json:"created,omitempty"`
	Deleted     *bool           `json:"deleted,omitempty"`
	ETag        string          `json:"etag,omitempty"`
	Error       *kv.ErrorObject `json:"error,omitempty"`
}

type batchAnswer struct {
	Data struct {
		Committed bool       `json:"committed"`
		Results   []opResult `json:"results"`
	} `json:"data"`
}

// encodeBatch is the answer to a batch whose ops ran: every op committed
// (atomic), or each for itself (bulk: committed says whether all did).
func encodeBatch(ops []service.BatchOp, res []service.OpResult) []byte {
	var a batchAnswer
	a.Data.Committed = true
	a.Data.Results = make([]opResult, len(ops))
	yes, no := true, false
	for i, op := range ops {
		o := &a.Data.Results[i]
		o.Op, o.Key = opNames[op.Kind], op.Key
		if op.Kind == 0 {
			o.Op = "invalid"
		}
		r := res[i]
		if r.Err != nil {
			a.Data.Committed = false
			var e *kv.Error
			if !errors.As(r.Err, &e) {
				e = &kv.Error{Code: kv.EInternal, Detail: "An internal error occurred"}
			}
			env := e.Envelope()
			o.Error = &env.Errors[0]
			continue
		}
		switch op.Kind {
		case store.OpCheck:
			o.OK = &yes
		case store.OpGet:
			if !r.Found {
				o.Found = &no
				break
			}
			o.Found = &yes
			if utf8.Valid(r.Data) {
				o.Value = string(r.Data)
			} else {
				s := base64.StdEncoding.EncodeToString(r.Data)
				o.ValueBase64 = &s
			}
			o.ContentType = r.ContentType
			if !r.ExpiresAt.IsZero() {
				t := r.ExpiresAt.UTC().Format(kv.KeyTimeFormat)
				o.ExpiresAt = &t
			}
			o.ETag = kv.FormatETag(uint64(r.Revision))
		case store.OpPut:
			c := r.Created
			o.Created = &c
			o.ETag = kv.FormatETag(uint64(r.Revision))
		case store.OpDelete:
			d := r.Deleted
			o.Deleted = &d
		case store.OpIncr:
			o.Value = r.Int
			o.ETag = kv.FormatETag(uint64(r.Revision))
		}
	}
	b, err := json.Marshal(a)
	if err != nil {
		panic(err) // strings, numbers and booleans always marshal
	}
	return b
}

package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"

	"github.com/edgekv/kv"
	"github.com/edgekv/kv/internal/service"
	"github.com/edgekv/kv/internal/store"
)

// The batch decoder as it was written first, on encoding/json: the single
// pass of batchparse.go must decode every body to what this does (see
// FuzzParseBatchDifferential), except that field names match exactly,
// where encoding/json ignores their case.

// batchRequest is the body of POST /v2/storage/kvs/{id}/batch.
type batchRequest struct {
	Atomic *bool             `json:"atomic"`
	Ops    []json.RawMessage `json:"ops"`
}

// opRequest is one op of a batch as sent.
type opRequest struct {
	Op          *string `json:"op"`
	Key         *string `json:"key"`
	ETag        *string `json:"etag"`
	Absent      *bool   `json:"absent"`
	Value       *string `json:"value"`
	ValueBase64 *string `json:"value_base64"`
	ContentType *string `json:"content_type"`
	TTLSecs     *number `json:"ttl_secs"`
	By          *number `json:"by"`
}

// number is a JSON number as sent (json.Number would take a string too).
type number string

func (n *number) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '-' && (b[0] < '0' || b[0] > '9') {
		return &json.UnmarshalTypeError{Value: "non-number", Type: reflect.TypeFor[number]()}
	}
	*n = number(b)
	return nil
}

// referenceParseBatch decodes a batch body. A body that is no batch is an error;
// an op that is malformed has its error in its BatchOp (an atomic batch
// then fails with it; a bulk one reports it in the op's result).
func referenceParseBatch(body []byte) ([]service.BatchOp, bool, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req batchRequest
	if err := dec.Decode(&req); err != nil {
		var ue *json.UnmarshalTypeError
		if errors.As(err, &ue) && ue.Field != "" {
			return nil, false, kv.Errorf(kv.EInvalid, "%s has the wrong type: %s", ue.Field, errBatchShape.Detail).WithPointer("/" + ue.Field)
		}
		return nil, false, errBatchShape
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false, errBatchShape
	}
	if req.Ops == nil {
		return nil, false, kv.Errorf(kv.EInvalid, "ops is required: a list of 1 to %d ops", store.MaxBatchOps).WithPointer("/ops")
	}
	if len(req.Ops) > store.MaxBatchOps || len(req.Ops) == 0 {
		return nil, false, kv.Errorf(kv.EInvalid, "a batch holds 1 to %d ops; this one has %d", store.MaxBatchOps, len(req.Ops)).WithPointer("/ops")
	}
	atomic := req.Atomic == nil || *req.Atomic
	ops := make([]service.BatchOp, len(req.Ops))
	for i, raw := range req.Ops {
		ops[i] = referenceParseOp(i, raw)
	}
	return ops, atomic, nil
}

func referenceParseOp(i int, raw json.RawMessage) service.BatchOp {
	at := func(field string) string {
		if field == "" {
			return fmt.Sprintf("/ops/%d", i)
		}
		return fmt.Sprintf("/ops/%d/%s", i, field)
	}
	fail := func(code kv.ErrorCode, field, format string, args ...any) service.BatchOp {
		return service.BatchOp{Err: kv.Errorf(code, format, args...).WithPointer(at(field))}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var o opRequest
	if err := dec.Decode(&o); err != nil {
		var ue *json.UnmarshalTypeError
		if errors.As(err, &ue) && ue.Field != "" {
			return fail(kv.EInvalid, ue.Field, "%s must be a %s", ue.Field, jsonType(ue.Type.String()))
		}
		return fail(kv.EInvalid, "", "op %d must be an object with the fields op and key (and etag/absent, value/value_base64, content_type, ttl_secs, by as the op takes them): %s", i, jsonError(err))
	}
	if o.Op == nil {
		return fail(kv.EInvalid, "op", "op is required: check, get, put, delete or incr")
	}
	kind, ok := opKinds[*o.Op]
	if !ok {
		return fail(kv.EInvalid, "op", "op %.32q is not one of check, get, put, delete, incr", *o.Op)
	}
	if o.Key == nil {
		return fail(kv.EInvalid, "key", "key is required")
	}
	op := service.BatchOp{Kind: kind, Key: *o.Key}
	// Fields an op does not take are refused, so a typo is not silently
	// ignored.
	extra := map[string]bool{
		"etag": o.ETag != nil, "absent": o.Absent != nil, "value": o.Value != nil, "value_base64": o.ValueBase64 != nil,
		"content_type": o.ContentType != nil, "ttl_secs": o.TTLSecs != nil, "by": o.By != nil,
	}
	takes := map[store.OpKind][]string{
		store.OpCheck: {"etag", "absent"},
		store.OpPut:   {"value", "value_base64", "content_type", "ttl_secs"},
		store.OpIncr:  {"by"},
	}
	for _, f := range takes[kind] {
		delete(extra, f)
	}
	for _, f := range []string{"etag", "absent", "value", "value_base64", "content_type", "ttl_secs", "by"} {
		if extra[f] {
			return fail(kv.EInvalid, f, "a %s op takes no %s", *o.Op, f)
		}
	}
	switch kind {
	case store.OpCheck:
		switch {
		case o.ETag != nil && o.Absent != nil:
			return fail(kv.EInvalid, "absent", "a check takes etag or absent, not both")
		case o.ETag != nil:
			l, err := kv.ParseETags(*o.ETag, false)
			if err != nil {
				return fail(kv.EInvalid, "etag", `etag must be an entity tag such as "\"0000018c2f5e9a10\"" (with its quotes), as an ETag header or a result gave it, or "*" (the key exists)`)
			}
			op.If.Exists = l.Any
			for _, r := range l.Revisions {
				op.If.Revisions = append(op.If.Revisions, store.Revision(r))
			}
		case o.Absent != nil && *o.Absent:
			op.If.Absent = true
		case o.Absent != nil:
			op.If.Exists = true
		default:
			return fail(kv.EInvalid, "", "a check takes etag (the key has this ETag, or \"*\": it exists) or absent: true (it does not exist)")
		}
	case store.OpPut:
		switch {
		case o.Value != nil && o.ValueBase64 != nil:
			return fail(kv.EInvalid, "value_base64", "a put takes value or value_base64, not both")
		case o.Value != nil:
			op.Put.Data = []byte(*o.Value)
		case o.ValueBase64 != nil:
			b, err := base64.StdEncoding.DecodeString(*o.ValueBase64)
			if err != nil {
				return fail(kv.EInvalid, "value_base64", "value_base64 must be standard base64 (RFC 4648, with padding)")
			}
			op.Put.Data = b
		default:
			return fail(kv.EInvalid, "value", "a put takes value (a string) or value_base64 (bytes, in base64)")
		}
		if len(op.Put.Data) > kv.MaxValueSize {
			return fail(kv.ETooLarge, "value", "value is %d bytes; the limit is %d bytes (1 MiB)", len(op.Put.Data), kv.MaxValueSize)
		}
		if o.ContentType != nil {
			op.Put.ContentType = *o.ContentType
		}
		if o.TTLSecs != nil {
			secs, err := strconv.ParseInt(string(*o.TTLSecs), 10, 64)
			if err != nil {
				secs = -1
			}
			ttl, err := service.ValidateTTL(secs)
			if err != nil {
				return fail(kv.EUnprocessable, "ttl_secs", "ttl_secs must be a whole number of seconds from 1 to %d", kv.MaxTTLSeconds)
			}
			op.Put.TTL = ttl
		}
	case store.OpIncr:
		op.By = 1
		if o.By != nil {
			by, err := strconv.ParseInt(string(*o.By), 10, 64)
			if err != nil {
				return fail(kv.EUnprocessable, "by", "by must be a signed 64-bit integer")
			}
			op.By = by
		}
	}
	return op
}

func jsonType(goType string) string {
	switch goType {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "api.number":
		return "number"
	}
	return "value of another type"
}

func jsonError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "not valid JSON"
	}
	var ue *json.UnmarshalTypeError
	if errors.As(err, &ue) {
		return "not an object"
	}
	if s := err.Error(); len(s) < 120 {
		return s
	}
	return "not valid"
}
